"""How much could a transfer function gain on ShapesX, and can it be read off the detection weights?

Take an oracle checkpoint (a class-specific mask head trained with masks of every class), replace the
mask weights ``w_seg`` (1×1 filter and bias) of each set-B class by a guess built from set A only, and
measure B mIoU given the true boxes on a split:

* ``own``: the oracle's own weights (the ceiling);
* ``adjacent A members``: the mean of the same family's members k-1 and k+1 (what an ideal τ that
  interpolates along the member axis would give);
* ``family's A members``: the mean of the family's four A members (knows the family, not the member);
* ``all A classes``: the mean of the 24 A classes (one mask for all, like a class-agnostic head);
* ``ridge map from w_det (<input>)``: a linear map fitted on the 24 A pairs (w_det -> w_seg), applied
  to the B classes' w_det (what the paper's τ can learn from these detection weights);
* ``top-2 w_det neighbours (cls)``: the mean of the two A classes whose ``cls`` rows are most similar.

It also prints how far each B class's ``w_det`` is from the mean of its adjacent A members, relative
to its own norm (both centred on the A mean): 0 would mean the detection weights interpolate.

    python docs/probe_interpolation.py runs/results/shapesx/oracle/seed0/last.pt [--split val]
"""

from __future__ import annotations

import argparse

import torch

from mxr.config import config_from_dict
from mxr.data.shapesx import class_names, default_split
from mxr.engine import build_dataset, load_checkpoint, model_from_checkpoint
from mxr.evaluation import evaluate


def ridge_map(x_a: torch.Tensor, y_a: torch.Tensor, x_b: torch.Tensor, lam: float) -> torch.Tensor:
    """Fit ``y = W x + b`` on the A rows by ridge regression (dual form) and apply it to ``x_b``."""
    ones = torch.ones(len(x_a), 1)
    xa1, xb1 = torch.cat([x_a, ones], 1), torch.cat([x_b, ones[: len(x_b)]], 1)
    alpha = torch.linalg.solve(xa1 @ xa1.T + lam * torch.eye(len(x_a)), y_a)
    return xb1 @ xa1.T @ alpha


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a ShapesX oracle checkpoint (mask_head: class)")
    p.add_argument("--split", default="val", choices=("val", "test"))
    p.add_argument("--ridge", type=float, default=1e-3, help="ridge strength (relative to trace)")
    args = p.parse_args()

    ckpt = load_checkpoint(args.checkpoint)
    cfg = config_from_dict(ckpt["config"], where=f"{args.checkpoint} (config)")
    if cfg.model.mask_head != "class":
        raise SystemExit(f"{args.checkpoint}: mask_head={cfg.model.mask_head!r}; expected 'class'")
    model = model_from_checkpoint(ckpt)
    dataset = build_dataset(cfg.data, args.split, seed=cfg.train.seed)
    names, b_names = class_names(), default_split()["B"]
    label = {n: i + 1 for i, n in enumerate(names)}
    a = [label[n] for n in names if n not in b_names]
    b = [label[n] for n in b_names]

    def family(n: str) -> str:
        return n.rsplit("-", 1)[0]

    def member(n: str) -> int:
        return int(n.rsplit("-", 1)[1])

    adjacent = [[label[f"{family(n)}-{member(n) + d}"] for d in (-1, 1)] for n in b_names]
    same_family = [[label[m] for m in names if m not in b_names and family(m) == family(n)]
                   for n in b_names]  # fmt: skip

    pred, box = model.roi_heads.mask_predictor, model.roi_heads.box_predictor
    y = torch.cat([pred.weight.detach(), pred.bias.detach()[:, None]], 1).clone()
    cls = box.cls_score.weight.detach().clone()
    reg = box.bbox_pred.weight.detach().reshape(cls.shape[0], -1).clone()
    w_det = {"cls": cls, "box": reg, "cls+box": torch.cat([cls, reg], 1)}

    print(f"{args.checkpoint}, {args.split} split")
    print("\n| w_det | distance of B's w_det from its adjacent A members' mean (relative) |")
    print("|---|---:|")
    for name, x in w_det.items():
        xc = x - x[a].mean(0)
        mid = torch.stack([xc[i].mean(0) for i in adjacent])
        rel = ((xc[b] - mid).norm(dim=1) / xc[b].norm(dim=1)).mean()
        print(f"| {name} | {rel:.2f} |")

    guesses: dict[str, torch.Tensor | None] = {
        "own (oracle)": None,
        "mean of adjacent A members": torch.stack([y[i].mean(0) for i in adjacent]),
        "mean of the family's A members": torch.stack([y[i].mean(0) for i in same_family]),
        "mean of all A classes": y[a].mean(0).expand(len(b), -1),
    }
    for name, x in w_det.items():
        lam = args.ridge * float((x[a] ** 2).sum())
        guesses[f"ridge map from w_det ({name})"] = ridge_map(x[a], y[a], x[b], lam)
    xc = torch.nn.functional.normalize(cls - cls[a].mean(0), dim=1)
    top2 = (xc[b] @ xc[a].T).topk(2, dim=1).indices
    guesses["top-2 w_det neighbours (cls)"] = torch.stack([y[a][i].mean(0) for i in top2])

    print("\n| w_seg of the B classes | B mIoU given GT box | A mIoU |")
    print("|---|---:|---:|")
    for name, guess in guesses.items():
        with torch.no_grad():
            pred.weight.copy_(y[:, :-1])
            pred.bias.copy_(y[:, -1])
            if guess is not None:
                pred.weight[b] = guess[:, :-1]
                pred.bias[b] = guess[:, -1]
        res = evaluate(model, dataset, progress=False, mask_iou=True)
        print(f"| {name} | {res['B']['mask_iou']['mIoU']:.1f} | {res['A']['mask_iou']['mIoU']:.1f} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
