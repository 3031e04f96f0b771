"""Stage-wise training: a detector checkpoint starts a run (``train.init_from``), and with
``train.trainable: mask`` only the mask branch learns while the detector stays bit-identical."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from mxr.config import TrainConfig
from mxr.engine.checkpoint import load_checkpoint, model_from_checkpoint
from mxr.engine.loop import train
from mxr.engine.stagewise import file_sha256
from mxr.files import read_metrics

DETECTOR = ("backbone.", "rpn.", "roi_heads.box_head.", "roi_heads.box_predictor.")


@pytest.fixture(scope="module")
def detector(shapesx_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stage-1 checkpoint: the tiny model trained 4 iterations end to end."""
    out = tmp_path_factory.mktemp("detector")
    train(tiny_config(shapesx_root, ["model.mask_head=agnostic"]), out, progress=False,
          eval_split=None)  # fmt: skip
    return out / "last.pt"


def _stage2(root: Path, detector: Path, extra: list[str] = ()) -> object:
    return tiny_config(root, [f"train.init_from={detector}", "train.trainable=mask", *extra])


def _split(state: dict) -> tuple[dict, dict]:
    det = {k: v for k, v in state.items() if k.startswith(DETECTOR)}
    rest = {k: v for k, v in state.items() if not k.startswith(DETECTOR)}
    return det, rest


def test_mask_only_stage_keeps_the_detector_bit_identical_and_trains_the_mask_branch(
    shapesx_root: Path, detector: Path, tmp_path: Path
) -> None:
    summary = train(_stage2(shapesx_root, detector), tmp_path, progress=False, eval_split="val")
    before = load_checkpoint(detector)["model"]
    after = load_checkpoint(tmp_path / "last.pt")
    det0, _ = _split(before)
    det1, mask1 = _split(after["model"])
    assert det0.keys() == det1.keys() and det0
    assert all(torch.equal(det0[k], det1[k]) for k in det0), "a frozen detector weight moved"
    # BatchNorm statistics are buffers: they stay the detector's too (eval mode)
    assert any("running_mean" in k for k in det0)
    # the mask branch learned: its weights moved from their seeded start
    from mxr.config import config_from_dict
    from mxr.model.build import build_model

    start = build_model(config_from_dict(after["config"]).model).state_dict()
    branch = [k for k in mask1 if k.startswith(("roi_heads.mask_head.", "roi_heads.mask_pred"))]
    assert branch and any(not torch.equal(start[k], mask1[k]) for k in branch)
    # the run records where its detector came from
    assert after["init_from"] == {"path": str(detector), "sha256": file_sha256(detector)}
    assert after["config"]["train"]["trainable"] == "mask"
    # one loss term: the mask loss
    records = read_metrics(tmp_path)
    assert {k for k in records[-1] if k.startswith("loss")} == {"loss", "loss_mask"}
    assert summary.eval["B"]["segm"]["AP"] is not None  # evaluation runs the whole model


def test_mask_only_stage_leaves_the_detector_out_of_the_optimizer_and_the_graph(
    shapesx_root: Path, detector: Path, tmp_path: Path
) -> None:
    import dataclasses

    from mxr.engine.data import build_dataset, model_config_for
    from mxr.engine.loop import build_parts

    cfg = _stage2(shapesx_root, detector)
    ds = build_dataset(cfg.data, "train", keep_coco=False)
    cfg = dataclasses.replace(cfg, model=model_config_for(cfg.model, ds))
    parts = build_parts(cfg, ds, torch.device("cpu"))
    model = parts.model
    in_optimizer = {id(p) for g in parts.optimizer.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in in_optimizer) == (not name.startswith(DETECTOR)), name
    model.train()
    assert not model.backbone.training and not model.roi_heads.box_head.training
    assert model.roi_heads.mask_head.training and model.rpn.training
    images, targets = zip(*(ds[i] for i in range(2)), strict=True)
    seen = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: seen.append(torch.is_grad_enabled()))
        for m in (model.backbone, model.rpn)
    ]
    losses = model(list(images), list(targets))
    for h in hooks:
        h.remove()
    assert seen == [False, False]  # no autograd graph through the frozen detector
    assert set(losses) == {"loss_mask"} and losses["loss_mask"].requires_grad


