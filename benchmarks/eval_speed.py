"""How long does `mxr.evaluation.evaluate` take on ShapesX val (300 images) with the tiny model?

The issue asks for under a minute on 2 CPU cores. The model is the ShapesX ``transfer_mlp`` config,
trained here for ``--train-iters`` iterations (an untrained detector scores everything below the
0.05 threshold and would make evaluation look free), or loaded from ``--checkpoint``. Also prints
the training step time and the mean number of detections per image (what evaluation pays for).

    python benchmarks/eval_speed.py [--images 300] [--train-iters 300] [--threads 2]
    python benchmarks/eval_speed.py --checkpoint runs/transfer_mlp/last.pt
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from mxr.config import load_config
from mxr.data.shapesx import generate_shapesx
from mxr.engine.checkpoint import model_from_checkpoint
from mxr.engine.data import build_dataset
from mxr.engine.loop import train
from mxr.evaluation import evaluate
from mxr.report import format_table

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=300, help="val images to generate (default 300)")
    ap.add_argument("--train-images", type=int, default=400, help="train images (default 400)")
    ap.add_argument("--train-iters", type=int, default=300, help="iterations to train first")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--config", default=str(REPO / "configs/shapesx/transfer_mlp.yaml"))
    ap.add_argument("--checkpoint", help="evaluate this checkpoint instead of training one")
    ap.add_argument("--no-mask-iou", action="store_true", help="skip the mask IoU given true boxes")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate_shapesx(
            tmp, train=args.train_images, val=args.images, test=1, seed=123, progress=False
        )
        print(
            f"generated {args.train_images} + {args.images} images in {time.perf_counter() - t0:.1f} s"
        )
        cfg = load_config(
            args.config, [f"data.root={tmp}", "data.generate=false", "train.device=cpu"]
        )
        if args.checkpoint:
            model = model_from_checkpoint(args.checkpoint)
            what = f"checkpoint {args.checkpoint}"
        else:
            cfg = load_config(
                args.config,
                [f"data.root={tmp}", "data.generate=false", "train.device=cpu",
                 f"train.iterations={args.train_iters}", f"train.checkpoint_every={args.train_iters}"],
            )  # fmt: skip
            summary = train(cfg, Path(tmp) / "run", progress=False, eval_split=None)
            model = summary.model.eval()
            what = f"{Path(args.config).stem}, trained {args.train_iters} iterations"
            print(
                f"train: {args.train_iters} iterations of {cfg.train.batch_size} images in "
                f"{summary.train_time_s:.0f} s, median step {summary.step_time_s:.3f} s"
            )
        val = build_dataset(cfg.data, "val")
        with torch.no_grad():
            n_det = [len(o["boxes"]) for o in model([val[i][0] for i in range(min(16, len(val)))])]
        t0, c0 = time.perf_counter(), time.process_time()
        res = evaluate(model, val, device="cpu", batch_size=8, progress=False,
                       mask_iou=not args.no_mask_iou)  # fmt: skip
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(format_table(res))
    print(
        f"evaluate: {len(val)} images in {dt:.1f} s ({len(val) / dt:.1f} images/s), "
        f"{sum(n_det) / len(n_det):.1f} detections/image, {args.threads} threads, {what}; "
        "target < 60 s"
    )
    load = os.getloadavg()[0]
    print(
        f"CPU time {cpu:.1f} s over {args.threads} threads = {cpu / args.threads:.1f} s on "
        f"{args.threads} idle cores (load average now {load:.1f}: others share the machine)"
    )


if __name__ == "__main__":
    main()
