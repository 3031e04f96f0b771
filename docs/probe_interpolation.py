"""How much could a transfer function gain on ShapesX, and can it be read off the detection weights?

Takes an oracle checkpoint (a class-specific mask head trained with masks of every class), replaces
the mask weights of each set-B class by a guess built from set A only, and prints B mIoU given the
true boxes for each guess (:func:`mxr.course.probes.interpolation_probe`). It also prints how far each B
class's ``w_det`` lies from the mean of its adjacent A members, relative to its own norm
(:func:`mxr.course.probes.wdet_distance_from_adjacent`; 0 would mean the detection weights interpolate).
The guesses include the linear map from the ShapesX class embedding (what ``transfer_input: embed``
reads), fitted on the A pairs like the ``w_det`` maps.

    python docs/probe_interpolation.py runs/results/shapesx/oracle/seed0/last.pt --split test
"""

from __future__ import annotations

import argparse

from mxr.config import config_from_dict
from mxr.course.probes import interpolation_probe, wdet_distance_from_adjacent
from mxr.data.embedding import embedding_rows
from mxr.data.shapesx import class_embedding, class_names, default_split
from mxr.engine.checkpoint import load_checkpoint, model_from_checkpoint
from mxr.engine.data import build_dataset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+", help="ShapesX oracle checkpoints (mask_head: class)")
    p.add_argument("--split", default="val", choices=("val", "test"))
    args = p.parse_args()
    names, b_names = class_names(), default_split()["B"]
    emb = embedding_rows(class_embedding(), ["__background__", *names])
    for path in args.checkpoints:
        ckpt = load_checkpoint(path)
        cfg = config_from_dict(ckpt["config"], where=f"{path} (config)")
        model = model_from_checkpoint(ckpt)
        dataset = build_dataset(cfg.data, args.split, seed=cfg.train.seed)
        print(f"\n{path}, {args.split} split ({len(dataset)} images)\n")
        dist = wdet_distance_from_adjacent(model, names, b_names)
        print("distance of B's w_det from its adjacent A members' mean (relative): "
              + ", ".join(f"{k} {v:.2f}" for k, v in dist.items()) + "\n")  # fmt: skip
        print("| mask weights of the B classes | B mIoU (true boxes) | A mIoU |")
        print("|---|---:|---:|")
        for row in interpolation_probe(model, dataset, names, b_names, embedding=emb):
            print(f"| {row['guess']} | {row['B']:.1f} | {row['A']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
