"""ipywidgets front-ends over pure functions.

Every widget here is a thin shell: the work (drawing, building a config, tabulating runs) is done by a
plain function in this module or in :mod:`mxr.course.viz` that returns data, an image or a Figure, and that
function has its own tests. An error inside an ipywidgets callback is only shown in the widget's
output area (nbval cannot see it), so the callbacks stay a few lines long.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from matplotlib.figure import Figure

# The panel's choices live in mxr.course (the course layer below the widgets), the per-instance mask
# IoU in mxr.evaluation, tables and cells in mxr.report; re-exported here, where notebooks and older
# code import them from.
from mxr.course import (  # noqa: F401
    MASK_HEAD_CHOICES,
    STRUCTURES,
    VARIANT_CHOICES,
    config_from_choices,
    default_choices,
    describe_choices,
    run_name,
)
from mxr.course import checked_choices as _checked_choices
from mxr.course.viz import SET_COLOURS, draw_instances
from mxr.evaluation import (  # noqa: F401
    InstanceIoU,
    box_masks,
    instance_ious,
    instance_masks,
    ious_by_label,
    mask_instances,
    mask_iou,
    mean_iou,
)
from mxr.report import cell, cell_pm, markdown_table, mask_ap, mask_miou, read_metrics


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """A matplotlib Figure as PNG bytes (for an ``ipywidgets.Image``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def jpeg(fig: Figure, dpi: int = 80, quality: int = 70) -> Any:
    """A Figure as an ``IPython.display.Image`` in JPEG: for pictures of (noisy) photographs, which
    PNG stores poorly; keeps notebooks small. Line plots are better left as PNG."""
    from IPython.display import Image
    from PIL import Image as PILImage

    rgba = PILImage.open(io.BytesIO(figure_png(fig, dpi=dpi))).convert("RGB")
    buf = io.BytesIO()
    rgba.save(buf, format="JPEG", quality=quality)
    return Image(data=buf.getvalue(), format="jpeg")


def image_png(image: torch.Tensor, scale: int = 1) -> bytes:
    """A uint8 ``(3, H, W)`` image as PNG bytes, enlarged ``scale`` times (nearest neighbour)."""
    from PIL import Image

    array = image.detach().cpu().permute(1, 2, 0).numpy()
    pil = Image.fromarray(array)
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- dataset browser


def sample_summary(ds: Any, index: int, class_names: Sequence[str] | None = None) -> str:
    """One line about dataset item ``index``: image id, and each instance as ``name [A|B]``.

    Instances of set A carry ``+mask`` when the dataset gives their mask.
    """
    _check_index(ds, index)
    _, target = ds[index]
    names = list(class_names) if class_names is not None else list(ds.class_names)
    a_set = set(getattr(ds, "a_labels", range(len(names))))
    has_mask = target.get("has_mask")
    parts = []
    for i, label in enumerate(int(x) for x in target["labels"]):
        name = names[label] if 0 <= label < len(names) else str(label)
        part = f"{name} [{'A' if label in a_set else 'B'}]"
        if has_mask is not None and bool(has_mask[i]):
            part += "+mask"
        parts.append(part)
    n_a = sum(1 for x in target["labels"].tolist() if x in a_set)
    head = (
        f"image {index + 1}/{len(ds)} (id {int(target['image_id'])}): "
        f"{len(parts)} instances, {n_a} A, {len(parts) - n_a} B"
    )
    return head + (" - " + ", ".join(parts) if parts else "")


def render_sample(ds: Any, index: int, class_names: Sequence[str] | None = None) -> torch.Tensor:
    """Dataset item ``index`` drawn with boxes, masks and ``name [A|B]`` labels: uint8 ``(3, H, W)``."""
    _check_index(ds, index)
    image, target = ds[index]
    names = list(class_names) if class_names is not None else list(ds.class_names)
    return draw_instances(image, target, names, getattr(ds, "a_labels", None))


def _check_index(ds: Any, index: int) -> None:
    if not 0 <= int(index) < len(ds):
        raise IndexError(f"index={index} is out of range; the dataset has {len(ds)} images")


def dataset_browser(ds: Any, class_names: Sequence[str] | None = None, scale: int = 3) -> Any:
    """A slider over the dataset's images showing boxes, masks and A/B colouring.

    Args:
        ds: a :class:`mxr.data.CocoInstances` (anything with ``__len__``, ``__getitem__``,
            ``class_names`` and ``a_labels``).
        class_names: label names (index = label); default ``ds.class_names``.
        scale: on-screen enlargement of the (small) images.

    Returns:
        An ``ipywidgets.VBox``; its ``.slider``, ``.image`` and ``.caption`` attributes are the parts.
    """
    import ipywidgets as w

    if len(ds) == 0:
        raise ValueError("dataset_browser: the dataset has no images")
    slider = w.IntSlider(
        value=0, min=0, max=len(ds) - 1, description="image", continuous_update=False
    )
    image = w.Image(format="png")
    caption = w.HTML()
    legend = w.HTML(
        f"<span style='color:{SET_COLOURS['A']}'>&#9632;</span> set A (masks in training) &nbsp; "
        f"<span style='color:{SET_COLOURS['B']}'>&#9632;</span> set B (boxes only)"
    )

    def update(change: Any = None) -> None:
        index = int(slider.value)
        image.value = image_png(render_sample(ds, index, class_names), scale=scale)
        caption.value = f"<code>{sample_summary(ds, index, class_names)}</code>"

    slider.observe(update, names="value")
    update()
    box = w.VBox([slider, image, legend, caption])
    box.slider, box.image, box.caption = slider, image, caption
    return box


# ----------------------------------------------------------------------------- training panel


@dataclass
class RunLog:
    """One panel run: its choices, the loss records seen so far, and its evaluation when done.

    ``records`` are the dicts the engine writes to ``metrics.jsonl`` (``iter``, ``loss``,
    ``loss_mask``, ...); ``eval`` is :func:`mxr.evaluation.evaluate`'s dict; ``model`` the trained
    model (eval mode). ``name`` (e.g. a course variant, ``"agnostic_mlp"``) replaces the choices'
    description in labels; ``stopped_at`` is the iteration a stopped run ended at (no ``eval``).
    """

    choices: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    eval: dict[str, Any] | None = None
    seconds: float | None = None
    cached: bool = False
    out_dir: str | None = None
    model: Any = field(default=None, repr=False)
    name: str = ""
    stopped_at: int | None = None
    adopted: bool = False

    @property
    def origin(self) -> str:
        """``"cached"`` (reloaded), ``"adopted"`` (a finished twin run's weights, evaluated here) or
        ``"trained"`` (see :func:`mxr.course.run_origin`)."""
        return "cached" if self.cached else ("adopted" if self.adopted else "trained")

    @property
    def group_label(self) -> str:
        """The config apart from the seed: ``name``, else :func:`describe_choices`."""
        return self.name or describe_choices(self.choices)

    @property
    def label(self) -> str:
        """:attr:`group_label` and the seed, e.g. ``"agnostic +MLP (800 it), seed 0"``."""
        return f"{self.group_label}, seed {self.seed}"

    @property
    def seed(self) -> int:
        """``train.seed`` of the run (choice ``seed``, 0 when absent)."""
        return int(self.choices.get("seed", 0))

    @property
    def config_key(self) -> str:
        """Equal for two runs exactly when their configs differ at most in the seed (the run
        folder name of the choices at seed 0; options that do not apply to a head are ignored)."""
        return run_name({**self.choices, "seed": 0})

    @classmethod
    def from_variant(cls, variant: str) -> RunLog:
        """The course's run of ``variant`` (one of :data:`mxr.course.VARIANT_CHOICES`):
        ``train_or_load(variant, course_config(variant))``, the cache the notebooks share, as a log
        named after the variant (its choices are the panel's for that config)."""
        from mxr.course import course_config, train_or_load

        if variant not in VARIANT_CHOICES:
            raise ValueError(
                f"variant={variant!r} is not valid; expected one of {', '.join(VARIANT_CHOICES)}"
            )
        cfg = course_config(variant)
        t0 = time.perf_counter()
        result = train_or_load(variant, cfg, progress=False)
        choices = {
            **VARIANT_CHOICES[variant],
            "iterations": cfg.train.iterations,
            "seed": cfg.train.seed,
        }
        log = cls(
            choices=_checked_choices(choices),
            eval=result["eval"],
            seconds=time.perf_counter() - t0,
            cached=bool(result["cached"]),
            out_dir=str(result["out_dir"]),
            model=result["model"],
            name=variant,
            adopted=bool(result.get("adopted")),
        )
        log.records = [r for r in read_metrics(result["metrics"]) if "iter" in r]
        return log

    def add(self, iteration: int, record: Mapping[str, Any]) -> None:
        """The engine callback: keep ``record`` (``iteration`` overrides its ``iter``)."""
        self.records.append({**dict(record), "iter": int(iteration)})

    def mask_ap(self, split: str) -> float | None:
        """Mask AP (0–100) on ``"A"``, ``"B"`` or ``"all"``; ``None`` before evaluation."""
        return mask_ap(self.eval, split)

    def mask_iou(self, split: str) -> float | None:
        """Mean mask IoU (0–100) given the true boxes; ``None`` if not measured."""
        return mask_miou(self.eval, split)


def loss_figure(
    records: Sequence[Mapping[str, Any]],
    title: str = "Training loss",
    keys: Sequence[str] = ("loss", "loss_mask", "loss_classifier", "loss_box_reg"),
) -> Figure:
    """Loss against iteration from engine records (empty records: empty axes saying "waiting").

    Returns:
        A Figure with the total loss in bold, the mask loss and the box-head losses, a legend,
        labelled axes and a title.
    """
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    for key in keys:
        pts = [(r["iter"], r[key]) for r in records if isinstance(r.get(key), int | float)]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(
                xs,
                ys,
                marker="." if len(pts) < 30 else None,
                label=key,
                linewidth=2.0 if key == "loss" else 1.0,
            )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (mean over the log interval)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8, loc="upper right")
    else:
        ax.text(
            0.5,
            0.5,
            "waiting for the first logged iteration",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="grey",
        )
    fig.tight_layout()
    return fig


