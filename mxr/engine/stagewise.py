"""Stage-wise training, the paper's protocol for Table 1: a detector trained on the boxes of A ∪ B
(stage 1) starts a run (``train.init_from``); with ``train.trainable: mask`` it is frozen and only
the mask branch learns (stage 2), so every row of an ablation reads the same, mature ``w_det``."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from torch import nn

from mxr.config import ModelConfig, config_from_dict
from mxr.engine.checkpoint import load_checkpoint
from mxr.errors import MissingFileError, UserInputError

#: Model fields that shape the detector's weights or what they mean: a checkpoint to start from must
#: agree with the run on each (the mask-branch fields may differ: that is the point of stage 2).
DETECTOR_FIELDS = (
    "num_classes",
    "backbone",
    "min_size",
    "max_size",
    "fpn_channels",
    "anchor_sizes",
    "box_head",
    "box_fc_dim",
)


def file_sha256(path: str | Path) -> str:
    """The hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_detector(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Copy the detector weights of the mxr checkpoint ``path`` into ``model`` (a ``MaskXRCNN``
    whose config is resolved) and return ``{"path", "sha256"}`` for the run's record.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming ``train.init_from``
    for a file that is not an mxr checkpoint or was built for other classes, another backbone or
    another image size (:data:`DETECTOR_FIELDS`)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"train.init_from: checkpoint not found: {path}")
    try:
        ckpt = load_checkpoint(path)
        saved = config_from_dict(ckpt["config"], where=f"{path} (config)").model.resolved()
    except ValueError as e:
        raise UserInputError(f"train.init_from: {e}") from e
    now: ModelConfig = model.config
    diff = [
        f"model.{k} ({getattr(saved, k)!r} there, {getattr(now, k)!r} here)"
        for k in DETECTOR_FIELDS
        if getattr(saved, k) != getattr(now, k)
    ]
    if diff:
        raise UserInputError(
            f"train.init_from={str(path)!r}: the checkpoint's detector was built for another model: "
            + ", ".join(diff)
            + "; expected a detector trained with the same classes, backbone and image size"
        )
    state = ckpt["model"]
    for prefix, module in model.detector_modules().items():
        part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        missing, unexpected = module.load_state_dict(part, strict=False)
        if missing or unexpected:
            names = ", ".join(prefix + k for k in [*missing, *unexpected][:3])
            raise UserInputError(
                f"train.init_from={str(path)!r}: the checkpoint's weights do not fit the detector "
                f"({names}); expected a checkpoint of `mxr train` with the same model layout"
            )
    return {"path": str(path), "sha256": file_sha256(path)}
