"""The paper's GloVe and randn rows on COCO: the committed GloVe file, how a config finds it, the configs.

``configs/coco/glove_coco.npy`` + ``glove_coco.names.txt`` are the official code's
``fixed_embedding_mat_coco_glove.npy`` with COCO's category names (``tools/convert_coco_glove.py``;
provenance in ``configs/coco/glove_coco.README.md``). The tests that compare it with the source
matrix need ``../shared/coco-glove`` and skip without it; the README's checks run on the committed
file alone. The short training needs the real COCO sample (the ``coco_sample`` fixture).
"""

from __future__ import annotations

import json
import runpy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from test_coco_real import _real_overrides  # tests/ is on sys.path (pytest rootdir conftest)

from mxr.cli import main
from mxr.config import load_config
from mxr.data.embedding import load_class_embedding, read_embedding_file
from mxr.data.splits import VOC_CAT_IDS
from mxr.engine.data import class_embedding_for

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "coco"
GLOVE = CONFIGS / "glove_coco.npy"
GLOVE_NAMES = CONFIGS / "glove_coco.names.txt"
#: Where the official matrix is kept beside the repository (read-only; never read by the package).
SHARED_GLOVE = Path(__file__).resolve().parents[1].parent / "shared" / "coco-glove"
SOURCE_MATRIX = SHARED_GLOVE / "fixed_embedding_mat_coco_glove.npy"
NEW_CONFIGS = ("voc2nonvoc_glove_mlp", "nonvoc2voc_glove_mlp", "voc2nonvoc_randn_mlp")

#: COCO 2017's 80 category names in category-id order (ids 1..90 without the 10 unused ones).
COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
COCO_IDS = tuple(i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))
VOC_NAMES = {
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "boat", "bird", "cat",
    "dog", "horse", "sheep", "cow", "bottle", "chair", "couch", "potted plant", "dining table", "tv",
}  # fmt: skip


