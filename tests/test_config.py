"""Config files: every shipped config parses and builds; ShapesX rows share one budget; bad input."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from mxr.ablate import config_name, load_preset
from mxr.config import config_to_dict, load_config, read_config_file

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SHAPESX = sorted((CONFIGS / "shapesx").glob("*.yaml"))
STAGEWISE = sorted((CONFIGS / "coco" / "stagewise").glob("*.yaml"))
COCO = sorted((CONFIGS / "coco").glob("*.yaml")) + STAGEWISE


PRESET = load_preset("shapesx")
DETECTOR_ROW = PRESET.detector


def test_shapesx_configs_are_the_ablation_rows() -> None:
    rows = {config_name(r) for r in PRESET.rows}
    assert {p.stem for p in SHAPESX} == rows | {DETECTOR_ROW}


def test_shapesx_rows_share_data_and_budget() -> None:
    """Equal budgets: only the model section (and train_masks for the oracle) may differ; the
    stage-1 detector trains three rows' budget and shares every detector field with the rows."""
    from mxr.engine.stagewise import DETECTOR_FIELDS

    base = config_to_dict(load_config(CONFIGS / "shapesx" / "agnostic.yaml"))
    detector = load_config(CONFIGS / "shapesx" / f"{DETECTOR_ROW}.yaml")
    assert detector.train.iterations == 3 * base["train"]["iterations"]
    for p in SHAPESX:
        d = config_to_dict(load_config(p))
        train = {**d["train"], "iterations": base["train"]["iterations"]}
        if p.stem == DETECTOR_ROW:
            train["checkpoint_every"] = base["train"]["checkpoint_every"]
        assert train == base["train"], p.name
        for k in DETECTOR_FIELDS:
            assert d["model"][k] == config_to_dict(detector)["model"][k], (p.name, k)
        data = dict(d["data"])
        assert data.pop("train_masks") == ("all" if p.stem == "oracle" else "A"), p.name
        assert data == {k: v for k, v in base["data"].items() if k != "train_masks"}, p.name
        assert d["model"]["backbone"] == "tiny" and d["model"]["min_size"] == 128


@pytest.mark.parametrize("path", SHAPESX, ids=lambda p: p.stem)
def test_shapesx_config_builds_on_the_dataset(path: Path, shapesx_root: Path) -> None:
    from mxr.engine.data import build_dataset, class_embedding_for, model_config_for
    from mxr.model.build import build_model
    from mxr.model.heads import AgnosticMaskPredictor, ClassMaskPredictor, TransferMaskPredictor

    cfg = load_config(path, [f"data.root={shapesx_root}"])
    ds = build_dataset(cfg.data, "train", seed=0)
    mcfg = model_config_for(cfg.model, ds)
    model = build_model(mcfg, class_embedding=class_embedding_for(cfg, ds))  # as `mxr train` does
    assert mcfg.num_classes == ds.num_classes
    expect = tuple(range(1, ds.num_classes)) if path.stem == "oracle" else ds.a_labels
    assert tuple(mcfg.mask_classes) == tuple(expect)
    # The model is the one the file names (not merely some model with parameters).
    assert model.config == mcfg
    heads = model.roi_heads
    assert heads.box_predictor.cls_score.out_features == ds.num_classes
    kind = {"agnostic": AgnosticMaskPredictor, "class": ClassMaskPredictor}
    assert type(heads.mask_predictor) is kind.get(mcfg.mask_head, TransferMaskPredictor)
    assert (heads.mask_predictor.mlp is not None) == mcfg.mlp_fusion
    assert len(heads.mask_head) == mcfg.mask_head_convs
    assert heads.mask_classes.tolist() == sorted(expect)
    if heads.class_embedding is not None:  # transfer_embed*, transfer_randn: one row per label
        assert heads.class_embedding.shape[0] == ds.num_classes


def test_the_variants_differ_as_named() -> None:
    m = {p.stem: load_config(p).model for p in SHAPESX}
    assert m["agnostic"].mask_head == "agnostic" and not m["agnostic"].mlp_fusion
    assert m["agnostic_mlp"].mlp_fusion and m["agnostic_deep"].mask_head_convs == 8
    assert [m[f"transfer_{k}"].transfer_input for k in ("cls", "box", "clsbox")] == [
        "cls",
        "box",
        "cls+box",
    ]
    assert m["transfer_clsbox_1layer"].transfer_layers == 1
    assert m["transfer_clsbox_relu"].transfer_activation == "relu"
    assert (
        m["transfer_clsbox"].transfer_activation == "leaky_relu"
        and not m["transfer_clsbox"].mlp_fusion
    )
    assert m["transfer_mlp"].mlp_fusion and m["transfer_mlp"].stop_grad
    assert not m["transfer_mlp_nostopgrad"].stop_grad
    assert m["oracle"].mask_head == "class"


