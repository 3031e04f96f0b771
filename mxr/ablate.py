"""Ablations: train every variant of a preset for several seeds at one budget, and tabulate.

``python -m mxr ablate --preset shapesx --seeds 3`` trains each row (``configs/<preset>/<row>.yaml``)
for seeds ``0..seeds-1`` (``train.seed`` and ``model.init_seed``), evaluates on the chosen split and
writes into ``--out``: ``results.json`` (``{"rows": {name: {set: {task: {"AP": mean, "AP_std": std,
...}}}}, "wall_s", "per_seed", "targets", "meta"}``, metrics 0–100, std over seeds), ``results.md``
(the table, mean ± std), ``results.png`` (mask AP on A and B per row) and ``<row>/seed<k>/`` (each
run; a finished run is reused, an interrupted one resumed).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mxr.config import REPO_ROOT, load_config
from mxr.engine.dist import cpu_count, in_processes
from mxr.engine.run_key import run_key
from mxr.errors import MissingFileError, UserInputError
from mxr.files import read_json_file, read_json_or_none, write_text_atomic
from mxr.report import MISSING, cell_pm, markdown_table

E2E_SUFFIX = "_e2e"
"""Row ``<config>_e2e`` trains ``<config>.yaml`` end to end (its own detector, every weight learns)."""


def config_name(row: str) -> str:
    """The config file stem of an ablation row: ``transfer_mlp_e2e`` -> ``transfer_mlp``."""
    return row.removesuffix(E2E_SUFFIX)


@dataclass(frozen=True)
class Preset:
    """An ablation as ``configs/ablations/<name>.yaml`` writes it down: its rows in table order
    (the stage-wise ones train the mask branch alone on the frozen ``detector`` of their seed) and
    the targets its ``results.json`` states."""

    name: str
    detector: str | None
    stagewise: tuple[str, ...]
    end_to_end: tuple[str, ...]
    control: str | None = None
    candidates: tuple[str, ...] = ()
    gap_closed: dict[str, tuple[str, float]] = field(default_factory=dict)
    negative_control: str | None = None

    @property
    def rows(self) -> tuple[str, ...]:
        return (*self.stagewise, *self.end_to_end)

    def protocol(self, row: str) -> str:
        """``"stage-wise"`` (mask branch on the seed's frozen detector) or ``"end to end"``."""
        return "stage-wise" if row in self.stagewise else "end to end"


def preset_names() -> list[str]:
    """The presets, one per ``configs/ablations/<name>.yaml``."""
    return sorted(p.stem for p in (REPO_ROOT / "configs" / "ablations").glob("*.yaml"))


def load_preset(name: str) -> Preset:
    """The preset ``name``, read from ``configs/ablations/<name>.yaml``."""
    path = REPO_ROOT / "configs" / "ablations" / f"{name}.yaml"
    if not path.is_file():
        raise UserInputError(
            f"preset {name!r} is not valid; expected one of {', '.join(preset_names())}"
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        targets = raw.get("targets") or {}
        gaps = targets.get("gap_closed") or {}
        return Preset(
            name=name,
            detector=raw.get("detector"),
            stagewise=tuple(raw.get("stage-wise") or ()),
            end_to_end=tuple(raw.get("end to end") or ()),
            control=targets.get("control"),
            candidates=tuple(targets.get("stagewise") or ()),
            gap_closed={key: (str(row), float(f)) for key, (row, f) in gaps.items()},
            negative_control=targets.get("negative_control"),
        )
    except (yaml.YAMLError, AttributeError, TypeError, ValueError) as e:
        raise UserInputError(
            f"{path}: not a valid ablation preset ({e}); expected the fields detector, "
            "stage-wise, end to end and targets"
        ) from None


def config_dir_for(preset: str, config_dir: str | Path | None = None) -> Path:
    """The folder holding a preset's configs: ``config_dir``, ``./configs/<preset>`` or the repo's."""
    if config_dir is not None:
        d = Path(config_dir)
        if not d.is_dir():
            raise MissingFileError(f"config folder not found: {d}")
        return d
    import mxr

    repo = Path(mxr.__file__).resolve().parents[1]
    candidates = [Path("configs") / preset, repo / "configs" / preset]
    for d in candidates:
        if d.is_dir():
            return d
    raise MissingFileError(
        f"no config folder for preset {preset!r}; looked in {', '.join(map(str, candidates))}"
    )


def preset_configs(
    preset: Preset, rows: Sequence[str] | None = None, config_dir: str | Path | None = None
) -> dict[str, Path]:
    """Row name -> config file of a preset (optionally only ``rows``), checked to exist."""
    names = list(rows or preset.rows)
    unknown = [r for r in names if r not in preset.rows]
    if unknown:
        raise UserInputError(
            f"row(s) {', '.join(unknown)} not in preset {preset.name!r}; valid: "
            f"{', '.join(preset.rows)}"
        )
    d = config_dir_for(preset.name, config_dir)
    out = {name: d / f"{config_name(name)}.yaml" for name in names}
    missing = [str(p) for p in out.values() if not p.is_file()]
    if missing:
        raise MissingFileError(f"config file(s) not found: {', '.join(missing)}")
    return out


# --------------------------------------------------------------------------------------------------
# aggregation
# --------------------------------------------------------------------------------------------------
def aggregate(evals: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over seeds of evaluation dicts: ``{set: {task: {"AP": m, "AP_std": s, ...}}}``.

    ``None`` values (no ground truth) are skipped; a metric that is ``None`` in every seed stays
    ``None``. The std is the sample std (``ddof=1``) for two or more seeds, 0 for one.
    """
    out: dict[str, Any] = {}
    if not evals:
        return out
    for s in evals[0]:
        out[s] = {}
        for task in evals[0][s]:
            out[s][task] = {}
            for metric in evals[0][s][task]:
                vals = [e[s][task][metric] for e in evals if e[s][task][metric] is not None]
                if not vals:
                    mean = std = None
                else:
                    mean = round(float(np.mean(vals)), 3)
                    std = round(float(np.std(vals, ddof=1)), 3) if len(vals) > 1 else 0.0
                out[s][task][metric] = mean
                out[s][task][f"{metric}_std"] = std
    return out


def _pm(d: dict[str, Any], s: str, task: str, metric: str) -> str:
    try:
        return cell_pm(d[s][task][metric], d[s][task][f"{metric}_std"])
    except KeyError:
        return MISSING


def results_table(
    rows: dict[str, Any],
    wall_s: dict[str, float] | None = None,
    protocols: dict[str, str] | None = None,
) -> str:
    """The ablation table: box AP and mask AP / AP50 / AP75 on A and B, mask IoU on B given true
    boxes, and wall time, each ``mean ± std`` over seeds; with ``protocols`` (row -> "stage-wise" /
    "end to end") a protocol column after the row name."""
    cols = [
        ("box AP A", "A", "bbox", "AP"),
        ("box AP B", "B", "bbox", "AP"),
        ("mask AP A", "A", "segm", "AP"),
        ("mask AP50 A", "A", "segm", "AP50"),
        ("mask AP75 A", "A", "segm", "AP75"),
        ("mask AP B", "B", "segm", "AP"),
        ("mask AP50 B", "B", "segm", "AP50"),
        ("mask AP75 B", "B", "segm", "AP75"),
        ("mIoU B (gt boxes)", "B", "mask_iou", "mIoU"),
    ]
    header = ["variant", *(["protocol"] if protocols else []), *(c[0] for c in cols)]
    header += ["wall (s)"] if wall_s else []
    table = []
    for name, agg in rows.items():
        cells = [name, *([protocols.get(name, "")] if protocols else [])]
        cells += [_pm(agg, s, t, m) for _, s, t, m in cols]
        if wall_s:
            cells.append(f"{wall_s.get(name, float('nan')):.0f}")
        table.append(cells)
    return markdown_table(header, table, right_from=2 if protocols else 1)


def bar_chart(rows: dict[str, Any], path: str | Path, *, metric: str = "AP") -> Path:
    """Save a PNG bar chart of mask ``metric`` on A and on B per variant (mean ± std error bars)."""
    from matplotlib.figure import Figure

    from mxr.report import SET_COLOURS, figure_png, set_bars

    names = list(rows)
    fig = Figure(figsize=(max(6.0, 0.8 * len(names) + 2), 4.0), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    segm = {s: [rows[n].get(s, {}).get("segm", {}) for n in names] for s in SET_COLOURS}
    means = {s: [v.get(metric) or 0.0 for v in vals] for s, vals in segm.items()}
    stds = {s: [v.get(f"{metric}_std") or 0.0 for v in vals] for s, vals in segm.items()}
    labels = {"B": "set B (no masks in training)"}
    set_bars(ax, names, means, stds, width=0.76, labels=labels, rotation=35, ha="right")
    ax.set_ylabel(f"mask {metric} (0–100)")
    ax.set_title(f"Mask {metric} per variant, mean ± std over seeds")
    ax.legend(frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.write_bytes(figure_png(fig, dpi=100))
    return path


# --------------------------------------------------------------------------------------------------
# the headline: does transfer close the gap on B, and beat its control?
# --------------------------------------------------------------------------------------------------
HEADLINE_METRICS: dict[str, tuple[str, str]] = {
    "AP75": ("segm", "AP75"),  # the headline metric, fixed before any result
    "AP": ("segm", "AP"),
    "AP50": ("segm", "AP50"),
    "mIoU": ("mask_iou", "mIoU"),  # mean mask IoU given the true boxes: the mask head alone
}


def per_seed_values(runs: dict[str, list[dict[str, Any]]], s: str = "B") -> dict[str, Any]:
    """``{row: {metric: [value of seed 0, seed 1, ...]}}`` for :data:`HEADLINE_METRICS` on set ``s``."""
    out: dict[str, Any] = {}
    for row, evals in runs.items():
        out[row] = {
            name: [e.get(s, {}).get(task, {}).get(metric) for e in evals]
            for name, (task, metric) in HEADLINE_METRICS.items()
        }
    return out


def paired_difference(
    per_seed: dict[str, Any], row: str, base: str, metric: str = "mIoU"
) -> dict[str, Any] | None:
    """``row`` − ``base`` on one metric, seeds paired by index (a results.json ``per_seed["B"]``
    mapping): ``{"per_seed", "mean", "std"}`` (``std`` is the sample std over seeds, ``None`` for one
    seed), or ``None`` when either row has no values for ``metric``."""
    a, b = (per_seed.get(r, {}).get(metric) for r in (row, base))
    if not a or not b or any(x is None for x in (*a, *b)):
        return None
    n = min(len(a), len(b))
    diffs = np.asarray(a[:n], dtype=float) - np.asarray(b[:n], dtype=float)
    return {
        "per_seed": [round(float(d), 3) for d in diffs],
        "mean": round(float(diffs.mean()), 3),
        "std": round(float(diffs.std(ddof=1)), 3) if n > 1 else None,
    }


def headline(
    per_seed: dict[str, Any], metric: str, transfer: str, closed_target: float
) -> dict[str, Any] | None:
    """The targets on set B for ``metric`` (seeds paired by index), or ``None`` when a row of
    agnostic, agnostic_mlp, ``transfer`` and oracle has no values: ``gap_closed`` = (transfer −
    agnostic) / (oracle − agnostic) >= ``closed_target``; ``gain`` over agnostic+MLP (mean of the
    per-seed differences) > 3 × its sample std; ``wins_every_seed``."""
    rows = ("agnostic", "agnostic_mlp", transfer, "oracle")
    vals = {row: per_seed.get(row, {}).get(metric) for row in rows}
    if any(not v or any(x is None for x in v) for v in vals.values()):
        return None
    n = min(map(len, vals.values()))
    vals = {k: np.asarray(v[:n], dtype=float) for k, v in vals.items()}
    mean = {k: float(v.mean()) for k, v in vals.items()}
    gap = mean["oracle"] - mean["agnostic"]
    closed = (mean[transfer] - mean["agnostic"]) / gap if gap != 0 else None
    diffs = vals[transfer] - vals["agnostic_mlp"]
    gain = float(diffs.mean())
    gain_std = float(diffs.std(ddof=1)) if n > 1 else None
    return {
        "metric": metric,
        "transfer": transfer,
        "seeds": n,
        "mean": {k: round(v, 3) for k, v in mean.items()},
        "oracle_minus_agnostic": round(gap, 3),
        "gap_closed": None if closed is None else round(closed, 3),
        "gap_closed_target": closed_target,
        "gap_closed_target_met": gap > 0 and closed >= closed_target,
        "gain_over_control": round(gain, 3),
        "gain_std": None if gain_std is None else round(gain_std, 3),
        "gain_target_met": gain_std is not None and gain > 3 * gain_std,
        "gain_per_seed": [round(float(d), 3) for d in diffs],
        "wins_every_seed": bool((diffs > 0).all()),
    }


def stagewise_targets(per_seed: dict[str, Any], row: str, control: str) -> dict[str, Any] | None:
    """The stage-wise targets for ``row`` against ``control`` on set B, seeds paired (one shared
    detector per seed): on AP75 a gain on every seed with a mean above twice its sample std; on
    AP a mean gain not below 0; on mIoU (given true boxes) the per-seed gains, and whether ``row``
    is above on every seed (the stretch). ``None`` when a row lacks values."""
    diffs = {m: paired_difference(per_seed, row, control, m) for m in ("AP75", "AP", "mIoU")}
    if any(d is None for d in diffs.values()):
        return None
    ap75, ap, miou = diffs["AP75"], diffs["AP"], diffs["mIoU"]
    return {
        "row": row,
        "control": control,
        "seeds": len(ap75["per_seed"]),
        "gain": diffs,
        "AP75_wins_every_seed": all(d > 0 for d in ap75["per_seed"]),
        "AP75_gain_above_2_std": ap75["std"] is not None and ap75["mean"] > 2 * ap75["std"],
        "AP_not_below": ap["mean"] >= 0,
        "mIoU_wins_every_seed": all(d > 0 for d in miou["per_seed"]),
    }


def stagewise_targets_text(t: dict[str, Any] | None) -> str:
    """One markdown sentence stating a :func:`stagewise_targets`."""
    if t is None:
        return "(the row or its control is missing)"

    def seeds(m: str) -> str:
        g = t["gain"][m]
        std = "n/a" if g["std"] is None else f"{g['std']:.2f}"
        each = ", ".join(f"{d:+.2f}" for d in g["per_seed"])
        return f"{g['mean']:+.2f} ± {std} (per seed {each})"

    def met(ok: bool) -> str:
        return "met" if ok else "not met"

    return (
        f"{t['row']} − {t['control']} on B, {t['seeds']} seeds paired on their shared detector: "
        f"mask AP75 {seeds('AP75')} — above on every seed: {met(t['AP75_wins_every_seed'])}, "
        f"mean > 2 std: {met(t['AP75_gain_above_2_std'])}; mask AP {seeds('AP')} — not below on "
        f"average: {met(t['AP_not_below'])}; mIoU given true boxes {seeds('mIoU')} — above on "
        f"every seed (stretch): {met(t['mIoU_wins_every_seed'])}."
    )


def negative_control(per_seed: dict[str, Any], metric: str, row: str) -> dict[str, Any] | None:
    """Whether τ reading a random vector per class (``row``) does *not* beat the class-agnostic
    head on set B by more than its own std over seeds (the paper's randn row: no transfer without
    an input that orders the classes). ``None`` when ``row`` or ``agnostic`` is missing."""
    v, a = (per_seed.get(r, {}).get(metric) for r in (row, "agnostic"))
    if not v or not a or any(x is None for x in [*v, *a]):
        return None
    n = min(len(v), len(a))
    v, a = np.asarray(v[:n], dtype=float), np.asarray(a[:n], dtype=float)
    std = float(v.std(ddof=1)) if n > 1 else 0.0
    excess = float(v.mean() - a.mean())
    return {
        "metric": metric,
        "row": row,
        "seeds": n,
        "mean": round(float(v.mean()), 3),
        "std": round(std, 3),
        "agnostic": round(float(a.mean()), 3),
        "excess_over_agnostic": round(excess, 3),
        "target_met": excess <= std,
    }


def negative_control_text(c: dict[str, Any] | None) -> str:
    """One markdown sentence stating a :func:`negative_control`."""
    if c is None:
        return "(the rows transfer_randn and agnostic are not both there)"
    return (
        f"B {c['metric']}, mean of {c['seeds']} seeds: {c['row']} {c['mean']:.2f} ± {c['std']:.2f}, "
        f"agnostic {c['agnostic']:.2f}; excess {c['excess_over_agnostic']:+.2f} (target: no more "
        f"than its own std: {'met' if c['target_met'] else 'not met'})."
    )


def headline_text(h: dict[str, Any] | None) -> str:
    """One markdown paragraph stating a :func:`headline` and whether each target is met."""
    if h is None:
        return (
            "(the headline rows agnostic, agnostic_mlp, transfer_mlp and oracle are not all there)"
        )
    m, mean = h["metric"], h["mean"]
    t = h.get("transfer", "transfer_mlp")
    label = {"transfer_mlp": "transfer+MLP", "transfer_embed_mlp": "transfer(embed)+MLP"}.get(t, t)
    no_gap = h["gap_closed"] is None or h["oracle_minus_agnostic"] <= 0
    closed = "n/a (oracle does not beat agnostic)" if no_gap else f"{h['gap_closed']:.2f}"
    std = "n/a (one seed)" if h["gain_std"] is None else f"{h['gain_std']:.2f}"
    return (
        f"B mask {m}, mean of {h['seeds']} seeds: agnostic {mean['agnostic']:.2f}, agnostic+MLP "
        f"{mean['agnostic_mlp']:.2f}, {label} {mean[t]:.2f}, oracle "
        f"{mean['oracle']:.2f}. Gap closed by {label}: {closed} (target >= "
        f"{h.get('gap_closed_target', 0.5)}: "
        f"{'met' if h['gap_closed_target_met'] else 'not met'}). Gain over agnostic+MLP: "
        f"{h['gain_over_control']:+.2f}, std over seeds {std} (target > 3 std: "
        f"{'met' if h['gain_target_met'] else 'not met'})"
        + (
            f"; per seed {', '.join(f'{d:+.2f}' for d in h['gain_per_seed'])} (above the control "
            f"on every seed: {'yes' if h['wins_every_seed'] else 'no'})."
            if "gain_per_seed" in h
            else "."
        )
    )


# --------------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------------
def run_ablation(
    preset: str = "shapesx",
    *,
    seeds: int = 3,
    iterations: int | None = None,
    split: str = "val",
    out_dir: str | Path = "runs/ablate_shapesx",
    rows: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    config_dir: str | Path | None = None,
    progress: bool = True,
    jobs: int = 1,
    merge_from: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train and evaluate each row × seed (``0..seeds-1``), then write ``results.{json,md,png}``
    into ``out_dir``; returns the ``results.json`` content.

    ``iterations`` overrides ``train.iterations`` of every row, ``overrides`` adds
    ``section.key=value`` to every row; ``split``: ``"val"`` (choose) or ``"test"`` (report);
    ``jobs``: runs trained at the same time, each in its own process with ``CPUs // jobs`` threads
    (``progress`` bars only with one job); ``merge_from``: a published ``results.json`` whose rows
    this call does not run are kept (recorded in ``meta["merged"]``).
    """
    if seeds < 1:
        raise UserInputError(f"seeds={seeds} is not valid; expected >= 1")
    if jobs < 1:
        raise UserInputError(f"jobs={jobs} is not valid; expected >= 1")
    if split not in ("val", "test"):
        raise UserInputError(f"split={split!r} is not valid; expected 'val' or 'test'")
    spec = load_preset(preset)
    configs = preset_configs(spec, rows, config_dir)
    published = None if merge_from is None else _read_published(merge_from, split, seeds)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    extra = list(overrides) + ([f"train.iterations={iterations}"] if iterations else [])
    stagewise = {r: p for r, p in configs.items() if spec.protocol(r) == "stage-wise"}
    first = {r: p for r, p in configs.items() if r not in stagewise}  # end to end: no detector
    detector: dict[str, Path] = {}
    if stagewise:  # stage 1: one detector per seed, shared by every stage-wise row of that seed
        det = spec.detector or ""
        detector = {det: config_dir_for(preset, config_dir) / f"{det}.yaml"}
        if not detector[det].is_file():
            raise MissingFileError(f"config file not found: {detector[det]}")

    def stage2(row: str, seed: int) -> list[str]:
        if row not in stagewise:
            return []
        init = out / spec.detector / f"seed{seed}" / "last.pt"
        return [f"train.init_from={init}", "train.trainable=mask"]

    budgets: dict[str, int] = {}
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    # the stage-wise rows are planned once their detectors exist (their key reads its bytes)
    for batch, own in (({**detector, **first}, lambda r, k: []), (stagewise, stage2)):
        todo = _plan(batch, seeds, split, extra, out, log, own, budgets, runs)
        _train_all(todo, out, jobs, progress, runs, log)
    budgets.pop(spec.detector or "", None)
    evals = {name: [runs[name, seed]["eval"] for seed in range(seeds)] for name in configs}
    per_row = {name: aggregate(evals[name]) for name in configs}
    wall = {name: sum(runs[name, seed]["wall_s"] for seed in range(seeds)) for name in configs}
    per_seed = per_seed_values(evals)
    merged: dict[str, Any] | None = None
    if published is not None:
        per_row, wall, per_seed, merged = _merge(spec, per_row, wall, per_seed, published)
        budgets.update({r: merged["iterations"].get(r) for r in merged["rows"]})
    if len(set(budgets.values())) > 1:
        log(f"warning: rows have different train.iterations: {budgets}")
    meta = {
        "preset": preset,
        "seeds": seeds,
        "split": split,
        "iterations": budgets,
        "overrides": extra,
        "protocol": {r: spec.protocol(r) for r in per_row},
    }
    if merged is not None:  # a kept row keeps its protocol (files before stage-wise: end to end)
        kept = (published or {}).get("meta", {}).get("protocol", {})
        meta["protocol"].update({r: kept.get(r, "end to end") for r in merged["rows"]})
    if detector:
        det_evals = [runs[spec.detector, seed]["eval"] for seed in range(seeds)]
        meta["detector"] = {
            "config": str(detector[spec.detector]),
            "iterations": runs[spec.detector, 0]["iterations"],
            "box_AP": {s: [e[s]["bbox"]["AP"] for e in det_evals] for s in ("A", "B")},
        }
    results = _results(spec, per_row, wall, per_seed, meta, merged)
    write_text_atomic(out / "results.json", json.dumps(results, indent=2))
    write_text_atomic(out / "results.md", results_markdown(results))
    bar_chart(per_row, out / "results.png")
    return results


def _plan(
    configs: dict[str, Path],
    seeds: int,
    split: str,
    extra: list[str],
    out: Path,
    log: Callable[[str], None],
    row_overrides: Callable[[str, int], list[str]],
    budgets: dict[str, int],
    runs: dict[tuple[str, int], dict[str, Any]],
) -> list[tuple[str, int, dict[str, Any]]]:
    """Fill in each row's budget and the finished runs to reuse (``(row, seed)`` -> its
    ``result.json``: same split and :func:`~mxr.engine.run_key.run_key`); return the ``(row,
    seed, key)`` runs still to train. ``row_overrides(row, seed)`` adds a run's own overrides."""
    todo: list[tuple[str, int, dict[str, Any]]] = []
    for name, path in configs.items():
        for seed in range(seeds):
            own = [*extra, *row_overrides(name, seed)]
            cfg = load_config(path, [*own, f"train.seed={seed}", f"model.init_seed={seed}"])
            budgets[name] = cfg.train.iterations
            key = {
                "split": split,
                "iterations": cfg.train.iterations,
                "config": str(path),
                "overrides": own,
                "run_key": run_key(cfg),
            }
            done = out / name / f"seed{seed}" / "result.json"
            prev = read_json_or_none(done)  # None: not run, or cut short: run it (it resumes)
            if isinstance(prev, dict) and all(prev.get(k) == key[k] for k in ("split", "run_key")):
                log(f"[{name} seed {seed}] reusing {done}")
                runs[name, seed] = prev
                continue
            todo.append((name, seed, key))
    return todo


def _train_all(
    todo: list[tuple[str, int, dict[str, Any]]],
    out: Path,
    jobs: int,
    progress: bool,
    runs: dict[tuple[str, int], dict[str, Any]],
    log: Callable[[str], None],
) -> None:
    """Train the ``todo`` runs (``jobs`` at a time) into ``runs``."""

    def finished(name: str, seed: int, result: dict[str, Any]) -> None:
        runs[name, seed] = result
        b = result["eval"]["B"]["segm"]["AP"]
        log(f"[{name} seed {seed}] mask AP B = {b} ({result['wall_s']:.0f} s)")

    if jobs == 1:
        for name, seed, key in todo:
            log(f"[{name} seed {seed}] training {key['iterations']} iterations")
            finished(name, seed, _train_one(out / name / f"seed{seed}", key, seed, progress))
    elif todo:
        threads = max(1, cpu_count() // jobs)
        log(f"{len(todo)} runs, {jobs} at a time, {threads} thread(s) each")
        jobs_ = [(name, seed, out / name / f"seed{seed}", key) for name, seed, key in todo]
        for (name, seed, _, _), result in in_processes(_train_job, jobs_, jobs, threads):
            finished(name, seed, result)


def _results(
    spec: Preset,
    per_row: dict[str, Any],
    wall: dict[str, float],
    per_seed: dict[str, Any],
    meta: dict[str, Any],
    merged: dict[str, Any] | None,
) -> dict[str, Any]:
    """The ``results.json`` content: rows, wall times, per-seed B values, targets and meta."""
    machine = f"{platform.machine()} {platform.processor() or ''} ".strip()
    machine += f", {cpu_count()} CPUs, {platform.system()}"
    gaps = {
        key: {m: headline(per_seed, m, row, fraction) for m in ("AP75", "mIoU")}
        for key, (row, fraction) in spec.gap_closed.items()
    }
    control = spec.control
    return {
        "rows": per_row,
        "wall_s": {k: round(v, 1) for k, v in wall.items()},
        "per_seed": {"B": per_seed},
        **gaps,
        "negative_control": {
            m: negative_control(per_seed, m, spec.negative_control) for m in ("mIoU", "AP75")
        }
        if spec.negative_control
        else {},
        "targets_stagewise": {r: stagewise_targets(per_seed, r, control) for r in spec.candidates}
        if control
        else {},
        "paired": {
            r: {m: paired_difference(per_seed, r, control, m) for m in HEADLINE_METRICS}
            for r in per_seed
            if r != control and meta.get("protocol", {}).get(r) == "stage-wise"
        },
        "meta": {
            **meta,
            "machine": machine,
            **({"merged": {k: merged[k] for k in ("from", "rows")}} if merged else {}),
        },
    }


def _read_published(path: str | Path, split: str, seeds: int) -> dict[str, Any]:
    """A published ``results.json`` to merge, checked to hold the same split and seeds."""
    old = read_json_file(path, "a results.json written by mxr ablate", "--merge-from results file")
    meta = old.get("meta") if isinstance(old.get("meta"), dict) else {}
    if meta.get("split") != split or meta.get("seeds") != seeds:
        raise UserInputError(
            f"{path}: holds split={meta.get('split')!r}, seeds={meta.get('seeds')!r}; expected "
            f"split={split!r}, seeds={seeds} to merge with this run"
        )
    return {**old, "_path": str(path)}


def _merge(
    spec: Preset,
    per_row: dict[str, Any],
    wall: dict[str, float],
    per_seed: dict[str, Any],
    old: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, float], dict[str, Any], dict[str, Any]]:
    """The rows of a published ``results.json`` that this run did not train, merged in preset order."""
    meta, path = old.get("meta", {}), old["_path"]
    rows = [r for r in old.get("rows", {}) if r not in per_row]
    order = [r for r in spec.rows if r in per_row or r in rows]
    old_seed = old.get("per_seed", {}).get("B", {})
    out_rows = {r: per_row[r] if r in per_row else old["rows"][r] for r in order}
    out_wall = {r: wall[r] if r in wall else old.get("wall_s", {}).get(r, 0.0) for r in order}
    out_seed = {r: per_seed[r] if r in per_seed else old_seed.get(r, {}) for r in order}
    iterations = meta.get("iterations", {})
    return out_rows, out_wall, out_seed, {"from": str(path), "rows": rows, "iterations": iterations}


def results_markdown(results: dict[str, Any]) -> str:
    """The table (mean ± std over seeds, wall time per row) and the targets, as markdown."""
    meta = results.get("meta", {})
    parts = [results_table(results["rows"], results.get("wall_s"), meta.get("protocol")), ""]
    if det := meta.get("detector"):
        box = "; ".join(
            f"{s} " + " / ".join(f"{v:.1f}" for v in det["box_AP"][s]) for s in det["box_AP"]
        )
        parts += [
            f"Stage-wise rows train the mask branch alone on their seed's frozen detector "
            f"(`{det['config']}`, {det['iterations']} iterations); its box AP per seed: {box}. "
            "Every stage-wise row of a seed shares those boxes, so their mask AP differences are "
            "the mask branch's alone.",
            "",
        ]
    for _, t in (results.get("targets_stagewise") or {}).items():
        parts += ["**Stage-wise targets.** " + stagewise_targets_text(t), ""]
    merged = results.get("meta", {}).get("merged")
    if merged:
        parts += [
            f"Rows {', '.join(merged['rows'])} are kept from the earlier published run "
            f"(`{merged['from']}`: the same configs, trained on an earlier machine and not "
            "retrained here, so compare them with the other rows to within about a point); the "
            "others were trained by this run.",
            "",
        ]
    for m, h in (results.get("targets") or {}).items():
        parts += [f"**Targets on {m} (τ from cls+box).** " + headline_text(h), ""]
    for m, h in (results.get("targets_embed") or {}).items():
        parts += [f"**Targets on {m} (τ from the class embedding).** " + headline_text(h), ""]
    for _, c in (results.get("negative_control") or {}).items():
        parts += ["**Negative control (τ from randn).** " + negative_control_text(c), ""]
    return "\n".join(parts)


def publish(results_dir: str | Path, docs_dir: str | Path = "docs") -> Path:
    """Copy an ablation's ``results.json`` / ``results.png`` into ``docs_dir`` and put its table and
    targets into ``docs_dir/results.md`` between the ``<!-- results:begin/end -->`` markers (the
    prose around them is kept; a new file gets only the generated part). Returns ``results.md``."""
    src, docs = Path(results_dir), Path(docs_dir)
    what = "ablation results file (run `mxr ablate` first)"
    results = read_json_file(src / "results.json", "a results.json written by mxr ablate", what)
    docs.mkdir(parents=True, exist_ok=True)
    write_text_atomic(docs / "results.json", json.dumps(results, indent=2) + "\n")
    bar_chart(results["rows"], docs / "results.png", metric="AP75")
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    block = f"{begin}\n{results_markdown(results)}{end}"
    md = docs / "results.md"
    text = md.read_text() if md.is_file() else f"# Results\n\n{begin}\n{end}\n"
    if begin not in text or end not in text:
        raise UserInputError(f"{md} has no '{begin}' ... '{end}' markers to put the table between")
    head, rest = text.split(begin, 1)
    write_text_atomic(md, head + block + rest.split(end, 1)[1])
    return md


def _train_one(run_dir: Path, key: dict[str, Any], seed: int, progress: bool) -> dict[str, Any]:
    """Train + evaluate one row × seed (resuming a stopped run) and write its ``result.json``."""
    from mxr.engine.loop import train

    cfg = load_config(
        key["config"], [*key["overrides"], f"train.seed={seed}", f"model.init_seed={seed}"]
    )
    t0 = time.perf_counter()
    summary = train(cfg, run_dir, resume=True, progress=progress, eval_split=key["split"])
    result = {**key, "eval": summary.eval, "wall_s": time.perf_counter() - t0}
    write_text_atomic(run_dir / "result.json", json.dumps(result, indent=2))
    return result


def _train_job(job: tuple[str, int, Path, dict[str, Any]]) -> dict[str, Any]:
    """One ``(row, seed, run_dir, key)`` of a parallel ablation, in a worker process."""
    _, seed, run_dir, key = job
    return _train_one(run_dir, key, seed, False)


# --------------------------------------------------------------------------------------------------
# command line: python -m mxr ablate
# --------------------------------------------------------------------------------------------------
def _run_cli(args: argparse.Namespace) -> int:
    out = args.out or f"runs/ablate_{args.preset}"
    res = run_ablation(
        args.preset,
        seeds=args.seeds,
        iterations=args.iterations,
        split=args.split,
        out_dir=out,
        rows=args.rows.split(",") if args.rows else None,
        overrides=[o for group in (args.set or []) for o in group],
        config_dir=args.config_dir,
        progress=not args.no_progress,
        jobs=args.jobs,
        merge_from=args.merge_from,
    )
    print(results_markdown(res))
    if args.publish:
        print(f"published -> {publish(out, args.publish)}")
    return 0


#: ``mxr ablate``'s options: flag -> ``add_argument`` keywords.
_CLI_OPTIONS: dict[str, dict[str, Any]] = {
    "--preset": {"choices": preset_names(), "default": "shapesx"},
    "--seeds": {"type": int, "default": 3, "help": "number of seeds, 0..N-1 (default 3)"},
    "--iterations": {"type": int, "help": "override train.iterations for every row"},
    "--split": {"choices": ("val", "test"), "default": "val", "help": "evaluate on (default val)"},
    "--out": {"help": "output folder (default runs/ablate_<preset>)"},
    "--rows": {"help": "comma-separated subset of rows (default: all)"},
    "--config-dir": {"help": "folder with the preset's YAML files"},
    "--set": {
        "nargs": "+",
        "action": "append",
        "metavar": "KEY=VALUE",
        "help": "override config fields for every row, e.g. data.root=data/shapesx",
    },
    "--jobs": {
        "type": int,
        "default": 1,
        "help": "runs trained side by side, each in its own process (default 1)",
    },
    "--publish": {
        "metavar": "DIR",
        "help": "also copy results.json / the AP75 chart into DIR and "
        "update DIR/results.md's table",
    },
    "--merge-from": {
        "metavar": "RESULTS_JSON",
        "help": "keep the rows of this published results.json that --rows does not train",
    },
    "--no-progress": {"action": "store_true", "help": "hide progress bars"},
}


def add_subparser(sub: Any) -> None:
    """Register ``ablate``: the preset's rows × seeds at one budget -> table, JSON, bar chart."""
    p = sub.add_parser(
        "ablate",
        help="train and evaluate every variant of a preset over seeds; table + JSON + chart",
        description="Run an ablation preset (rows × seeds, one budget) and tabulate mask/box AP.",
    )
    for flag, kw in _CLI_OPTIONS.items():
        p.add_argument(flag, **kw)
    p.set_defaults(func=_run_cli)
