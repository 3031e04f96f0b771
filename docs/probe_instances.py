"""What B mask AP75 rewards that the mean IoU does not: the per-instance IoUs, given true boxes.

For each checkpoint, every set-B instance of the split is segmented for its true box and class, and
the IoUs are summarised: the mean (the table's mIoU), the share at IoU >= 0.5, >= 0.75 (what AP75
counts, once the box is found) and >= 0.9, and the mean of the worst tenth.

    python docs/probe_instances.py runs/results/shapesx_sw/{agnostic_mlp,transfer_mlp,oracle}/seed0/last.pt
"""

from __future__ import annotations

import argparse

import numpy as np

from mxr.config import config_from_dict
from mxr.engine.checkpoint import load_checkpoint, model_from_checkpoint
from mxr.engine.data import build_dataset
from mxr.evaluation import instance_ious


def summary(ious: list[float]) -> dict[str, float]:
    """Mean, shares at 0.5 / 0.75 / 0.9 and the worst decile's mean, in percent."""
    v = np.sort(np.asarray(ious, dtype=float))
    worst = v[: max(1, len(v) // 10)]
    return {
        "n": len(v),
        "mean": 100 * v.mean(),
        ">=0.5": 100 * (v >= 0.5).mean(),
        ">=0.75": 100 * (v >= 0.75).mean(),
        ">=0.9": 100 * (v >= 0.9).mean(),
        "worst 10%": 100 * worst.mean(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--split", default="test", choices=("val", "test"))
    args = p.parse_args()
    print("| run | B instances | mean IoU | IoU >= 0.5 | >= 0.75 | >= 0.9 | worst 10 % (mean) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for path in args.checkpoints:
        ckpt = load_checkpoint(path)
        cfg = config_from_dict(ckpt["config"], where=f"{path} (config)")
        ds = build_dataset(cfg.data, args.split)
        b = set(int(x) for x in ds.b_labels)
        ious = [r.iou for r in instance_ious(model_from_checkpoint(ckpt), ds) if r.label in b]
        s = summary(ious)
        print(f"| {path} | {s['n']} | {s['mean']:.1f} | {s['>=0.5']:.0f} % | {s['>=0.75']:.0f} % "
              f"| {s['>=0.9']:.0f} % | {s['worst 10%']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
