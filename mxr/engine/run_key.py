"""A run's identity: one hash of everything that decides what it trains.

Two configs with the same key train the same weights (on one machine: training is bit-identical run
to run), so a finished run of a key can stand in for training it again. The course keys its run
folders by it (``runs/course/<budget>/<key>``) and the ablation records it in each ``result.json``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from mxr.config import Config, config_to_dict
from mxr.engine.stagewise import file_sha256
from mxr.errors import MissingFileError
from mxr.files import read_json_or_none

#: ``train`` fields that change how a run is logged and saved, not what it learns.
BOOKKEEPING = ("checkpoint_every", "log_every")


@functools.lru_cache(maxsize=64)
def _sha256_of(path: Path, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def run_key(cfg: Config) -> str:
    """The hex sha256 of ``cfg`` with the bookkeeping fields left out, the data by its generator
    manifest (``<data.root>/manifest.json``: the same generated data wherever it sits) or else by
    its absolute root, and ``train.init_from`` by the checkpoint's bytes (the same detector
    wherever it was copied; it must exist)."""
    d = config_to_dict(cfg)
    for name in BOOKKEEPING:
        d["train"].pop(name)
    if d["train"]["init_from"]:
        path = Path(d["train"]["init_from"])
        if not path.is_file():
            raise MissingFileError(
                f"train.init_from: {path} not found; expected the stage-1 checkpoint of this run"
            )
        st = path.stat()
        d["train"]["init_from"] = "sha256:" + _sha256_of(path.resolve(), st.st_size, st.st_mtime_ns)
    manifest = read_json_or_none(Path(cfg.data.root) / "manifest.json")
    d["data"]["root"] = manifest if manifest is not None else str(Path(cfg.data.root).resolve())
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()