def _coco_id(path: Path) -> str:
    return path.relative_to(CONFIGS / "coco").with_suffix("").as_posix()


@pytest.mark.parametrize("path", COCO, ids=_coco_id)
def test_coco_config_parses_and_builds_as_configured(path: Path) -> None:
    """The paper's settings, and the mask branch they describe at R-50-FPN sizes.

    Only the mask predictor is built, on the ``meta`` device (shapes, no memory): building five
    R-50-FPN models (two with the paper's 157 M-weight MLP) took ~10 s and checked nothing more.
    """
    from mxr.model.heads import (
        AgnosticMaskPredictor,
        ClassMaskPredictor,
        TransferMaskPredictor,
        build_mask_predictor,
    )

    cfg = load_config(path)
    assert cfg.model.backbone == "resnet50_fpn"
    assert (cfg.model.min_size, cfg.model.max_size, cfg.model.box_batch_size_per_image) == (
        800,
        1333,
        512,
    )
    t = cfg.train
    assert (t.iterations, t.lr, t.warmup_iters, t.weight_decay, t.batch_size) == (
        90000,
        0.02,
        500,
        1e-4,
        2,
    )
    assert [round(f * t.iterations) for f in t.lr_steps] == [60000, 80000]  # exactly 60k / 80k
    assert cfg.data.split in ("voc", "nonvoc") and cfg.data.root == "data/coco"
    if "transfer_mlp" in path.stem:
        assert cfg.model.mlp_fusion and cfg.model.mlp_form == "paper" and cfg.model.stop_grad
    # COCO: 80 classes + background; set A = 20 (VOC) or 60 (non-VOC) labels
    n_a = 80 if cfg.data.train_masks == "all" else (20 if cfg.data.split == "voc" else 60)
    m = dataclasses.replace(
        cfg.model, num_classes=81, mask_classes=tuple(range(1, n_a + 1))
    ).resolved()
    # R-50-FPN head sizes: FPN 256, box FC 1024, mask head 4 x 256, anchors 32..512 at 800 px
    assert (m.fpn_channels, m.box_fc_dim, m.mask_head_channels, m.mask_head_convs) == (
        256,
        1024,
        256,
        4,
    )
    assert m.anchor_sizes == (32, 64, 128, 256, 512)
    # tau's input: w_det (cls 1024 + box 4 x 1024), or a fixed 300-d class vector (GloVe, randn)
    tau_in = {"cls+box": 5120, "embed": 300, "randn": 300}.get(m.transfer_input)
    with torch.device("meta"):
        pred = build_mask_predictor(m, 0 if tau_in == 5120 else 300)
    kind = {"agnostic": AgnosticMaskPredictor, "class": ClassMaskPredictor}
    assert type(pred) is kind.get(m.mask_head, TransferMaskPredictor)
    if m.mask_head == "transfer":  # tau -> 256-d w_seg
        assert m.transfer_input != "randn" or m.randn_dim == 300  # the paper's 300-d randn
        assert (pred.transfer.mlp[0].in_features, pred.transfer.mlp[-1].out_features) == (
            tau_in,
            256,
        )
    elif m.mask_head == "class":  # the oracle: one 1x1 filter per class, background included
        assert tuple(pred.weight.shape) == (81, 256)
    else:
        assert tuple(pred.weight.shape) == (1, 256)
    if m.mlp_fusion:  # the paper's MLP: one FC from the 28x28x256 features to 784 logits
        assert (pred.mlp.fc.in_features, pred.mlp.fc.out_features) == (28 * 28 * 256, 784)
        assert pred.mlp.fc.weight.numel() == 157_351_936
    else:
        assert pred.mlp is None


