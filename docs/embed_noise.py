"""How well τ's input orders the classes, against how well τ transfers masks to set B.

The ideal ShapesX embedding puts each B member halfway between its two A neighbours. This study
adds Gaussian noise of standard deviation SIGMA to every entry of it (the member step is 0.5), trains
τ(embed) + MLP stage-wise on the published ablation's frozen detector of each seed, and scores B
on the test split. Beside those runs it reads the published rows whose τ reads the detector's own
weights (τ(cls) + MLP, τ(cls+box) + MLP) and the ideal embedding's (σ = 0), and trains τ(randn) +
MLP (a random vector per class) on the same detectors. For every run the
x-axis is :func:`mxr.course.probes.distance_from_adjacent` of τ's input rows, as the model holds
them (0: the input interpolates between neighbours).

    python docs/embed_noise.py            # trains what is missing (2 at a time), then writes
                                          # docs/results_embed_noise.json and its figure,
                                          # docs/results_embed_noise.png (B mIoU; notebooks/README.md)
    python docs/embed_noise.py --no-train # only collect finished runs

About 20 minutes on 2 cores: 4 noise levels and randn, 3 seeds each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from mxr.course.figures import transfer_order_figure
from mxr.course.probes import distance_from_adjacent, transfer_input_rows
from mxr.data.embedding import read_embedding_file, write_embedding_json
from mxr.data.shapesx import class_names, default_split
from mxr.engine.checkpoint import model_from_checkpoint
from mxr.files import read_json_file, read_json_or_none
from mxr.report import eval_metric

REPO = Path(__file__).resolve().parents[1]
SIGMAS = (0.1, 0.25, 0.5, 1.0)
SEEDS = (0, 1, 2)
#: The published rows placed on the same axes: (row, label).
PUBLISHED = (
    ("transfer_embed_mlp", "ideal embedding (σ = 0)"),
    ("transfer_cls_mlp", "w_det: cls"),
    ("transfer_mlp", "w_det: cls+box"),
    ("agnostic_mlp", "control: class-agnostic + MLP"),
)


def noisy_embedding(data: Path, sigma: float, seed: int) -> str:
    """Write the ideal embedding plus N(0, sigma²) noise (its own generator) next to it; return
    the path relative to the data root, as ``model.class_embedding`` takes it."""
    rel = f"annotations/class_embedding_noise{sigma:g}_seed{seed}.json"
    if (data / rel).is_file():  # written by an earlier run: the same numbers
        return rel
    table = read_embedding_file(data / "annotations" / "class_embedding.json")
    g = torch.Generator().manual_seed(1000 * seed + round(100 * sigma))
    noisy = {
        name: (torch.tensor(v) + sigma * torch.randn(len(v), generator=g)).tolist()
        for name, v in table.items()
    }
    write_embedding_json(noisy, data / rel)
    return rel


def train_one(job: tuple[Path, Path, list[str]]) -> Path:
    """Train one stage-2 run (skipped when finished) and score it on test (``eval_test.json``)."""
    out, config, overrides = job
    py = sys.executable
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if not (out / "eval.json").is_file():
        cmd = [py, "-m", "mxr", "train", "--config", str(config), "--out", str(out), "--resume"]
        subprocess.run([*cmd, "--no-progress", "--set", *overrides], check=True, cwd=REPO, env=env)
    if not (out / "eval_test.json").is_file():
        cmd = [py, "-m", "mxr", "eval", "--checkpoint", str(out / "last.pt"), "--split", "test"]
        subprocess.run([*cmd, "--no-progress"], check=True, cwd=REPO, env=env)
    print(f"done {out}", flush=True)
    return out


def b_scores(evaluation: dict) -> tuple[float, float]:
    return eval_metric(evaluation, "B", "mIoU"), eval_metric(evaluation, "B", "AP75")


def distance_of(checkpoint: Path) -> float | None:
    """:func:`distance_from_adjacent` of τ's input rows in ``checkpoint`` (None: no τ)."""
    rows = transfer_input_rows(model_from_checkpoint(checkpoint))
    if rows is None:
        return None
    return distance_from_adjacent(rows, class_names(), default_split()["B"])