def test_stage_two_resumes_bit_identically(
    shapesx_root: Path, detector: Path, tmp_path: Path
) -> None:
    cfg = _stage2(shapesx_root, detector, ["train.iterations=6", "train.checkpoint_every=100"])
    train(cfg, tmp_path / "full", progress=False, eval_split=None)

    def interrupt(it: int, record: dict) -> None:
        if it == 3:
            os.kill(os.getpid(), signal.SIGINT)

    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, part, progress=False, eval_split=None, callback=interrupt)
    train(cfg, part, resume=True, progress=False, eval_split=None)
    a, b = (load_checkpoint(p / "last.pt") for p in (tmp_path / "full", part))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert b["init_from"] == a["init_from"] and a["init_from"]["sha256"]


def test_init_from_with_trainable_all_starts_from_the_detector(
    shapesx_root: Path, detector: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(shapesx_root, [f"train.init_from={detector}", "train.iterations=1"])
    summary = train(cfg, tmp_path, progress=False, eval_split=None)
    det0, _ = _split(load_checkpoint(detector)["model"])
    det1, _ = _split(summary.model.state_dict())
    moved = [k for k in det0 if not torch.equal(det0[k], det1[k])]
    assert moved  # end to end: the detector trains on from where stage 1 left it
    model = model_from_checkpoint(tmp_path / "last.pt")
    assert not model.detector_frozen  # a checkpoint evaluates as a whole model


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ["model.backbone=resnet18_fpn", "model.fpn_channels=32"],
            r"model\.backbone \('tiny' there",
        ),
        (["model.min_size=96", "model.max_size=96"], r"model\.min_size \(64 there, 96 here\)"),
        (["model.num_classes=5", "model.mask_classes=[1, 2]"], r"model\.num_classes"),
    ],
)
def test_init_from_refuses_a_detector_built_for_another_model(
    shapesx_root: Path, detector: Path, tmp_path: Path, change: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=r"train\.init_from=.*" + message):
        train(_stage2(shapesx_root, detector, change), tmp_path, progress=False, eval_split=None)


def test_init_from_refuses_a_missing_file_and_a_foreign_one(
    shapesx_root: Path, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError, match=r"train\.init_from: checkpoint not found"):
        train(_stage2(shapesx_root, tmp_path / "nope.pt"), tmp_path / "a", progress=False)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match=r"train\.init_from: .*not an mxr checkpoint"):
        train(_stage2(shapesx_root, foreign), tmp_path / "b", progress=False)


def test_trainable_mask_needs_init_from_and_a_known_value() -> None:
    with pytest.raises(
        ValueError, match=r"train\.init_from=None is not valid; expected a checkpoint"
    ):
        TrainConfig(trainable="mask")
    with pytest.raises(ValueError, match=r"train\.trainable='box' is not valid; expected one of"):
        TrainConfig(trainable="box", init_from="x.pt")


@pytest.mark.parametrize("bad", ["missing", "foreign", "other-size"])
def test_mxr_train_says_what_is_wrong_with_init_from_in_one_line(
    shapesx_root: Path,
    detector: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    bad: str,
) -> None:
    from conftest import tiny_overrides

    from mxr.cli import main

    foreign = tmp_path / "foreign.pt"
    foreign.write_text("# not a checkpoint\n")
    path = {"missing": tmp_path / "nope.pt", "foreign": foreign, "other-size": detector}[bad]
    extra = ["model.min_size=96", "model.max_size=96"] if bad == "other-size" else []
    sets = [*tiny_overrides(shapesx_root), f"train.init_from={path}", "train.trainable=mask"]
    status = main(
        ["train", "--out", str(tmp_path / "run"), "--no-progress", "--set", *sets, *extra]
    )
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and "train.init_from" in err, err
    assert str(path) in err
