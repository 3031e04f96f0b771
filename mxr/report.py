"""Reading and printing what runs produce: ``metrics.jsonl``, the getters of an evaluation dict,
the cells and tables that the command line, the widgets and the ablation share, and the CPU count.
It imports nothing from mxr, so every layer can use it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mxr.errors import MissingFileError, UserInputError

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCOeval's, per set and task
TASKS = ("segm", "bbox")  # the COCOeval tasks, as mxr.evaluation.coco_evaluate keys them
SETS = ("A", "B", "all")  # the class sets: A (masks in training), B (boxes only), and both
MISSING = "—"  # a value not measured (no ground truth, not evaluated yet)


# --- JSON files ----------------------------------------------------------------------------------
def read_json_file(path: str | Path, expected: str, what: str = "file") -> dict[str, Any]:
    """The JSON object in ``path``. Bad input is one line naming the file: FileNotFoundError
    (``"<path>: <what> not found"``) or ValueError (malformed JSON, or not an object), saying what
    was ``expected``."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: {what} not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserInputError(f"{path}: malformed JSON ({e}); expected {expected}") from e
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: top level is {type(data).__name__}; expected {expected}")
    return data


def read_json_or_none(path: str | Path) -> Any:
    """The JSON in ``path``, or ``None`` when the file is absent or cut short: for the files a run
    or a generator writes last, whose absence means "not finished, do it again"."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it (``os.replace``) when the block ends
    without error: a stop mid-write leaves the old file, or none, never one cut short."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """``Path(path).write_text(text)``, through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


# --- metrics.jsonl --------------------------------------------------------------------------------
def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (a run folder or the file), in file order. A last line cut
    short by a kill (the engine's resume drops it too) is skipped with one warning naming the file
    and line; a bad line before the last is an error naming them."""
    import warnings

    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise MissingFileError(f"metrics file not found: {path}")
    lines = path.read_text().splitlines()
    rows = []
    for n, line in enumerate(lines, start=1):
        try:
            row = json.loads(line) if line.strip() else None
        except json.JSONDecodeError as err:
            if n == len(lines):
                warnings.warn(
                    f"{path}: line {n} is cut short (a killed run); skipped", stacklevel=2
                )
                break
            raise UserInputError(f"{path}: line {n} is not valid JSON ({err})") from err
        if isinstance(row, dict):
            rows.append(row)
    return rows


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


# --- the machine ----------------------------------------------------------------------------------
def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
