"""How results are shown: the getters of an evaluation dict, the cells and tables the command
line, the widgets and the ablation share, and the one A/B palette (set A warm, set B cool) with the
grouped bars every results chart draws. It imports no other mxr module, so every layer can use it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCOeval's, per set and task
TASKS = ("segm", "bbox")  # the COCOeval tasks, as mxr.evaluation.coco_evaluate keys them
SETS = ("A", "B", "all")  # the class sets: A (masks in training), B (boxes only), and both
MISSING = "—"  # a value not measured (no ground truth, not evaluated yet)


# --- evaluation dicts -----------------------------------------------------------------------------
def eval_metric(results: Mapping[str, Any] | None, split: str, metric: str) -> float | None:
    """A mask metric (0–100) of class set ``split`` of an :func:`mxr.evaluation.evaluate` dict
    (``None`` if absent or not evaluated): ``"mIoU"`` (given true boxes) or a ``segm`` statistic."""
    part = {} if results is None else results.get(split, {})
    return part.get("mask_iou" if metric == "mIoU" else "segm", {}).get(metric)


def mask_ap(results: Mapping[str, Any] | None, split: str) -> float | None:
    """Mask AP (0–100) of a class set; ``None`` before evaluation."""
    return eval_metric(results, split, "AP")


def mask_miou(results: Mapping[str, Any] | None, split: str) -> float | None:
    """Mean mask IoU (0–100) given the true boxes of a class set; ``None`` if not measured."""
    return eval_metric(results, split, "mIoU")


# --- cells and tables -----------------------------------------------------------------------------
def cell(v: float | None) -> str:
    """A metric as a table cell: one decimal, or ``—`` for ``None``."""
    return MISSING if v is None else f"{v:.1f}"


def cell_pm(mean: float | None, std: float | None) -> str:
    """``mean ± std`` with one decimal each, or ``—`` when the mean is ``None``."""
    return MISSING if mean is None else f"{mean:.1f} ± {std:.1f}"


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, right_from: int | None = None
) -> str:
    """A GitHub markdown table; columns from index ``right_from`` on are right-aligned."""
    right = len(header) if right_from is None else right_from
    rule = ["---:" if i >= right else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def format_table(results: Mapping[str, Any], *, markdown: bool = True) -> str:
    """An :func:`mxr.evaluation.evaluate` dict as a table, one row per (set, task), one column per
    metric: GitHub markdown, else aligned text."""
    extra = any("mask_iou" in results[s] for s in results)
    header = ["set", "task", *STAT_NAMES] + (["mIoU (gt boxes)"] if extra else [])
    rows = []
    for s, per_task in results.items():
        for task in (t for t in TASKS if t in per_task):
            kind = "mask" if task == "segm" else "box"
            row = [s, kind, *(cell(per_task[task][c]) for c in STAT_NAMES)]
            if extra:
                row.append(cell(per_task.get("mask_iou", {}).get("mIoU")) if task == "segm" else "")
            rows.append(row)
    if markdown:
        return markdown_table(header, rows)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*r) for r in [header, *rows])


# --- the A/B colours and the results chart ---------------------------------------------------
RGB = tuple[int, int, int]
A_COLOURS: tuple[RGB, ...] = ((255, 140, 0), (255, 60, 60), (255, 210, 0), (230, 90, 160))


#: Set B's instances: blues only (hue 190-235°), as the legend says; no green or violet, which
#: read as a third set beside the warm A palette.
B_COLOURS: tuple[RGB, ...] = ((30, 144, 255), (0, 200, 255), (70, 90, 230), (140, 180, 255))


#: The one colour of each class set (the first of its palette), in every chart, legend and overlay.
SET_RGB: dict[str, RGB] = {"A": A_COLOURS[0], "B": B_COLOURS[0]}


SET_COLOURS: dict[str, str] = {s: "#{:02x}{:02x}{:02x}".format(*c) for s, c in SET_RGB.items()}


SET_LABELS = {"A": "set A (masks in training)", "B": "set B (boxes only in training)"}


# ---------------------------------------------------------------- image encoding, drawing instances
def figure_png(fig: Any, dpi: int = 80) -> bytes:
    """A matplotlib Figure as PNG bytes (for an ``ipywidgets.Image`` or a file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def set_bars(
    ax: Any,
    names: Sequence[str],
    values: Mapping[str, Sequence[float]],
    errors: Mapping[str, Sequence[float]] | None = None,
    *,
    width: float = 0.8,
    labels: Mapping[str, str] | None = None,
    **tick_kw: Any,
) -> dict[str, list[float]]:
    """Grouped bars, a bar per class set (``values``: ``{set: [value per name]}``) in its colour,
    named ``set X`` (or ``labels[X]``); ``errors``: std error bars. Returns the bars' centres."""
    w = width / len(values)
    at = {}
    for k, (s, vals) in enumerate(values.items()):
        at[s] = [i + (k - (len(values) - 1) / 2) * w for i in range(len(names))]
        err = {} if errors is None else {"yerr": errors[s], "capsize": 3}
        label = (labels or {}).get(s, f"set {s}")
        ax.bar(at[s], vals, w, color=SET_COLOURS.get(s, "grey"), label=label, **err)
    ax.set_xticks(range(len(names)), names, **tick_kw)
    return at
