"""The lever table of docs/results.md: for each lever of the mIoU stretch (docs/levers.sh), per
seed, τ(cls) + MLP − agnostic + MLP on B (validation split) beside the same pair without the lever,
on the same seed's detector.

    python docs/levers.py [runs/levers] [runs/results/shapesx_sw]

A lever that changes only τ (zeroinit) is paired with the published control of its seed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mxr.files import read_json_or_none
from mxr.report import eval_metric

LEVERS = {
    "zeroinit": "τ's last layer zero-initialised (`model.transfer_zero_init=true`)",
    "mask1600": "mask branch 1,600 iterations (×2)",
    "det4800": "detector 4,800 iterations (×2)",
    "jit06": "member cue ambiguous per instance (`--cap-jitter 0.6`)",
    "detectron": "Detectron's box-predictor init (`model.box_predictor_init=detectron`)",
}
METRICS = ("mIoU", "AP75", "AP")


def b_scores(path: Path) -> tuple[float, ...] | None:
    """B's mIoU (true boxes), mask AP75 and mask AP in an ``eval.json``, or None if absent."""
    ev = read_json_or_none(path)
    return None if ev is None else tuple(eval_metric(ev, "B", m) for m in METRICS)


def gains(ctrl: tuple[float, ...], tau: tuple[float, ...]) -> str:
    return " / ".join(f"{t - c:+.1f}" for c, t in zip(ctrl, tau, strict=True))


def main(levers: Path, published: Path) -> None:
    print(
        "| lever | seed | τ(cls) + MLP: mIoU / AP75 / AP | gain over agnostic + MLP | without the lever |"
    )
    print("|---|---:|---|---|---|")
    for lever, what in LEVERS.items():
        for seed in range(3):
            base = {
                r: b_scores(published / r / f"seed{seed}" / "eval_val.json")
                for r in ("agnostic_mlp", "transfer_cls_mlp")
            }
            tau = b_scores(levers / lever / "transfer_cls_mlp" / f"seed{seed}" / "eval.json")
            ctrl = b_scores(levers / lever / "agnostic_mlp" / f"seed{seed}" / "eval.json")
            if tau is None or None in base.values():
                continue
            ctrl = ctrl or base["agnostic_mlp"]
            print(
                f"| {what} | {seed} | {' / '.join(f'{v:.1f}' for v in tau)} | {gains(ctrl, tau)} "
                f"| {gains(base['agnostic_mlp'], base['transfer_cls_mlp'])} |"
            )


if __name__ == "__main__":
    args = [Path(a) for a in sys.argv[1:]]
    main(*(args + [Path("runs/levers"), Path("runs/results/shapesx_sw")][len(args) :]))