def summary(label: str, runs: list[tuple[float | None, float, float]]) -> dict:
    dist, miou, ap75 = (list(v) for v in zip(*runs, strict=True))
    mean = statistics.fmean
    return {
        "label": label,
        "distance": dist,
        "B_mIoU": miou,
        "B_AP75": ap75,
        "distance_mean": None if None in dist else mean(dist),
        "B_mIoU_mean": mean(miou),
        "B_mIoU_std": statistics.stdev(miou),
        "B_AP75_mean": mean(ap75),
        "B_AP75_std": statistics.stdev(ap75),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--published", type=Path, default=REPO / "runs/results/shapesx_sw")
    ap.add_argument("--out", type=Path, default=REPO / "runs/embed_noise")
    ap.add_argument("--data", type=Path, default=REPO / "data/shapesx")
    ap.add_argument("--write", type=Path, default=REPO / "docs/results_embed_noise.json")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-train", action="store_true")
    args = ap.parse_args()
    pub = args.published
    jobs = []
    for sigma in SIGMAS:
        for seed in SEEDS:
            rel = noisy_embedding(args.data, sigma, seed)
            overrides = [
                f"train.init_from={pub / 'detector' / f'seed{seed}' / 'last.pt'}",
                f"model.class_embedding={rel}",
                f"data.root={args.data}",
            ]
            config = pub / "transfer_embed_mlp" / f"seed{seed}" / "config.yaml"
            jobs.append((args.out / f"sigma{sigma:g}" / f"seed{seed}", config, overrides))
    for seed in SEEDS:  # random vectors per class, with the MLP branch like every row here
        overrides = [
            f"train.init_from={pub / 'detector' / f'seed{seed}' / 'last.pt'}",
            "model.transfer_input=randn",
            f"data.root={args.data}",
        ]
        config = pub / "transfer_embed_mlp" / f"seed{seed}" / "config.yaml"
        jobs.append((args.out / "randn" / f"seed{seed}", config, overrides))
    if not args.no_train:
        with ThreadPoolExecutor(args.jobs) as pool:  # each a one-thread process
            list(pool.map(train_one, jobs))
    rows = []
    for row, label in PUBLISHED:
        runs = []
        for seed in SEEDS:
            run = pub / row / f"seed{seed}"
            ev = read_json_file(run / "result.json", "an ablation run's result")[
                "eval"
            ]  # test split
            runs.append((distance_of(run / "last.pt"), *b_scores(ev)))
        sigma = 0.0 if row == "transfer_embed_mlp" else None
        rows.append({"row": row, "sigma": sigma, **summary(label, runs)})
    for sigma in SIGMAS:
        runs = []
        for seed in SEEDS:
            run = args.out / f"sigma{sigma:g}" / f"seed{seed}"
            ev = read_json_or_none(run / "eval_test.json")
            if ev is None:
                break
            runs.append((distance_of(run / "last.pt"), *b_scores(ev)))
        if len(runs) == len(SEEDS):
            label = f"noisy embedding (σ = {sigma:g})"
            rows.append({"row": "transfer_embed_mlp", "sigma": sigma, **summary(label, runs)})
    runs = []
    for seed in SEEDS:
        run = args.out / "randn" / f"seed{seed}"
        ev = read_json_or_none(run / "eval_test.json")
        if ev is not None:
            runs.append((distance_of(run / "last.pt"), *b_scores(ev)))
    if len(runs) == len(SEEDS):
        rows.append({"row": "transfer_randn_mlp", "sigma": None, **summary("randn", runs)})
    meta = {
        "split": "test",
        "seeds": list(SEEDS),
        "sigmas": list(SIGMAS),
        "command": "python docs/embed_noise.py",
    }
    args.write.write_text(json.dumps({"rows": rows, "meta": meta}, indent=1) + "\n")
    for r in rows:
        d = "—" if r["distance_mean"] is None else f"{r['distance_mean']:.2f}"
        mious = f"{r['B_mIoU_mean']:.1f} ± {r['B_mIoU_std']:.1f}"
        print(f"{r['label']:32s} distance {d:>5s}  B mIoU {mious}  AP75 {r['B_AP75_mean']:.1f}")
    figure = args.write.with_suffix(".png")
    transfer_order_figure(rows).savefig(figure, dpi=80, bbox_inches="tight")
    print(f"wrote {args.write} and {figure}")


if __name__ == "__main__":
    main()
