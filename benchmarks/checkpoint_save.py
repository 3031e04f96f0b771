"""How long ``save_checkpoint`` takes for the paper's full-size model, against torchrun's 30 s.

Builds what ``configs/coco/voc2nonvoc_transfer_mlp.yaml`` trains (R-50-FPN, 81 classes, transfer
cls+box + the paper's MLP form, frozen-BN layout; no ImageNet file is read), gives every trainable
parameter its SGD momentum buffer (one optimizer step on zero gradients), and times the same
checkpoint dict ``mxr.engine.loop.train`` writes, with the same atomic ``save_checkpoint``::

    python benchmarks/checkpoint_save.py                 # 3 saves into a temporary folder
    python benchmarks/checkpoint_save.py --out /scratch  # on the disk the run writes to
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mxr.config import config_to_dict, load_config
from mxr.data.splits import VOC_CAT_IDS
from mxr.engine.checkpoint import rng_state, save_checkpoint
from mxr.engine.loop import build_optimizer, build_scheduler
from mxr.model.build import FROM_CHECKPOINT, build_model, count_parameters

REPO = Path(__file__).resolve().parents[1]


def full_size_state(config: Path) -> tuple[dict, int]:
    """The checkpoint dict of ``config`` at 81 classes after one step; and its parameter count."""
    cfg = load_config(config)
    a_labels = tuple(range(1, len(VOC_CAT_IDS) + 1))  # any 20 labels: sizes are what matter
    model_cfg = dataclasses.replace(cfg.model, num_classes=81, mask_classes=a_labels)
    cfg = dataclasses.replace(cfg, model=model_cfg.resolved())
    model = build_model(cfg.model, FROM_CHECKPOINT)  # the frozen-BN layout, no file read
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    optimizer.step()  # creates the momentum buffers a real checkpoint holds
    scheduler.step()
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": {
            "scale": 65536.0,
            "growth_factor": 2.0,
            "backoff_factor": 0.5,
            "growth_interval": 2000,
            "_growth_tracker": 0,
        },  # fmt: skip
        "iteration": 5000,
        "config": config_to_dict(cfg),
        "rng": rng_state(),
        "world_size": 8,
        "mxr_version": "benchmark",
    }
    return state, count_parameters(model)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO / "configs/coco/voc2nonvoc_transfer_mlp.yaml"))
    p.add_argument("--out", default=None, help="folder to write into (default: a temporary one)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    t0 = time.perf_counter()
    state, n_params = full_size_state(Path(args.config))
    print(f"built {n_params / 1e6:.1f} M parameters + momentum in {time.perf_counter() - t0:.1f} s")
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        path = Path(tmp) / "last.pt"
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            save_checkpoint(path, state)
            times.append(time.perf_counter() - t)
        size = path.stat().st_size
        t = time.perf_counter()
        torch.load(path, map_location="cpu", weights_only=True)
        load_s = time.perf_counter() - t
    print(f"checkpoint: {size / 1e9:.2f} GB ({size / 2**30:.2f} GiB)")
    print(
        f"save_checkpoint: median {statistics.median(times):.2f} s, "
        f"min {min(times):.2f} s, max {max(times):.2f} s over {len(times)} saves "
        f"({size / 1e6 / statistics.median(times):.0f} MB/s); load {load_s:.2f} s"
    )


if __name__ == "__main__":
    main()
