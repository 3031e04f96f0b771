"""Do the detection weights of set-B classes sit among their A neighbours, and do τ's outputs?

For each checkpoint, for each B class, take its two nearest set-A classes (cosine similarity of the
mean-centred weight vectors) and count how many are in the same family, and how many are the adjacent
members (k ± 1), in ``w_det`` (``cls``, ``box``, ``cls+box`` rows of the box predictor) and, for a
transfer head, in τ's input (detection weights or the class embedding, per ``transfer_input``) and
its output ``w_seg``. Chance, for 6 B classes × 2 neighbours = 12 slots among 24 A
classes: 2/12 same family and 1/12 adjacent.

    python docs/probe_wdet.py runs/results/shapesx/transfer_*/seed0/last.pt
"""

from __future__ import annotations

import sys

import torch

from mxr.course.probes import detection_weights, neighbour_hits, transfer_input_rows
from mxr.data.shapesx import class_names, default_split
from mxr.engine.checkpoint import load_checkpoint, model_from_checkpoint


def main(paths: list[str]) -> None:
    names, b_names = class_names(), default_split()["B"]
    labels = torch.arange(1, len(names) + 1)
    print("| run | w_det cls | w_det box | w_det cls+box | τ input | w_seg |")
    print("|---|---:|---:|---:|---:|---:|")
    for path in paths:
        model = model_from_checkpoint(load_checkpoint(path))
        heads = model.roi_heads
        cells = [
            "{}/12, adj {}/12".format(*neighbour_hits(w[1:], names, b_names))  # no background row
            for w in detection_weights(model).values()
        ]
        if heads.mask_predictor.uses_detection_weights:
            x = transfer_input_rows(model)[1:]
            cells.append(
                f"{heads.transfer_input}: "
                + "{}/12, adj {}/12".format(*neighbour_hits(x, names, b_names))
            )
            with torch.no_grad():
                w_seg = heads.mask_predictor.mask_weights_of(labels, heads.read_transfer_input)
            cells.append("{}/12, adj {}/12".format(*neighbour_hits(w_seg, names, b_names)))
        else:
            cells += ["—", "—"]
        print(f"| {path} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