# ---- COCO, stage-wise (configs/coco/stagewise/): the paper's Table 1 protocol -------------------
DIRECTIONS = {"voc2nonvoc": "voc", "nonvoc2voc": "nonvoc"}
#: Model fields of the mask branch: the only ones a stage-2 row may set apart from its detector.
MASK_BRANCH_FIELDS = {
    "mask_classes", "mask_head", "transfer_input", "transfer_layers", "transfer_activation",
    "transfer_zero_init", "class_embedding", "randn_dim", "stop_grad", "mlp_fusion", "mlp_form",
    "mlp_channels", "mask_head_channels", "mask_head_convs", "init_seed",
}  # fmt: skip
#: Each row of the paper's Table 1 / 2 as README's table runs it: (table, row, mxr config under
#: configs/coco/ with ${SPLIT} for the direction, --set overrides, model fields it must have).
PAPER_ROWS = [
    ("1a", "randn", "stagewise/${SPLIT}_randn", [], {"transfer_input": "randn", "randn_dim": 300}),
    ("1a", "GloVe", "stagewise/${SPLIT}_glove", [], {"transfer_input": "embed"}),
    ("1a", "cls", "stagewise/${SPLIT}_transfer", ["model.transfer_input=cls"],
     {"transfer_input": "cls"}),
    ("1a", "box", "stagewise/${SPLIT}_transfer", ["model.transfer_input=box"],
     {"transfer_input": "box"}),
    ("1a", "cls+box", "stagewise/${SPLIT}_transfer", [], {"transfer_input": "cls+box"}),
    ("1a", "class-agnostic", "stagewise/${SPLIT}_agnostic", [], {"mask_head": "agnostic"}),
    ("1a", "oracle", "stagewise/${SPLIT}_oracle", [], {"mask_head": "class"}),
    ("1b", "1-layer", "stagewise/${SPLIT}_transfer", ["model.transfer_layers=1"],
     {"transfer_layers": 1}),
    ("1b", "2-layer, ReLU", "stagewise/${SPLIT}_transfer", ["model.transfer_activation=relu"],
     {"transfer_layers": 2, "transfer_activation": "relu"}),
    ("1b", "2-layer, LeakyReLU", "stagewise/${SPLIT}_transfer", [],
     {"transfer_layers": 2, "transfer_activation": "leaky_relu"}),
    ("1c", "class-agnostic+MLP", "stagewise/${SPLIT}_agnostic", ["model.mlp_fusion=true"],
     {"mask_head": "agnostic", "mlp_fusion": True, "mlp_form": "paper"}),
    ("1c", "transfer+MLP", "stagewise/${SPLIT}_transfer", ["model.mlp_fusion=true"],
     {"mask_head": "transfer", "mlp_fusion": True, "mlp_form": "paper"}),
    ("1d", "class-agnostic, e2e", "${SPLIT}_agnostic", [], {"mask_head": "agnostic"}),
    ("1d", "transfer, e2e", "${SPLIT}_transfer_mlp",
     ["model.mlp_fusion=false", "model.stop_grad=false"], {"mlp_fusion": False, "stop_grad": False}),
    ("1d", "transfer, e2e + stop-grad", "${SPLIT}_transfer_mlp", ["model.mlp_fusion=false"],
     {"mlp_fusion": False, "stop_grad": True}),
    ("2", "transfer+MLP", "${SPLIT}_transfer_mlp", [],
     {"transfer_input": "cls+box", "mlp_fusion": True, "stop_grad": True}),
]  # fmt: skip


def _documented_run(config: Path) -> str:
    """The ``--out`` of the 8-GPU command a COCO config's header documents for itself."""
    lines = [ln for ln in config.read_text().splitlines() if "mxr train --config" in ln]
    assert len(lines) == 1, config.name
    words = lines[0].split()
    assert words[1:5] == ["torchrun", "--nproc_per_node=8", "-m", "mxr"], lines[0]
    assert words[words.index("--config") + 1] == config.relative_to(REPO).as_posix()
    return words[words.index("--out") + 1]


def _model_without_mask_branch(cfg) -> dict:  # noqa: ANN001
    model = config_to_dict(cfg)["model"]
    return {k: v for k, v in model.items() if k not in MASK_BRANCH_FIELDS}


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_the_stage1_detector_is_the_end_to_end_class_agnostic_row(direction: str) -> None:
    """mxr has no mask-free detector: stage 1 trains the class-agnostic head on A's masks, the very
    recipe of the end-to-end baseline (its eval.json is Table 1d's 'class-agnostic, e2e' row)."""
    path = CONFIGS / "coco" / "stagewise" / f"detector_{direction}.yaml"
    detector = load_config(path)
    assert (detector.train.trainable, detector.train.init_from) == ("all", None)
    assert (detector.data.split, detector.data.train_masks) == (DIRECTIONS[direction], "A")
    e2e = load_config(CONFIGS / "coco" / f"{direction}_agnostic.yaml")
    assert config_to_dict(detector) == config_to_dict(e2e)
    assert _documented_run(path) == f"runs/coco_detector_{direction}"


