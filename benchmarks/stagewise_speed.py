"""A stage-2 (mask-branch-only) training step against an end-to-end step of the same model.

    python benchmarks/stagewise_speed.py                      # ShapesX transfer+MLP, 1 thread
    python benchmarks/stagewise_speed.py --config configs/shapesx/agnostic_mlp.yaml --threads 2

Both models are built from one config and seed; the stage-2 one has its detector frozen as
``train.trainable: mask`` does (``MaskXRCNN.freeze_detector``: out of the optimizer, BatchNorm in
eval, run under ``no_grad``). They train on the same batches of ShapesX (``data.root``; generate it
with ``python -m mxr data shapesx`` — without it, synthetic boxes), with the engine's optimizer, and
their steps are interleaved so drift in machine load hits both alike. Prints the median seconds of a
step (forward + backward + optimizer step) and the ratio mask-only / end to end (target <= 0.6).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from mxr.config import load_config
from mxr.engine.data import build_dataset, model_config_for
from mxr.engine.loop import build_optimizer
from mxr.model.build import build_model


def batches(cfg, n: int, batch: int):  # noqa: ANN001, ANN201
    """``n`` training batches of ShapesX (flips as in training) and the model config for it."""
    ds = build_dataset(cfg.data, "train", seed=0, keep_coco=False)
    mcfg = model_config_for(cfg.model, ds)
    out = []
    for b in range(n):
        items = [ds[(b * batch + i) % len(ds)] for i in range(batch)]
        out.append(([im for im, _ in items], [t for _, t in items]))
    return mcfg, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/shapesx/transfer_mlp.yaml")
    p.add_argument("--iters", type=int, default=20, help="timed steps of each (default 20)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    if not Path(cfg.data.root).is_dir():
        raise SystemExit(
            f"{cfg.data.root}: no ShapesX here; run `python -m mxr data shapesx` first"
        )
    mcfg, data = batches(cfg, args.iters + args.warmup, cfg.train.batch_size)
    models = {}
    for name in ("end to end", "mask only"):
        model = build_model(mcfg)
        if name == "mask only":
            model.freeze_detector()
        model.train()
        models[name] = (model, build_optimizer(model, cfg.train))
    times: dict[str, list[float]] = {name: [] for name in models}
    for i, (images, targets) in enumerate(data):
        for name, (model, opt) in models.items():
            t0 = time.perf_counter()
            loss = sum(model(images, targets).values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(t) for name, t in times.items()}
    trainable = {
        name: sum(p.numel() for p in m.parameters() if p.requires_grad)
        for name, (m, _) in models.items()
    }
    print(f"{args.config}, batch {cfg.train.batch_size}, {args.threads} thread(s), "
          f"{args.iters} timed steps each (interleaved)")  # fmt: skip
    for name, t in med.items():
        print(f"  {name:<11} {t:.3f} s/step   trainable parameters {trainable[name]:>9,}")
    print(f"  mask only / end to end = {med['mask only'] / med['end to end']:.2f} (target <= 0.6)")


if __name__ == "__main__":
    main()