def _cos(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _dataset(names: list[str]) -> object:
    """What :func:`class_embedding_for` reads of a dataset: its class names by label."""
    return type("Names", (), {"class_names": names})()


@pytest.fixture(scope="module")
def source_matrix() -> np.ndarray:
    """The official ``(80, 300)`` matrix; skips when ``../shared/coco-glove`` is absent."""
    if not SOURCE_MATRIX.is_file():
        pytest.skip(
            f"official GloVe matrix not found at {SOURCE_MATRIX} (the shared/coco-glove folder "
            "beside the repository); the committed file is still checked by the other tests"
        )
    return np.load(SOURCE_MATRIX, allow_pickle=False)


# --------------------------------------------------------------------------------------------------
# (a) the committed file is the official matrix, rows named in COCO category order
# --------------------------------------------------------------------------------------------------
def test_committed_file_holds_the_official_matrix_row_for_row(source_matrix: np.ndarray) -> None:
    assert source_matrix.shape == (80, 300) and source_matrix.dtype == np.float32
    committed = np.load(GLOVE, allow_pickle=False)
    assert committed.dtype == np.float32 and np.array_equal(committed, source_matrix)  # bit for bit
    table = read_embedding_file(GLOVE)
    names = GLOVE_NAMES.read_text().splitlines()
    assert list(table) == names and len(names) == 80
    for i, name in enumerate(names):  # each name carries its own row of the source, in order
        assert _cos(table[name], source_matrix[i]) == pytest.approx(1.0, abs=1e-12), name


def test_names_are_the_coco_categories_in_id_order(coco_sample: Path) -> None:
    cats = json.loads((coco_sample / "annotations" / "instances_val2017.json").read_text())
    cats = sorted(cats["categories"], key=lambda c: c["id"])
    assert GLOVE_NAMES.read_text().splitlines() == [c["name"] for c in cats]
    assert tuple(c["id"] for c in cats) == COCO_IDS and tuple(c["name"] for c in cats) == COCO_NAMES


def test_the_converter_rewrites_the_committed_file(
    source_matrix: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    convert = runpy.run_path(str(REPO / "tools" / "convert_coco_glove.py"), run_name="convert")
    out = tmp_path / "glove_coco.npy"
    ann = tmp_path / "instances.json"  # COCO's categories, listed out of id order
    cats = [{"id": i, "name": n} for i, n in zip(COCO_IDS, COCO_NAMES, strict=True)]
    ann.write_text(json.dumps({"categories": cats[::-1]}))
    assert convert["main"]([str(SOURCE_MATRIX), str(ann), "--out", str(out)]) == 0
    assert np.array_equal(np.load(out), np.load(GLOVE))
    assert out.with_suffix(".names.txt").read_text() == GLOVE_NAMES.read_text()
    printed = capsys.readouterr().out
    assert "cos(cat,dog) = 0.6817" in printed and "cos(car,truck) = 0.7351" in printed
    np.save(tmp_path / "short.npy", source_matrix[:79])
    with pytest.raises(ValueError, match=r"one row per category.*got shape \(79, 300\)"):
        convert["convert"](tmp_path / "short.npy", ann, tmp_path / "x.npy")


# --------------------------------------------------------------------------------------------------
# (b) the committed file alone: names, the README's checks, alignment by name
# --------------------------------------------------------------------------------------------------
def test_committed_file_names_coco_classes_in_category_order() -> None:
    names = GLOVE_NAMES.read_text().splitlines()
    assert tuple(names) == COCO_NAMES
    assert {names[COCO_IDS.index(i)] for i in VOC_CAT_IDS} == VOC_NAMES  # ids line up with names


def test_committed_file_reproduces_the_readme_checks() -> None:
    rows = load_class_embedding(GLOVE, ["__background__", *COCO_NAMES])
    assert rows.shape == (81, 300) and rows.dtype == torch.float32
    assert not rows[0].any()  # background: zeros
    norms = rows[1:].norm(dim=1)
    assert 4.8 <= float(norms.min()) and float(norms.max()) <= 8.5
    row = {n: rows[i + 1] for i, n in enumerate(COCO_NAMES)}
    assert round(_cos(row["cat"], row["dog"]), 2) == 0.68
    assert round(_cos(row["car"], row["truck"]), 2) == 0.74
    assert round(_cos(row["person"], row["cat"]), 2) == 0.23
    # A dataset with fewer, reordered COCO classes gets the same vectors by name.
    few = load_class_embedding(GLOVE, ["__background__", "dog", "cat"])
    assert torch.equal(few[1], row["dog"]) and torch.equal(few[2], row["cat"])


# --------------------------------------------------------------------------------------------------
# where a config's model.class_embedding is found: data.root first, then the repository
# --------------------------------------------------------------------------------------------------
def test_a_relative_class_embedding_not_under_data_root_is_the_shipped_file(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "voc2nonvoc_glove_mlp.yaml", [f"data.root={tmp_path}"])
    assert cfg.model.class_embedding == "configs/coco/glove_coco.npy"
    rows = class_embedding_for(cfg, _dataset(["__background__", *COCO_NAMES]))
    assert torch.equal(rows, load_class_embedding(GLOVE, ["__background__", *COCO_NAMES]))


def test_a_file_under_data_root_comes_first(tmp_path: Path) -> None:
    # The user's own file at the same relative path, under data.root.
    own = tmp_path / "configs" / "coco" / "glove_coco.npy"
    own.parent.mkdir(parents=True)
    np.save(own, np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32))
    own.with_suffix(".names.txt").write_text("cat\ndog\n")
    cfg = load_config(CONFIGS / "voc2nonvoc_glove_mlp.yaml", [f"data.root={tmp_path}"])
    rows = class_embedding_for(cfg, _dataset(["__background__", "dog", "cat"]))
    assert rows.tolist() == [[0.0, 0.0], [3.0, 4.0], [1.0, 2.0]]
    # An absolute path is read as is.
    absolute = [f"data.root={tmp_path / 'elsewhere'}", f"model.class_embedding={own}"]
    cfg = load_config(CONFIGS / "voc2nonvoc_glove_mlp.yaml", absolute)
    assert class_embedding_for(cfg, _dataset(["__background__", "cat"])).tolist()[1] == [1.0, 2.0]


def test_a_missing_class_embedding_names_every_place_looked_in(tmp_path: Path) -> None:
    cfg = load_config(
        CONFIGS / "voc2nonvoc_glove_mlp.yaml",
        [f"data.root={tmp_path}", "model.class_embedding=configs/coco/nope.npy"],
    )
    with pytest.raises(FileNotFoundError) as err:
        class_embedding_for(cfg, _dataset(["__background__", *COCO_NAMES]))
    message = str(err.value)
    assert "model.class_embedding='configs/coco/nope.npy'" in message
    assert str(tmp_path / "configs/coco/nope.npy") in message
    assert str(REPO / "configs/coco/nope.npy") in message


# --------------------------------------------------------------------------------------------------
# (d) the new configs
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stem", NEW_CONFIGS)
def test_new_configs_load_as_their_transfer_mlp_twin(stem: str) -> None:
    cfg = load_config(CONFIGS / f"{stem}.yaml")
    twin = load_config(CONFIGS / f"{stem.split('_')[0]}_transfer_mlp.yaml")
    assert cfg.data == twin.data and cfg.train == twin.train  # only τ's input differs
    m = cfg.model
    assert m.mask_head == "transfer" and m.mlp_fusion and m.mlp_form == "paper"
    if "glove" in stem:
        assert m.transfer_input == "embed" and m.class_embedding == "configs/coco/glove_coco.npy"
        assert (REPO / m.class_embedding).is_file()
        assert m == replace(twin.model, transfer_input="embed", class_embedding=m.class_embedding)
    else:  # the paper's randn row: a fixed 300-d N(0, 1) vector per class, no file
        assert m.transfer_input == "randn" and m.randn_dim == 300 and m.class_embedding is None
        assert m == replace(twin.model, transfer_input="randn", randn_dim=300)


# --------------------------------------------------------------------------------------------------
# (c) a short training on the real COCO sample with the GloVe config, evaluated per set
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_short_glove_training_and_eval_on_real_coco(
    coco_sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from mxr.engine.loop import train
    from mxr.files import read_metrics

    cfg = load_config(CONFIGS / "voc2nonvoc_glove_mlp.yaml", _real_overrides(coco_sample))
    assert not (coco_sample / cfg.model.class_embedding).exists()  # found in the repository
    result = train(cfg, tmp_path / "run", progress=False, eval_split=None)
    losses = [r for r in read_metrics(result.metrics) if "loss" in r]
    assert len(losses) == 3 and all(np.isfinite(r["loss_mask"]) for r in losses)
    # τ read the GloVe rows of the dataset's labels; they travel in the checkpoint.
    stored = torch.load(result.checkpoint, weights_only=True)["model"]
    names = GLOVE_NAMES.read_text().splitlines()
    expected = load_class_embedding(GLOVE, ["__background__", *names])
    assert torch.equal(stored["roi_heads.class_embedding"], expected)
    eval_json = tmp_path / "eval.json"
    args = ["eval", "--checkpoint", str(result.checkpoint), "--split", "val"]
    assert main([*args, "--out", str(eval_json), "--no-progress", "--no-mask-iou"]) == 0
    printed = capsys.readouterr().out
    assert "val: 80 images" in printed
    scores = json.loads(eval_json.read_text())
    assert set(scores) == {"A", "B", "all"}
    for s in ("A", "B", "all"):
        for task in ("segm", "bbox"):
            assert 0.0 <= scores[s][task]["AP"] <= 100.0, (s, task)
