"""Checkpoints: atomic writes, ``weights_only`` loading with one-line refusals, every RNG state
(so a resumed run is bit-identical on CPU), and the :class:`Checkpointer` the loop calls."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mxr.config import Config, config_from_dict, config_to_dict
from mxr.engine.dist import DistInfo
from mxr.errors import MissingFileError, UserInputError
from mxr.files import atomic_path


def rng_state() -> dict[str, Any]:
    """Every RNG state the training uses, as tensors and plain types (``weights_only``-loadable)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    keys = npst["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, npst["pos"], npst["has_gauss"], npst["cached_gaussian"]))


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` atomically: a temporary file, then ``os.replace``."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint of :func:`train` with ``weights_only=True``; ``ValueError("<path>: not an
    mxr checkpoint (<reason>)")`` for a file empty, corrupt, foreign, pickled or lacking keys."""
    import warnings

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint not found: {path}")

    def refuse(reason: str) -> UserInputError:
        return UserInputError(f"{path}: not an mxr checkpoint ({reason})")

    with path.open("rb") as f:
        head = f.read(4)
    if not head:
        raise refuse("the file is empty")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised as one line that names the file
        msg = str(e)
        if not head.startswith((b"PK\x03\x04", b"\x80")):  # zip (torch >= 1.6) or legacy pickle
            raise refuse("it is not a file written by torch.save") from e
        if "Weights only load failed" in msg:  # never repeat torch's advice to drop weights_only
            name = msg.split("GLOBAL ", 1)[1].split()[0] if "GLOBAL " in msg else ""
            held = f"pickled objects ({name})" if name else "pickled objects"
            raise refuse(f"it holds {held} that weights_only loading refuses") from e
        first = msg.strip().splitlines()[0].split(". ")[0] if msg.strip() else type(e).__name__
        raise refuse(f"the file is truncated or corrupt: {first}") from e
    if not isinstance(ckpt, dict):
        raise refuse(f"it holds a {type(ckpt).__name__}, not a dict; expected one from `mxr train`")
    missing = [k for k in ("model", "config", "iteration") if k not in ckpt]
    if missing:
        raise refuse(f"it lacks {', '.join(missing)}; expected one from `mxr train`")
    return ckpt


def model_from_checkpoint(
    ckpt: dict[str, Any] | str | Path, *, device: str | torch.device = "cpu"
) -> nn.Module:
    """Rebuild the model of a checkpoint from its config and weights, in eval mode (without
    reading ``model.backbone_weights``: a checkpoint evaluates on a machine without that file)."""
    from mxr.model.build import FROM_CHECKPOINT, build_model

    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    cfg = config_from_dict(ckpt["config"], where="checkpoint config")
    emb = ckpt["model"].get("roi_heads.class_embedding")  # τ's fixed input travels in the file
    model = build_model(cfg.model, FROM_CHECKPOINT, class_embedding=emb)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()


@dataclass
class TrainParts:
    """What a run trains, and what its checkpoint saves and restores: the model (on the training
    device), its optimizer, the per-iteration LR scheduler and the GradScaler (``amp``: mixed
    precision is on). ``init_from``: ``{"path", "sha256"}`` of the ``train.init_from`` detector the
    run started from, or None."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp: bool
    init_from: dict[str, str] | None = None


class Checkpointer:
    """The training state of one run in ``path``: :meth:`save` (rank 0 writes, atomically) and
    :meth:`restore` (every rank reads; returns the iteration to continue from)."""

    def __init__(self, path: Path, cfg: Config, info: DistInfo, parts: TrainParts) -> None:
        self.path, self.cfg, self.info, self.parts = path, cfg, info, parts

    def save(self, iteration: int) -> None:
        from mxr import __version__

        if not self.info.is_main:
            return
        parts = self.parts
        state = {
            "model": parts.model.state_dict(),
            "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict(),
            "scaler": parts.scaler.state_dict() if parts.amp else None,
            "iteration": iteration,
            "config": config_to_dict(self.cfg),
            "rng": rng_state(),
            "world_size": self.info.world_size,
            "mxr_version": __version__,
            "init_from": parts.init_from,
        }
        save_checkpoint(self.path, state)

    def restore(self) -> int:
        """Restore model, optimizer, scheduler, scaler and RNG states (the model config must match);
        the iteration to continue from. Loaded to the CPU: the RNG states must stay CPU tensors."""
        ckpt = load_checkpoint(self.path, map_location="cpu")
        saved = config_from_dict(ckpt["config"], where=f"{self.path} (config)")
        a, b = (config_to_dict(Config(model=c.model))["model"] for c in (saved, self.cfg))
        if a != b:
            diff = ", ".join(f"model.{k} ({a[k]!r} saved, {b[k]!r} now)" for k in a if a[k] != b[k])
            raise UserInputError(
                f"--resume: the model config differs from the checkpoint {self.path} in {diff}"
            )
        parts = self.parts
        parts.model.load_state_dict(ckpt["model"])
        parts.optimizer.load_state_dict(ckpt["optimizer"])
        parts.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            parts.scaler.load_state_dict(ckpt["scaler"])
        parts.init_from = ckpt.get("init_from") or parts.init_from
        start, info = int(ckpt["iteration"]), self.info
        if info.world_size == int(ckpt.get("world_size", 1)) and info.is_main:
            set_rng_state(ckpt["rng"])
        elif info.world_size == int(ckpt.get("world_size", 1)):
            torch.manual_seed(self.cfg.train.seed + info.rank + 7919 * start)
        return start