def split_table_rows(results: Mapping[str, Any]) -> list[list[str]]:
    """Rows ``[set, mask AP, mask AP50, box AP, mIoU]`` for sets A, B and all of an evaluation."""
    rows = []
    for split in ("A", "B", "all"):
        if split not in results:
            continue
        r = results[split]
        rows.append(
            [
                split,
                cell(r["segm"]["AP"]),
                cell(r["segm"]["AP50"]),
                cell(r["bbox"]["AP"]),
                cell(r.get("mask_iou", {}).get("mIoU")),
            ]
        )
    return rows


SPLIT_TABLE_HEADER = ["set", "mask AP", "mask AP50", "box AP", "mask mIoU (true boxes)"]
COMPARISON_HEADER = ["#", "run", "mask AP A", "mask AP B", "mIoU A", "mIoU B", "seconds"]


def run_groups(runs: Sequence[RunLog]) -> list[list[tuple[int, RunLog]]]:
    """The evaluated runs grouped by config apart from the seed (:attr:`RunLog.config_key`), groups
    in order of first appearance: ``[(number, run), ...]`` per group, ``number`` counting from 1 in
    ``runs``. Of several runs of one config and seed only the last counts (a retrained run replaces
    the earlier one rather than counting twice)."""
    groups: dict[str, dict[int, tuple[int, RunLog]]] = {}
    for i, run in enumerate(runs, start=1):
        if run.eval is not None:
            groups.setdefault(run.config_key, {})[run.seed] = (i, run)
    return [sorted(g.values(), key=lambda pair: pair[0]) for g in groups.values()]


def _spread(values: Sequence[float | None]) -> tuple[float | None, float | None, list[float]]:
    """``(mean, sample std or None for one value, the values)`` of the values that are not None."""
    import statistics

    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, None, []
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None, vals


def _group_cell(values: Sequence[float | None]) -> str:
    mean, std, _ = _spread(values)
    return cell(mean) if std is None else cell_pm(mean, std)