@pytest.mark.parametrize(
    "path", [p for p in STAGEWISE if not p.stem.startswith("detector_")], ids=_coco_id
)
def test_a_stagewise_row_trains_the_mask_branch_on_its_directions_detector(path: Path) -> None:
    """Frozen detector, loaded from the output of its direction's detector command, with every
    detector field (``DETECTOR_FIELDS``, and the rest outside the mask branch) and the whole
    schedule of the detector's run: the official stage-2 configs repeat the 1x schedule."""
    from mxr.engine.stagewise import DETECTOR_FIELDS

    direction = path.stem.split("_")[0]
    detector_path = CONFIGS / "coco" / "stagewise" / f"detector_{direction}.yaml"
    cfg, detector = load_config(path), load_config(detector_path)
    assert cfg.train.trainable == "mask"
    assert cfg.train.init_from == f"{_documented_run(detector_path)}/last.pt"
    assert _documented_run(path) == f"runs/coco_sw_{path.stem}"
    for k in DETECTOR_FIELDS:
        assert getattr(cfg.model.resolved(), k) == getattr(detector.model.resolved(), k), k
    assert _model_without_mask_branch(cfg) == _model_without_mask_branch(detector)
    assert cfg.model.mlp_form == "paper"  # --set model.mlp_fusion=true: the paper's MLP
    train = {**config_to_dict(cfg)["train"], "init_from": None, "trainable": "all"}
    assert train == config_to_dict(detector)["train"]
    data = {**config_to_dict(cfg)["data"], "train_masks": "A"}
    assert data == config_to_dict(detector)["data"]
    assert cfg.data.train_masks == ("all" if path.stem.endswith("_oracle") else "A")


def test_every_stagewise_row_has_both_directions() -> None:
    names = {p.stem for p in STAGEWISE}
    for direction in DIRECTIONS:
        rows = {n.split("_", 1)[1] for n in names if n.startswith(direction + "_")}
        assert rows == {"agnostic", "transfer", "glove", "randn", "oracle"}, direction
    assert {n for n in names if n.startswith("detector_")} == {f"detector_{d}" for d in DIRECTIONS}


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize(
    "config, overrides, expected",
    [pytest.param(*row[2:], id=f"{row[0]} {row[1]}") for row in PAPER_ROWS],
)
def test_readme_runs_each_paper_row_as_the_named_model(
    direction: str, config: str, overrides: list[str], expected: dict
) -> None:
    """README's table names each row's file and ``--set``; together they load as that row."""
    readme = (REPO / "README.md").read_text()
    documented = f"`{config}.yaml`" + (f" `--set {' '.join(overrides)}`" if overrides else "")
    assert documented in readme, documented
    path = CONFIGS / "coco" / f"{config.replace('${SPLIT}', direction)}.yaml"
    cfg = load_config(path, overrides)
    assert {k: getattr(cfg.model, k) for k in expected} == expected
    assert cfg.data.split == DIRECTIONS[direction]
    assert cfg.train.trainable == ("mask" if config.startswith("stagewise/") else "all")


def test_overrides_and_errors_name_the_key(tmp_path: Path) -> None:
    cfg = load_config(
        CONFIGS / "shapesx" / "transfer_mlp.yaml", ["train.iterations=7", "model.stop_grad=false"]
    )
    assert cfg.train.iterations == 7 and cfg.model.stop_grad is False
    with pytest.raises(ValueError, match=r"model\.mask_hed"):
        load_config(None, ["model.mask_hed=agnostic"])
    with pytest.raises(ValueError, match=r"model\.mask_head='agnostc'.*'agnostic'"):
        load_config(None, ["model.mask_head=agnostc"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  iteratons: 3\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*train\.iteratons"):
        load_config(bad)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        read_config_file(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "override, expected",
    [
        ("data.num_workers=0.5", "data.num_workers=0.5 is not valid; expected an integer >= 0"),
        ("train.warmup_iters=abc", "train.warmup_iters='abc' is not valid; expected an integer"),
        ("data.flip_prob=true", "data.flip_prob=True is not valid; expected a number in [0, 1]"),
        ("train.device=3", "train.device=3 is not valid; expected one of 'auto', 'cpu', 'cuda'"),
        ("train.clip_grad_norm=x", "train.clip_grad_norm='x' is not valid; expected > 0 or null"),
    ],
)
def test_a_value_of_the_wrong_type_is_a_value_error_naming_the_field(override, expected) -> None:
    # these used to escape as TypeError / AttributeError (a traceback instead of one line)
    with pytest.raises(ValueError) as err:
        load_config(None, [override])
    assert str(err.value).startswith(expected)


def test_an_unknown_config_format_lists_every_format_read(tmp_path: Path) -> None:
    path = tmp_path / "run.ini"
    path.write_text("[train]\n")
    with pytest.raises(ValueError, match=r"run\.ini.*\.yaml, \.yml, \.toml or \.json"):
        read_config_file(path)
