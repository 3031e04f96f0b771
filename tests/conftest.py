"""Shared fixtures: a tiny ShapesX dataset (64 px) and a tiny-model config that trains in seconds."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from mxr.config import Config, load_config
from mxr.engine.loop import TrainResult

TINY_MODEL = [
    "model.backbone=tiny",
    "model.backbone_weights=null",  # from scratch (the COCO configs name an ImageNet R-50 file)
    "model.min_size=64",
    "model.max_size=64",
    "model.fpn_channels=32",
    "model.box_fc_dim=64",
    "model.mask_head_channels=16",
    "model.mlp_channels=4",
    "model.rpn_pre_nms_top_n_train=200",
    "model.rpn_post_nms_top_n_train=100",
    "model.rpn_pre_nms_top_n_test=100",
    "model.rpn_post_nms_top_n_test=50",
    "model.box_batch_size_per_image=32",
    "model.box_detections_per_img=20",
]
TINY_TRAIN = [
    "train.iterations=4",
    "train.batch_size=2",
    "train.lr=0.01",
    "train.warmup_iters=2",
    "train.checkpoint_every=2",
    "train.log_every=1",
    "train.device=cpu",
    "train.amp=false",
]


class EpochIndices(torch.utils.data.Dataset):
    """Item i is ``(tensor(i), {"epoch": tensor(epoch)})``: what the engine's batching serves, and in
    which epoch (``set_epoch``), without any image."""

    def __init__(self, n: int) -> None:
        self.n, self.epoch = n, 0

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int):  # noqa: ANN204
        return torch.tensor(i), {"epoch": torch.tensor(self.epoch)}


def tiny_config(
    root: Path, overrides: Sequence[str] = (), path: str | Path | None = None
) -> Config:
    """A config for the tiny test data: ``path`` (default: built-in defaults) + tiny sizes + overrides."""
    data = [f"data.root={root}", "data.generate=false"]
    return load_config(path, [*TINY_MODEL, *data, *TINY_TRAIN, *overrides])


def tiny_overrides(root: Path) -> list[str]:
    """The ``--set`` values that make any config train on the tiny test data."""
    return [*TINY_MODEL, f"data.root={root}", "data.generate=false", *TINY_TRAIN]


def stop_at_replace(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make the rename of a file called ``name`` (the last step of :func:`mxr.report.atomic_path`)
    fail as a stop would, after the new bytes are written."""
    real = os.replace

    def replace(src, dst):  # noqa: ANN001, ANN202
        if Path(dst).name == name:
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


@pytest.fixture(scope="session")
def shapesx_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ShapesX (64 px): 8 train, 4 val, 4 test images."""
    from mxr.data.shapesx import generate_shapesx

    root = tmp_path_factory.mktemp("shapesx")
    generate_shapesx(root, train=8, val=4, test=4, seed=0, image_size=64, progress=False)
    return root


@pytest.fixture(scope="session")
def trained_run(shapesx_root: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """One finished 4-iteration training run (with its final evaluation): what ``train`` returns."""
    from mxr.engine.loop import train

    out = tmp_path_factory.mktemp("run")
    return train(tiny_config(shapesx_root), out, progress=False)


#: The real COCO 2017 sample (80 train + 80 val images, one per category): ``MXR_COCO_SAMPLE``, else
#: ``../shared/coco-tiny`` beside the repository (a fresh clone's sibling ``shared/`` folder).
COCO_SAMPLE_DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "coco-tiny"


def coco_sample_path() -> Path:
    """Where the real COCO sample is looked for (it may not exist)."""
    value = os.environ.get("MXR_COCO_SAMPLE")
    if not value:
        return COCO_SAMPLE_DEFAULT
    p = Path(value).expanduser()
    repo = Path(__file__).resolve().parents[1]
    return p if p.is_absolute() or p.exists() else repo / p


@pytest.fixture(scope="session")
def coco_sample() -> Path:
    """The real COCO 2017 sample's root (read-only: write copies under ``tmp_path``); skips when absent."""
    root = coco_sample_path()
    needed = [root / "annotations" / f"instances_{s}2017.json" for s in ("train", "val")] + [
        root / f"{s}2017" for s in ("train", "val")
    ]
    missing = [p for p in needed if not p.exists()]
    if missing:
        pytest.skip(
            f"real COCO sample not found at {root} (missing {missing[0].relative_to(root)}); set "
            "MXR_COCO_SAMPLE to a folder with train2017/, val2017/ and annotations/"
        )
    return root