def comparison_rows(runs: Sequence[RunLog]) -> list[list[str]]:
    """One row per config (:func:`run_groups`): run numbers, label and seeds, mask AP on A and B,
    mIoU on A and B (``mean ± std`` over seeds when several seeds of the config were run; the
    sample std), wall time (mean over the runs trained here; ``cached`` / ``reused`` when none
    was: reloaded, or a finished run's weights evaluated here)."""
    rows = []
    for group in run_groups(runs):
        logs = [r for _, r in group]
        seeds = ", ".join(str(r.seed) for r in logs)
        label = logs[0].group_label + (
            f" · seed {seeds}" if len(logs) == 1 else f" · seeds {seeds} (mean ± std)"
        )
        trained = [r.seconds for r in logs if r.origin == "trained" and r.seconds is not None]
        if trained:
            secs = f"{sum(trained) / len(trained):.0f}"
        elif all(r.origin != "trained" for r in logs):
            secs = "cached" if all(r.cached for r in logs) else "reused"
        else:
            secs = "—"
        rows.append(
            [
                ", ".join(str(i) for i, _ in group),
                label,
                *(
                    _group_cell([getter(r, split) for r in logs])
                    for getter in (RunLog.mask_ap, RunLog.mask_iou)
                    for split in ("A", "B")
                ),
                secs,
            ]
        )
    return rows


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "") -> str:
    """A small HTML table (cells escaped) for an ``ipywidgets.HTML``."""
    from html import escape

    head = "".join(f"<th style='padding:2px 8px'>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td style='padding:2px 8px'>{escape(c)}</td>" for c in r) + "</tr>"
        for r in rows
    )
    cap = f"<caption style='text-align:left'><b>{escape(caption)}</b></caption>" if caption else ""
    return (
        f"<table class='mxr-table'>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def comparison_table(runs: Sequence[RunLog]) -> str:
    """The runs so far as a markdown table (see :func:`comparison_rows`)."""
    return markdown_table(COMPARISON_HEADER, comparison_rows(runs))


def comparison_chart(runs: Sequence[RunLog]) -> Figure:
    """Grouped bars per config (:func:`run_groups`): mask AP (left) and mask mIoU given true boxes
    (right), A vs B. A config run with several seeds gets its mean as the bar, ± its std as an error
    bar, and each seed's value as a dot.

    Returns:
        A Figure with two axes; bars are labelled by run numbers (see the comparison table).
    """
    groups = run_groups(runs)
    fig = Figure(figsize=(8, 3.2))
    panels = (("mask AP", RunLog.mask_ap), ("mask mIoU given true boxes", RunLog.mask_iou))
    width = 0.38
    for k, (name, getter) in enumerate(panels):
        ax = fig.add_subplot(1, 2, k + 1)
        xs = list(range(len(groups)))
        for j, (split, colour) in enumerate(SET_COLOURS.items()):
            stats = [_spread([getter(r, split) for _, r in g]) for g in groups]
            at = [x + (j - 0.5) * width for x in xs]
            ax.bar(at, [m or 0.0 for m, _, _ in stats], width, label=f"set {split}", color=colour)
            for x, (mean, std, vals) in zip(at, stats, strict=True):
                if std is not None:
                    ax.errorbar(x, mean, yerr=std, color="black", capsize=3, linewidth=1)
                    ax.scatter([x] * len(vals), vals, s=8, color="black", zorder=3)
        ax.set_xticks(xs)
        ax.set_xticklabels(["#" + ",".join(str(i) for i, _ in g) for g in groups])
        ax.set_xlabel("run (see the table)")
        ax.set_ylabel(f"{name} (0-100)")
        ax.set_title(f"{name}, set A vs set B", fontsize=10)
        ax.set_ylim(0, 100)
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def comparison_seed_chart(
    per_seed: Mapping[str, Mapping[str, Sequence[float | None]]],
    rows: Sequence[str],
    metrics: Sequence[str] = ("mIoU", "AP75"),
    split: str = "B",
) -> Figure:
    """Per metric, each row's value on every seed (a marker per seed) and its mean (a bar-wide line).

    The y-axis fits the values (not from 0), so differences of a point or two stay visible.

    Args:
        per_seed: ``{row: {metric: [seed 0, seed 1, ...]}}``, e.g. ``docs/results.json``'s
            ``per_seed["B"]`` (:func:`mxr.course.published_results`).
        rows: the rows to show, in order.
        metrics: keys of each row's values (``"mIoU"``: mask mIoU given true boxes, ``"AP75"``...).
        split: the class set the values are of (titles and the colour of the means).

    Returns:
        A Figure with one axis per metric; ``ax.lines[i]`` is row ``i``'s mean.
    """
    import statistics

    missing = [r for r in rows if r not in per_seed]
    if missing or not rows:
        raise ValueError(
            f"comparison_seed_chart: rows {missing or list(rows)} not in per_seed; expected some "
            f"of {', '.join(per_seed)}"
        )
    fig = Figure(figsize=(max(7.0, 0.75 * len(rows) * len(metrics) + 1.5), 3.4))
    markers = "os^Dv<>"
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), k + 1)
        values = [[v for v in per_seed[r].get(metric, []) if v is not None] for r in rows]
        xs = list(range(len(rows)))
        for x, v in zip(xs, values, strict=True):
            mean = statistics.fmean(v) if v else float("nan")
            ax.plot(
                [x - 0.3, x + 0.3],
                [mean, mean],
                color=SET_COLOURS.get(split, "grey"),
                linewidth=3,
                label="mean" if x == 0 else None,
            )
        for s in range(max((len(v) for v in values), default=0)):
            pts = [(x, v[s]) for x, v in zip(xs, values, strict=True) if len(v) > s]
            ax.scatter(
                [x + (s - 1) * 0.08 for x, _ in pts],
                [y for _, y in pts],
                marker=markers[s % len(markers)],
                s=18,
                color="black",
                zorder=3,
                label=f"seed {s}",
            )
        ax.set_xticks(xs)
        ax.set_xticklabels(rows, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(f"{metric} on set {split} (0-100)")
        ax.set_title(f"set {split} {metric}: each seed and the mean", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def train_choices(
    choices: Mapping[str, Any],
    log: RunLog | None = None,
    reuse: bool = True,
    on_record: Callable[[RunLog], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunLog:
    """Train (or reload, when ``reuse`` and a finished run exists) the model ``choices`` describe.

    Args:
        choices: see :func:`config_from_choices`.
        log: a :class:`RunLog` to fill (default: a new one).
        reuse: reuse a finished run with the same settings from :func:`mxr.course.runs_dir`.
        on_record: called with the log after each logged iteration (the live plot's hook).
        should_stop: asked after each logged iteration; when it returns true the training stops
            there (:class:`mxr.engine.StopTraining`: checkpoint saved, no evaluation).

    Returns:
        The log, with ``eval`` filled in; cached runs get their records from ``metrics.jsonl``.
        A stopped run has ``eval`` ``None`` and ``stopped_at`` its last iteration.
    """
    import shutil

    from mxr.course import runs_dir, train_or_load
    from mxr.engine import StopTraining

    c = _checked_choices(choices)
    log = log if log is not None else RunLog(choices=c)
    cfg = config_from_choices(c)
    name = run_name(c)
    if not reuse and (runs_dir() / name).exists():
        shutil.rmtree(runs_dir() / name)

    def callback(iteration: int, record: dict[str, Any]) -> None:
        log.add(iteration, record)
        if on_record is not None:
            on_record(log)
        if should_stop is not None and should_stop():
            raise StopTraining(f"stopped at iteration {iteration}")

    t0 = time.perf_counter()
    try:
        result = train_or_load(name, cfg, progress=False, callback=callback)
    except StopTraining:
        log.seconds = time.perf_counter() - t0
        log.out_dir = str(runs_dir() / name)
        log.stopped_at = log.records[-1]["iter"] if log.records else 0
        return log
    log.seconds = time.perf_counter() - t0
    log.cached = bool(result["cached"])
    log.adopted = bool(result.get("adopted"))
    log.out_dir = str(result["out_dir"])
    log.eval = result["eval"]
    log.model = result["model"]
    if log.cached or not log.records:
        log.records = [r for r in read_metrics(result["metrics"]) if "iter" in r]
    return log


#: What each transfer input reads, as the panel's menu shows it.
TRANSFER_INPUT_LABELS: dict[str, str] = {
    "cls": "cls (classification weights)",
    "box": "box (box-regression weights)",
    "cls+box": "cls+box (both: the paper's)",
    "embed": "embed (class embedding)",
    "randn": "randn (random vector: control)",
    "cls+embed": "cls+embed (both)",
}


class TrainingPanel:
    """Widgets to choose a mask head, its options and the seed, Train and Stop buttons, a live loss
    plot, the per-split AP table of the last run, and a table and chart comparing every run so far
    (several seeds of one config: mean ± std).

    Display it as the last expression of a cell. The Train button trains in a background thread, so
    the kernel stays responsive and the plot updates; Stop ends that training at its next logged
    iteration. :meth:`run` trains in the calling thread (a notebook executed headless gets its
    result in the cell that asks); :meth:`start` and :meth:`wait` are what the button does and how
    to wait for it. :attr:`runs` holds the :class:`RunLog` of each finished run, :attr:`last` the
    latest run, finished or stopped.
    """

    def __init__(self, runs: Sequence[RunLog] = (), min_plot_interval_s: float = 0.3) -> None:
        import ipywidgets as w

        from mxr.config import TRANSFER_INPUTS

        d = default_choices()
        self.runs: list[RunLog] = list(runs)
        self.last: RunLog | None = None
        self.min_plot_interval_s = float(min_plot_interval_s)
        self._stop = threading.Event()
        self._busy = False
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        style = {"description_width": "110px"}
        self.mask_head = w.ToggleButtons(
            options=list(MASK_HEAD_CHOICES),
            value=d["mask_head"],
            description="mask head",
            style=style,
        )
        self.transfer_input = w.Dropdown(
            options=[(TRANSFER_INPUT_LABELS.get(k, k), k) for k in TRANSFER_INPUTS],
            value=d["transfer_input"],
            description="transfer input",
            style=style,
        )
        self.structure = w.Dropdown(
            options=list(STRUCTURES), value=d["structure"], description="τ structure", style=style
        )
        self.stop_grad = w.Checkbox(value=d["stop_grad"], description="stop-grad on w_det")
        self.mlp_fusion = w.Checkbox(value=d["mlp_fusion"], description="MLP fusion")
        self.iterations = w.BoundedIntText(
            value=d["iterations"], min=1, max=100_000, description="iterations", style=style
        )
        self.seed = w.BoundedIntText(
            value=d["seed"], min=0, max=1_000_000, description="seed (train.seed)", style=style
        )
        self.reuse = w.Checkbox(value=True, description="reuse a finished run")
        self.train_button = w.Button(description="Train", button_style="primary", icon="play")
        self.stop_button = w.Button(
            description="Stop", button_style="warning", icon="stop", disabled=True
        )
        self.status = w.HTML("Choose the settings and press <b>Train</b>.")
        # explicit sizes (the figures' pixel sizes at 80 dpi): an Image sized "auto" can collapse to
        # 0x0 in a flex box when its picture changes
        self.plot = w.Image(
            format="png",
            value=figure_png(loss_figure([], "Training loss")),
            layout=w.Layout(width="480px", min_width="480px", height="auto"),
        )
        self.table = w.HTML()
        self.comparison = w.HTML()
        self.chart = w.Image(
            format="png", layout=w.Layout(width="640px", min_width="640px", height="auto")
        )
        self.mask_head.observe(self._sync_enabled, names="value")
        self.train_button.on_click(self._on_click)
        self.stop_button.on_click(lambda button: self.stop())
        self._sync_enabled()
        self._show_comparison()
        options = w.VBox(
            [
                self.mask_head,
                self.transfer_input,
                self.structure,
                self.stop_grad,
                self.mlp_fusion,
                self.iterations,
                self.seed,
                self.reuse,
                w.HBox([self.train_button, self.stop_button]),
                self.status,
            ]
        )
        self.widget = w.VBox(
            [
                w.HBox([options, self.plot]),
                self.table,
                w.HTML("<b>All runs of this panel</b> (several seeds of one config: mean ± std)"),
                self.comparison,
                self.chart,
            ]
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if isinstance(data, dict):
            data["text/plain"] = (
                "mxr training panel (open the notebook in JupyterLab to use the widgets)"
            )
        return bundle

    def choices(self) -> dict[str, Any]:
        """The settings the widgets show now (see :func:`config_from_choices`)."""
        return {
            "mask_head": self.mask_head.value,
            "transfer_input": self.transfer_input.value,
            "structure": self.structure.value,
            "stop_grad": self.stop_grad.value,
            "mlp_fusion": self.mlp_fusion.value,
            "iterations": int(self.iterations.value),
            "seed": int(self.seed.value),
        }

    def set_choices(self, **choices: Any) -> None:
        """Set widgets from keyword choices (names as in :func:`config_from_choices`)."""
        checked = _checked_choices({**self.choices(), **choices})
        for key, value in checked.items():
            getattr(self, key).value = value

    @property
    def training(self) -> bool:
        """Whether a training (in the background or in :meth:`run`) is under way."""
        return self._busy

    def _sync_enabled(self, change: Any = None) -> None:
        transfer = self.mask_head.value == "transfer"
        for wid in (self.transfer_input, self.structure, self.stop_grad):
            wid.disabled = not transfer

    def _draw(self, log: RunLog, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - getattr(self, "_last_draw", 0.0) < self.min_plot_interval_s:
            return
        self._last_draw = now
        done = log.records[-1]["iter"] if log.records else 0
        title = f"{log.label}: iteration {done}/{log.choices['iterations']}"
        self.plot.value = figure_png(loss_figure(log.records, title))

    def _show_comparison(self) -> None:
        rows = comparison_rows(self.runs)
        if rows:
            self.comparison.value = html_table(COMPARISON_HEADER, rows)
            self.chart.value = figure_png(comparison_chart(self.runs))
        else:
            self.comparison.value = "<i>No finished run yet.</i>"

    def _begin(self, **choices: Any) -> RunLog:
        """Claim the panel for one training of the widgets' settings (``choices`` set first)."""
        if self._busy:
            raise RuntimeError(
                "the panel is already training; press Stop or call wait() before training again"
            )
        if choices:
            self.set_choices(**choices)
        log = RunLog(choices=_checked_choices(self.choices()))
        self._busy = True
        self._stop.clear()
        self.train_button.disabled, self.stop_button.disabled = True, False
        self.status.value = (
            f"Training <b>{log.label}</b> … (Stop ends it at the next logged iteration)"
        )
        self.table.value = ""
        self._last_draw = 0.0
        return log

    def _train(self, log: RunLog) -> RunLog:
        try:
            self._draw(log, force=True)
            train_choices(
                log.choices,
                log,
                reuse=self.reuse.value,
                on_record=self._draw,
                should_stop=self._stop.is_set,
            )
        except Exception as e:
            from html import escape

            self.status.value = (
                f"<span style='color:#c00'>Training failed: {escape(type(e).__name__)}: "
                f"{escape(str(e))}</span>"
            )
            raise
        finally:
            self.train_button.disabled, self.stop_button.disabled = False, True
            self._busy = False
        self.last = log
        self._draw(log, force=True)
        if log.stopped_at is not None:
            self.status.value = (
                f"Stopped: <b>{log.label}</b> at iteration {log.stopped_at}/"
                f"{log.choices['iterations']} (checkpoint saved; not evaluated, so not compared)."
            )
            return log
        self.table.value = html_table(
            SPLIT_TABLE_HEADER,
            split_table_rows(log.eval or {}),
            caption=f"Validation AP per class set: {log.label}",
        )
        self.runs.append(log)
        self._show_comparison()
        how = {
            "cached": "reloaded a finished run",
            "adopted": f"reused a finished run of the same config, evaluated in {log.seconds:.0f} s",
            "trained": f"trained in {log.seconds:.0f} s",
        }[log.origin]
        self.status.value = f"Done: <b>{log.label}</b>, {how}."  # last: "Done" means all is shown
        return log

    def _work(self, log: RunLog) -> None:
        try:
            self._train(log)
        except Exception as e:  # shown in the status line; wait() re-raises it
            self._thread_error = e

    def start(self, **choices: Any) -> threading.Thread:
        """Set the widgets from ``choices`` and train in a background thread, as the Train button
        does; returns the thread. :meth:`stop` ends it early, :meth:`wait` waits for it."""
        log = self._begin(**choices)
        self._thread_error = None
        self._thread = threading.Thread(
            target=self._work, args=(log,), name="mxr-panel-training", daemon=True
        )
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        """Ask the training under way to stop at its next logged iteration (the Stop button)."""
        if self._busy:
            self._stop.set()
            self.status.value = "Stopping at the next logged iteration …"

    def wait(self, timeout: float | None = None) -> RunLog | None:
        """Wait for the background training (at most ``timeout`` seconds) and return
        :attr:`last`; re-raises the error a failed background training showed in the status."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"the panel's training is still running after {timeout} s")
        if self._thread_error is not None:
            error, self._thread_error = self._thread_error, None
            raise error
        return self.last

    def add(self, *logs: RunLog) -> None:
        """Add finished runs (e.g. :meth:`RunLog.from_variant` of the course's controls) to the
        comparison, so that runs trained here are compared beside them."""
        pending = [log.label for log in logs if log.eval is None]
        if pending:
            raise ValueError(f"add: runs {pending} have no evaluation; expected finished runs")
        self.runs.extend(logs)
        self._show_comparison()

    def _on_click(self, button: Any) -> None:
        try:
            self.start()
        except Exception as e:  # a button callback has nowhere to raise to: show it
            from html import escape

            self.status.value = f"<span style='color:#c00'>{escape(str(e))}</span>"

    def run(self, **choices: Any) -> RunLog:
        """Set the widgets from ``choices`` and train in this thread, as the Train button does but
        waiting for the result (what a notebook executed headless needs); errors propagate."""
        return self._train(self._begin(**choices))


def training_panel(runs: Sequence[RunLog] = ()) -> TrainingPanel:
    """The notebook-04 training UI (see :class:`TrainingPanel`); ``runs`` pre-fills the comparison."""
    return TrainingPanel(runs)


# ----------------------------------------------------------------------------- inspecting masks


def failure_cases(ious: Sequence[InstanceIoU], k: int = 6) -> list[InstanceIoU]:
    """The ``k`` instances with the lowest IoU (ties: dataset order)."""
    return sorted(ious, key=lambda r: (r.iou, r.index, r.instance))[:k]


def _set_of(label: int, a_labels: Sequence[int] | None) -> str:
    return "A" if a_labels is None or label in set(a_labels) else "B"


def iou_distribution_figure(
    ious_by_model: Mapping[str, Sequence[InstanceIoU]],
    class_names: Sequence[str],
    a_labels: Sequence[int],
) -> Figure:
    """Per model, a box plot of mask IoU (given true boxes) per class; A warm, B cool.

    Grey diamonds mark each class's mean IoU of the "mask = box" guess. Classes are in label order.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    names = list(ious_by_model)
    if not names:
        raise ValueError(
            "iou_distribution_figure: ious_by_model is empty; expected one model or more"
        )
    labels = sorted({r.label for v in ious_by_model.values() for r in v})
    fig = Figure(figsize=(max(7.0, 0.32 * len(labels) + 2), 2.6 * len(names) + 0.6))
    a_set = set(a_labels)
    for k, name in enumerate(names):
        ax = fig.add_subplot(len(names), 1, k + 1)
        by = ious_by_label(ious_by_model[name])
        data = [by.get(lab, []) for lab in labels]
        pos = list(range(len(labels)))
        kept = [(p, d) for p, d in zip(pos, data, strict=True) if d]
        if kept:
            parts = ax.boxplot(
                [d for _, d in kept],
                positions=[p for p, _ in kept],
                widths=0.6,
                patch_artist=True,
                showfliers=True,
                flierprops={"markersize": 2},
                medianprops={"color": "black"},
            )
            for (p, _), patch in zip(kept, parts["boxes"], strict=True):
                patch.set_facecolor(SET_COLOURS["A" if labels[p] in a_set else "B"])
        base = {}
        for r in ious_by_model[name]:
            base.setdefault(r.label, []).append(r.box_iou)
        ax.scatter(
            pos,
            [sum(base.get(x, [0])) / max(1, len(base.get(x, []))) for x in labels],
            marker="D",
            s=12,
            color="grey",
            zorder=3,
        )
        ax.set_xticks(pos)
        ax.set_xticklabels(
            [f"{class_names[x]}{'' if x in a_set else ' [B]'}" for x in labels],
            rotation=90,
            fontsize=7,
        )
        ax.set_ylim(0, 1)
        ax.set_ylabel("mask IoU")
        ax.set_title(f"{name}: mask IoU given the true box, per class", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    fig.legend(
        handles=[
            Patch(color=SET_COLOURS["A"], label="set A (masks in training)"),
            Patch(color=SET_COLOURS["B"], label="set B (boxes only)"),
            Line2D([], [], marker="D", color="grey", linestyle="", label="mean IoU of mask = box"),
        ],
        loc="lower center",
        ncol=3,
        frameon=False,
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def _crop(box: torch.Tensor, h: int, w: int, pad: float = 0.25) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (float(v) for v in box)
    px, py = (x1 - x0) * pad + 2, (y1 - y0) * pad + 2
    return (
        max(0, int(x0 - px)),
        max(0, int(y0 - py)),
        min(w, int(x1 + px + 1)),
        min(h, int(y1 + py + 1)),
    )


def _overlay(
    image: torch.Tensor, mask: torch.Tensor, colour: Sequence[int], crop: tuple[int, int, int, int]
) -> Any:
    from torchvision.utils import draw_segmentation_masks

    from mxr.course.viz import to_uint8_image

    x0, y0, x1, y1 = crop
    canvas = to_uint8_image(image)
    if mask.any():
        canvas = draw_segmentation_masks(
            canvas, mask.bool()[None], alpha=0.55, colors=[tuple(colour)]
        )
    return canvas[:, y0:y1, x0:x1].permute(1, 2, 0).numpy()


def gallery_instances(
    ious: Sequence[InstanceIoU], labels: Sequence[int], per_class: int = 4
) -> list[InstanceIoU]:
    """The instances a gallery shows: the first ``per_class`` of each class in ``labels``, in dataset
    order, class after class. Models scored on the same dataset give the same instances."""
    if per_class < 1:
        raise ValueError(f"gallery_instances: per_class={per_class} is not valid; expected >= 1")
    return [r for label in labels for r in [x for x in ious if x.label == int(label)][:per_class]]


def _gallery_labels(labels: Sequence[int], ds: Any, caller: str) -> list[int]:
    """``labels`` as a list, checked against the dataset's classes."""
    labels = [int(x) for x in labels]
    if not labels:
        raise ValueError(f"{caller}: labels is empty; expected at least one class label")
    bad = [x for x in labels if not 1 <= x < len(ds.class_names)]
    if bad:
        raise ValueError(
            f"{caller}: label {bad[0]} is not valid; expected 1..{len(ds.class_names) - 1}"
        )
    return labels


def _gallery_cell(
    ax: Any,
    model: torch.nn.Module,
    ds: Any,
    r: InstanceIoU | None,
    colour: Any,
    cache: dict,
    key: Any,
) -> None:
    """One gallery cell: instance ``r``'s predicted mask (from its true box) over its crop, or a
    blank cell when ``r`` is ``None``. ``cache[key]`` keeps each image's masks for reuse."""
    ax.set_xticks([])
    ax.set_yticks([])
    if r is None:
        for s in ax.spines.values():
            s.set_visible(False)
        return
    if key not in cache:
        cache[key] = instance_masks(model, ds, r.index)
    image, target, inst, probs = cache[key]
    h, w = image.shape[-2:]
    crop = _crop(target["boxes"][r.instance], h, w)
    ax.imshow(_overlay(image, probs[inst.index(r.instance)] > 0.5, colour, crop))


def class_gallery(
    model: torch.nn.Module,
    ds: Any,
    labels: Sequence[int],
    ious: Sequence[InstanceIoU],
    per_class: int = 4,
    title: str = "",
) -> Figure:
    """One row per class: up to ``per_class`` instances, each cropped around its true box with the
    mask the model predicts from that box painted on (A warm, B cool) and its IoU as the title.

    ``ious`` (from :func:`instance_ious`) chooses the instances: the first ones of each class in
    dataset order (:func:`gallery_instances`). A class with no instance gets a row that says so.
    """
    from mxr.course.viz import A_COLOURS, B_COLOURS

    labels = _gallery_labels(labels, ds, "class_gallery")
    a_labels = getattr(ds, "a_labels", None)
    fig = Figure(figsize=(1.6 * per_class + 1.2, 1.6 * len(labels) + 0.5))
    cache: dict[int, tuple] = {}
    for row, label in enumerate(labels):
        chosen = gallery_instances(ious, [label], per_class)
        in_a = _set_of(label, a_labels) == "A"
        colour = A_COLOURS[0] if in_a else B_COLOURS[0]
        for col in range(per_class):
            ax = fig.add_subplot(len(labels), per_class, row * per_class + col + 1)
            if col == 0:
                ax.set_ylabel(f"{ds.class_names[label]}\n[{'A' if in_a else 'B'}]", fontsize=8)
            r = chosen[col] if col < len(chosen) else None
            _gallery_cell(ax, model, ds, r, colour, cache, None if r is None else r.index)
            if r is None:
                if col == 0:
                    ax.text(0.5, 0.5, "no instance", ha="center", va="center", fontsize=8)
                continue
            ax.set_title(f"IoU {r.iou:.2f}", fontsize=8)
    fig.suptitle(title or "Predicted masks from true boxes, per class", fontsize=10)
    fig.tight_layout()
    return fig


def model_gallery(
    models: Mapping[str, torch.nn.Module],
    ds: Any,
    labels: Sequence[int],
    ious_by_model: Mapping[str, Sequence[InstanceIoU]],
    per_class: int = 2,
    title: str = "",
) -> Figure:
    """The same instances under several models: one row per class, one block of ``per_class``
    tiles per model (named above its block), each tile the crop around the true box with the mask
    that model predicts from it (A warm, B cool) and its IoU.

    The instances are :func:`gallery_instances` of the first model's ``ious_by_model`` entry; every
    model must be scored on the same instances (:func:`instance_ious` on the same dataset).
    """
    from mxr.course.viz import A_COLOURS, B_COLOURS

    labels = _gallery_labels(labels, ds, "model_gallery")
    names = list(models)
    if not names or set(names) != set(ious_by_model):
        raise ValueError(
            f"model_gallery: models {names} and ious_by_model {list(ious_by_model)} must name the "
            "same models (at least one)"
        )
    scores = {n: {(r.index, r.instance): r.iou for r in ious_by_model[n]} for n in names}
    chosen = gallery_instances(ious_by_model[names[0]], labels, per_class)
    missing = [n for n in names if any((r.index, r.instance) not in scores[n] for r in chosen)]
    if missing:
        raise ValueError(
            f"model_gallery: {missing[0]!r} is not scored on the gallery's instances; score every "
            "model with instance_ious on the same dataset"
        )
    a_labels = getattr(ds, "a_labels", None)
    gap = 0.25  # a narrow empty column between two models' blocks
    widths = [w for k in range(len(names)) for w in ([gap] if k else []) + [1.0] * per_class]
    fig = Figure(figsize=(1.25 * sum(widths) + 1.0, 1.3 * len(labels) + 0.9))
    grid = fig.add_gridspec(len(labels), len(widths), width_ratios=widths, wspace=0.08)
    cache: dict[tuple[str, int], tuple] = {}
    for row, label in enumerate(labels):
        shown = [r for r in chosen if r.label == label]
        in_a = _set_of(label, a_labels) == "A"
        colour = A_COLOURS[0] if in_a else B_COLOURS[0]
        for k, name in enumerate(names):
            for col in range(per_class):
                ax = fig.add_subplot(grid[row, k * (per_class + 1) + col])
                if k == 0 and col == 0:
                    ax.set_ylabel(f"{ds.class_names[label]}\n[{'A' if in_a else 'B'}]", fontsize=8)
                r = shown[col] if col < len(shown) else None
                _gallery_cell(
                    ax, models[name], ds, r, colour, cache, (name, None if r is None else r.index)
                )
                if r is None:
                    if col == 0:
                        ax.text(0.5, 0.5, "no instance", ha="center", va="center", fontsize=7)
                    continue
                ax.set_title(f"IoU {scores[name][(r.index, r.instance)]:.2f}", fontsize=7)
    fig.suptitle(title or "Predicted masks from true boxes: the same instances, per model")
    top = 1 - 1.0 / fig.get_figheight()
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.02, top=top)
    for k, name in enumerate(names):  # each model's name above its block of columns
        first = grid[0, k * (per_class + 1)].get_position(fig)
        last = grid[0, k * (per_class + 1) + per_class - 1].get_position(fig)
        fig.text((first.x0 + last.x1) / 2, top + 0.35 / fig.get_figheight(), name, ha="center")
    return fig


def failure_figure(model: torch.nn.Module, ds: Any, cases: Sequence[InstanceIoU]) -> Figure:
    """Per failure case (a column): the crop with its true mask, and with the predicted mask.

    Titles give the class, its set and the IoU; rows are labelled "true mask" / "predicted".
    """
    from mxr.course.viz import A_COLOURS, B_COLOURS

    cases = list(cases)
    if not cases:
        raise ValueError("failure_figure: cases is empty; expected at least one instance")
    a_labels = getattr(ds, "a_labels", None)
    fig = Figure(figsize=(1.7 * len(cases) + 0.8, 4.0))
    for col, r in enumerate(cases):
        image, target, inst, probs = instance_masks(model, ds, r.index)
        h, w = image.shape[-2:]
        crop = _crop(target["boxes"][r.instance], h, w)
        colour = A_COLOURS[0] if _set_of(r.label, a_labels) == "A" else B_COLOURS[0]
        k = inst.index(r.instance)
        for row, (mask, name) in enumerate(
            ((target["masks"][k].bool(), "true mask"), (probs[k] > 0.5, "predicted"))
        ):
            ax = fig.add_subplot(2, len(cases), row * len(cases) + col + 1)
            ax.imshow(_overlay(image, mask, colour, crop))
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(name, fontsize=8)
            if row == 0:
                ax.set_title(
                    f"{ds.class_names[r.label]} [{_set_of(r.label, a_labels)}]\nIoU {r.iou:.2f}",
                    fontsize=8,
                )
    fig.suptitle(
        "Lowest-IoU instances: true mask (top) vs predicted from the true box", fontsize=10
    )
    fig.tight_layout()
    return fig


@torch.no_grad()
def predict(
    model: torch.nn.Module, ds: Any, indices: Sequence[int], device: str | torch.device = "cpu"
) -> list[dict[str, torch.Tensor]]:
    """The model's detections (boxes, labels, scores, masks) for dataset items, on the CPU."""
    model.eval()
    out = []
    for index in indices:
        image, _ = ds[int(index)]
        pred = model([image.to(device)])[0]
        out.append({k: v.detach().cpu() for k, v in pred.items()})
    return out


def compare_models(
    models: Mapping[str, torch.nn.Module],
    ds: Any,
    indices: Sequence[int],
    score_thresh: float = 0.5,
    predictions: Mapping[str, Sequence[Mapping[str, torch.Tensor]]] | None = None,
) -> Figure:
    """The same images side by side: the ground truth, then each model's detections.

    Args:
        models: name -> model (eval mode is set).
        ds: the dataset (with masks of every class for the ground-truth column).
        indices: dataset items, one row each.
        score_thresh: detections below it are not drawn.
        predictions: name -> :func:`predict` output for ``indices``, to skip recomputing.
    """
    from mxr.course.viz import _legend

    indices = list(indices)
    if not indices or not models:
        raise ValueError("compare_models: expected at least one model and one dataset index")
    preds = {
        name: (
            predictions[name] if predictions and name in predictions else predict(m, ds, indices)
        )
        for name, m in models.items()
    }
    cols = ["ground truth", *models]
    a_labels = getattr(ds, "a_labels", None)
    fig = Figure(figsize=(2.8 * len(cols), 2.8 * len(indices) + 0.8))
    for row, index in enumerate(indices):
        image, target = ds[index]
        for col, name in enumerate(cols):
            shown = target if col == 0 else preds[name][row]
            drawn = draw_instances(
                image, shown, ds.class_names, a_labels, score_thresh=score_thresh, upscale=_LABEL_UP
            )
            ax = fig.add_subplot(len(indices), len(cols), row * len(cols) + col + 1)
            ax.imshow(drawn.permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
            if col == 0:
                ax.set_ylabel(f"image id {int(target['image_id'])}", fontsize=8)
    fig.suptitle(f"Detections with score >= {score_thresh:.2f}", fontsize=10)
    _legend(fig)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


#: The small course images are drawn at twice their size in the side-by-side and threshold
#: figures, so that the labels' fixed-size font fits beside the objects (the panels are ~3 inches).
_LABEL_UP = 2


def detection_counts(
    predictions: Sequence[Mapping[str, torch.Tensor]],
    thresholds: Sequence[float],
    a_labels: Sequence[int] | None = None,
) -> dict[str, list[int]]:
    """Detections kept at each score threshold, summed over images: ``{"A": [...], "B": [...]}``."""
    a_set = None if a_labels is None else {int(x) for x in a_labels}
    out = {"A": [0] * len(thresholds), "B": [0] * len(thresholds)}
    for p in predictions:
        scores, labels = p["scores"].float(), p["labels"].long()
        is_a = (
            torch.ones_like(labels, dtype=torch.bool)
            if a_set is None
            else torch.tensor([int(x) in a_set for x in labels], dtype=torch.bool)
        )
        for k, t in enumerate(thresholds):
            keep = scores >= t
            out["A"][k] += int((keep & is_a).sum())
            out["B"][k] += int((keep & ~is_a).sum())
    return out


def threshold_figure(
    ds: Any,
    indices: Sequence[int],
    predictions: Sequence[Mapping[str, torch.Tensor]],
    score_thresh: float,
) -> Figure:
    """Images with the detections at ``score_thresh``, and detections kept against the threshold."""
    from mxr.course.viz import _legend

    indices = list(indices)
    a_labels = getattr(ds, "a_labels", None)
    n = len(indices)
    fig = Figure(figsize=(3.0 * n + 4.2, 3.6))
    grid = fig.add_gridspec(1, n + 1, width_ratios=[1.0] * n + [1.3])
    for k, index in enumerate(indices):
        image, target = ds[index]
        drawn = draw_instances(
            image,
            predictions[k],
            ds.class_names,
            a_labels,
            score_thresh=score_thresh,
            upscale=_LABEL_UP,
        )
        kept = int((predictions[k]["scores"] >= score_thresh).sum())
        ax = fig.add_subplot(grid[0, k])
        ax.imshow(drawn.permute(1, 2, 0).numpy())
        ax.set_title(f"image id {int(target['image_id'])}: {kept} kept", fontsize=9)
        ax.axis("off")
    ax = fig.add_subplot(grid[0, n])
    ts = [i / 20 for i in range(1, 20)]
    counts = detection_counts(predictions, ts, a_labels)
    ax.plot(ts, counts["A"], color=SET_COLOURS["A"], label="set A classes")
    ax.plot(ts, counts["B"], color=SET_COLOURS["B"], label="set B classes")
    ax.axvline(score_thresh, color="black", linestyle="--", linewidth=1, label="threshold")
    ax.set_xlabel("score threshold")
    ax.set_ylabel("detections kept")
    ax.set_title("Detections kept vs threshold", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    _legend(fig)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def score_threshold_viewer(
    model: torch.nn.Module, ds: Any, indices: Sequence[int], score_thresh: float = 0.5
) -> Any:
    """A slider over the score threshold redrawing the detections on ``indices``.

    The detections are computed once; the slider only re-filters them. Returns an
    ``ipywidgets.VBox`` with ``.slider`` and ``.image`` attributes.
    """
    import ipywidgets as w

    indices = list(indices)
    if not indices:
        raise ValueError("score_threshold_viewer: indices is empty; expected at least one index")
    predictions = predict(model, ds, indices)
    slider = w.FloatSlider(
        value=score_thresh,
        min=0.05,
        max=0.95,
        step=0.05,
        description="score ≥",
        continuous_update=False,
        readout_format=".2f",
    )
    image = w.Image(format="png")

    def update(change: Any = None) -> None:
        image.value = figure_png(threshold_figure(ds, indices, predictions, float(slider.value)))

    slider.observe(update, names="value")
    update()
    box = w.VBox([slider, image])
    box.slider, box.image, box.predictions = slider, image, predictions
    return box
