"""ipywidgets front-ends over pure functions (here or in :mod:`mxr.course.viz`, each tested) that
return data, an image or a Figure. An error inside an ipywidgets callback shows only in the widget's
output area (nbval cannot see it), so the callbacks stay a few lines long."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor

# Re-exported here, where notebooks and older code import them from: the panel's choices
# (mxr.course), figures and image encoding (viz), per-instance mask IoU (evaluation), tables.
from mxr.course import (  # noqa: F401
    MASK_HEAD_CHOICES,
    PROTOCOLS,
    STRUCTURES,
    VARIANT_CHOICES,
    config_from_choices,
    default_choices,
    describe_choices,
    run_name,
    run_origin,
)
from mxr.course import checked_choices as _checked_choices
from mxr.course.viz import (  # noqa: F401
    SET_COLOURS,
    SET_LABELS,
    SET_RGB,
    TensorDict,
    _finish,
    _show_image,
    crop_box,
    draw_instances,
    figure_png,
    image_bytes,
    loss_figure,
    set_bars,
    set_legend,
    set_of,
    to_uint8_image,
)
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


def jpeg(fig: Figure, dpi: int = 80, quality: int = 70) -> Any:
    """A Figure as a JPEG ``IPython.display.Image`` (pictures of noisy images: smaller than PNG)."""
    from IPython.display import Image
    from PIL import Image as PILImage

    png = PILImage.open(io.BytesIO(figure_png(fig, dpi=dpi)))
    return Image(data=image_bytes(png, "jpeg", quality=quality), format="jpeg")


# ----------------------------------------------------------------------------- dataset browser
def _item(ds: Any, index: int, class_names: Sequence[str] | None) -> tuple[Tensor, dict, list]:
    """Dataset item ``index`` (checked) and the class names to label it with."""
    if not 0 <= int(index) < len(ds):
        raise IndexError(f"index={index} is out of range; the dataset has {len(ds)} images")
    image, target = ds[index]
    return image, target, list(class_names) if class_names is not None else list(ds.class_names)


def sample_summary(ds: Any, index: int, class_names: Sequence[str] | None = None) -> str:
    """One line about dataset item ``index``: image id, and each instance as ``name [A|B]``
    (``+mask`` where the dataset gives its mask)."""
    _, target, names = _item(ds, index, class_names)
    a_labels = getattr(ds, "a_labels", None)
    masked = set(mask_instances(target)) if "masks" in target else set()
    sets = [set_of(x, a_labels) for x in target["labels"].tolist()]
    parts = [
        f"{names[x] if 0 <= x < len(names) else x} [{s}]" + ("+mask" if i in masked else "")
        for i, (x, s) in enumerate(zip(target["labels"].tolist(), sets, strict=True))
    ]
    n_a = sets.count("A")
    head = (
        f"image {index + 1}/{len(ds)} (id {int(target['image_id'])}): "
        f"{len(parts)} instances, {n_a} A, {len(parts) - n_a} B"
    )
    return head + (" - " + ", ".join(parts) if parts else "")


def render_sample(ds: Any, index: int, class_names: Sequence[str] | None = None) -> Tensor:
    """Dataset item ``index`` drawn with boxes, masks and A/B labels: uint8 ``(3, H, W)``."""
    image, target, names = _item(ds, index, class_names)
    return draw_instances(image, target, names, getattr(ds, "a_labels", None))


def dataset_browser(ds: Any, class_names: Sequence[str] | None = None, scale: int = 3) -> Any:
    """A slider over the dataset's images (shown ``scale`` times enlarged) with boxes, masks and
    A/B colours: an ``ipywidgets.VBox`` with ``.slider``, ``.image`` and ``.caption``."""
    import ipywidgets as w

    if len(ds) == 0:
        raise ValueError("dataset_browser: the dataset has no images")
    slider = w.IntSlider(
        value=0, min=0, max=len(ds) - 1, description="image", continuous_update=False
    )
    image, caption = w.Image(format="png"), w.HTML()

    def update(change: Any = None) -> None:
        index = int(slider.value)
        image.value = image_bytes(render_sample(ds, index, class_names), scale=scale)
        caption.value = f"<code>{sample_summary(ds, index, class_names)}</code>"

    slider.observe(update, names="value")
    update()
    legend = " &nbsp; ".join(
        f"<span style='color:{SET_COLOURS[s]}'>&#9632;</span> {SET_LABELS[s]}" for s in "AB"
    )
    box = w.VBox([slider, image, w.HTML(legend), caption])
    box.slider, box.image, box.caption = slider, image, caption
    return box


# ----------------------------------------------------------------------------- training panel
@dataclass
class RunLog:
    """One panel run: its choices, the engine records (``metrics.jsonl`` dicts) seen so far, its
    :func:`mxr.evaluation.evaluate` dict and model when done. ``name`` (e.g. a course variant)
    replaces the choices' description in labels; ``stopped_at``: where a stopped run ended."""

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
        """``"cached"``, ``"adopted"`` or ``"trained"`` (see :func:`mxr.course.run_origin`)."""
        return run_origin({"cached": self.cached, "adopted": self.adopted})

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
        return int(self.choices.get("seed", 0))

    @property
    def config_key(self) -> str:
        """Equal for two runs exactly when their configs differ at most in the seed."""
        return run_name({**self.choices, "seed": 0})

    @classmethod
    def from_variant(cls, variant: str) -> RunLog:
        """The course's cached run of ``variant`` (a key of :data:`mxr.course.VARIANT_CHOICES`)."""
        from mxr.course import course_config, train_or_load

        if variant not in VARIANT_CHOICES:
            raise ValueError(
                f"variant={variant!r} is not valid; expected one of {', '.join(VARIANT_CHOICES)}"
            )
        cfg = course_config(variant)
        t0 = time.perf_counter()
        result = train_or_load(variant, cfg, progress=False)
        choices = {**VARIANT_CHOICES[variant], "iterations": cfg.train.iterations}
        log = cls(choices=_checked_choices({**choices, "seed": cfg.train.seed}), name=variant)
        log.seconds = time.perf_counter() - t0
        log._fill(result)
        return log

    def _fill(self, result: Mapping[str, Any]) -> None:
        """Take a finished ``train_or_load`` result (records from the file if cached or unseen)."""
        self.cached, self.adopted = bool(result["cached"]), bool(result.get("adopted"))
        self.out_dir, self.eval, self.model = (
            str(result["out_dir"]),
            result["eval"],
            result["model"],
        )
        if self.cached or not self.records:
            self.records = [r for r in read_metrics(result["metrics"]) if "iter" in r]

    def add(self, iteration: int, record: Mapping[str, Any]) -> None:
        """The engine callback: keep ``record`` (``iteration`` overrides its ``iter``)."""
        self.records.append({**dict(record), "iter": int(iteration)})

    def mask_ap(self, split: str) -> float | None:
        return mask_ap(self.eval, split)

    def mask_iou(self, split: str) -> float | None:
        return mask_miou(self.eval, split)


SPLIT_TABLE_HEADER = ["set", "mask AP", "mask AP50", "box AP", "mask mIoU (true boxes)"]
COMPARISON_HEADER = ["#", "run", "mask AP A", "mask AP B", "mIoU A", "mIoU B", "seconds"]


def split_table_rows(results: Mapping[str, Any]) -> list[list[str]]:
    """Rows of :data:`SPLIT_TABLE_HEADER` for sets A, B and all of an evaluation."""
    return [
        [s, *map(cell, (r["segm"]["AP"], r["segm"]["AP50"], r["bbox"]["AP"])),
         cell(r.get("mask_iou", {}).get("mIoU"))]
        for s in ("A", "B", "all") if (r := results.get(s)) is not None
    ]  # fmt: skip


def run_groups(runs: Sequence[RunLog]) -> list[list[tuple[int, RunLog]]]:
    """The evaluated runs grouped by config apart from the seed, in order of first appearance:
    ``[(number from 1, run), ...]`` per group; of one config and seed only the last run counts."""
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


def _seconds_cell(logs: Sequence[RunLog]) -> str:
    """Mean wall time of the runs trained here; ``cached`` / ``reused`` when none was."""
    trained = [r.seconds for r in logs if r.origin == "trained" and r.seconds is not None]
    if trained:
        return f"{sum(trained) / len(trained):.0f}"
    if all(r.origin != "trained" for r in logs):
        return "cached" if all(r.cached for r in logs) else "reused"
    return "—"


def comparison_rows(runs: Sequence[RunLog]) -> list[list[str]]:
    """Rows of :data:`COMPARISON_HEADER`, one per config (:func:`run_groups`); several seeds of a
    config give ``mean ± std`` (sample std)."""
    rows = []
    for group in run_groups(runs):
        logs = [r for _, r in group]
        seeds = ", ".join(str(r.seed) for r in logs)
        label = logs[0].group_label + (
            f" · seed {seeds}" if len(logs) == 1 else f" · seeds {seeds} (mean ± std)"
        )
        metrics = []
        for getter in (RunLog.mask_ap, RunLog.mask_iou):
            for split in ("A", "B"):
                mean, std, _ = _spread([getter(r, split) for r in logs])
                metrics.append(cell(mean) if std is None else cell_pm(mean, std))
        rows.append([", ".join(str(i) for i, _ in group), label, *metrics, _seconds_cell(logs)])
    return rows


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "") -> str:
    """A small HTML table (cells escaped) for an ``ipywidgets.HTML``."""

    def cells(tag: str, values: Sequence[str]) -> str:
        return "".join(f"<{tag} style='padding:2px 8px'>{escape(v)}</{tag}>" for v in values)

    body = "".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    cap = f"<caption style='text-align:left'><b>{escape(caption)}</b></caption>" if caption else ""
    head = f"<thead><tr>{cells('th', header)}</tr></thead>"
    return f"<table class='mxr-table'>{cap}{head}<tbody>{body}</tbody></table>"


def comparison_table(runs: Sequence[RunLog]) -> str:
    """The runs so far as a markdown table (see :func:`comparison_rows`)."""
    return markdown_table(COMPARISON_HEADER, comparison_rows(runs))


def comparison_chart(runs: Sequence[RunLog]) -> Figure:
    """Bars per config (:func:`run_groups`), A vs B: mask AP (left) and mask mIoU given true boxes
    (right); several seeds: the mean, ± std error bars and a dot per seed."""
    groups = run_groups(runs)
    fig = Figure(figsize=(8, 3.2))
    panels = (("mask AP", RunLog.mask_ap), ("mask mIoU given true boxes", RunLog.mask_iou))
    ticks = ["#" + ",".join(str(i) for i, _ in g) for g in groups]
    for k, (name, getter) in enumerate(panels):
        ax = fig.add_subplot(1, 2, k + 1)
        stats = {s: [_spread([getter(r, s) for _, r in g]) for g in groups] for s in SET_COLOURS}
        means = {s: [m or 0.0 for m, _, _ in v] for s, v in stats.items()}
        at = set_bars(ax, ticks, means, width=0.76)
        for s, v in stats.items():
            for x, (mean, std, vals) in zip(at[s], v, strict=True):
                if std is not None:
                    ax.errorbar(x, mean, yerr=std, color="black", capsize=3, linewidth=1)
                    ax.scatter([x] * len(vals), vals, s=8, color="black", zorder=3)
        ax.set(xlabel="run (see the table)", ylabel=f"{name} (0-100)", ylim=(0, 100))
        ax.set_title(f"{name}, set A vs set B", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    return _finish(fig)


def comparison_seed_chart(
    per_seed: Mapping[str, Mapping[str, Sequence[float | None]]],
    rows: Sequence[str],
    metrics: Sequence[str] = ("mIoU", "AP75"),
    split: str = "B",
) -> Figure:
    """Per metric (an axis each), each row's value on every seed (a marker per seed) and its mean
    (a line: ``ax.lines[i]`` is row ``i``'s); the y-axis fits the values. ``per_seed``:
    ``{row: {metric: [seed 0, ...]}}`` (``docs/results.json``'s ``per_seed["B"]``)."""
    import statistics

    missing = [r for r in rows if r not in per_seed]
    if missing or not rows:
        raise ValueError(
            f"comparison_seed_chart: rows {missing or list(rows)} not in per_seed; expected some "
            f"of {', '.join(per_seed)}"
        )
    fig = Figure(figsize=(max(7.0, 0.75 * len(rows) * len(metrics) + 1.5), 3.4))
    markers = "os^Dv<>"
    xs = list(range(len(rows)))
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), k + 1)
        values = [[v for v in per_seed[r].get(metric, []) if v is not None] for r in rows]
        for x, v in zip(xs, values, strict=True):
            mean = statistics.fmean(v) if v else float("nan")
            ax.plot([x - 0.3, x + 0.3], [mean, mean], color=SET_COLOURS.get(split, "grey"),
                    linewidth=3, label="mean" if x == 0 else None)  # fmt: skip
        for s in range(max((len(v) for v in values), default=0)):
            pts = [(x, v[s]) for x, v in zip(xs, values, strict=True) if len(v) > s]
            ax.scatter([x + (s - 1) * 0.08 for x, _ in pts], [y for _, y in pts],
                       marker=markers[s % len(markers)], s=18, color="black", zorder=3,
                       label=f"seed {s}")  # fmt: skip
        ax.set_xticks(xs, rows, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(f"{metric} on set {split} (0-100)")
        ax.set_title(f"set {split} {metric}: each seed and the mean", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return _finish(fig)


def train_choices(
    choices: Mapping[str, Any],
    log: RunLog | None = None,
    reuse: bool = True,
    on_record: Callable[[RunLog], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunLog:
    """Train (or reload, when ``reuse`` and a finished run exists) the model ``choices`` describe;
    ``on_record(log)`` after each logged iteration. When ``should_stop()`` is true there, training
    stops (checkpoint saved, not evaluated: ``eval`` ``None``, ``stopped_at`` its iteration)."""
    import shutil

    from mxr.course import runs_dir, train_or_load
    from mxr.engine import StopTraining

    c = _checked_choices(choices)
    log = log if log is not None else RunLog(choices=c)
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
        result = train_or_load(name, config_from_choices(c), progress=False, callback=callback)
    except StopTraining:
        log.out_dir = str(runs_dir() / name)
        log.stopped_at = log.records[-1]["iter"] if log.records else 0
        result = None
    log.seconds = time.perf_counter() - t0
    if result is not None:
        log._fill(result)
    return log


def _error_html(text: str) -> str:
    return f"<span style='color:#c00'>{escape(text)}</span>"


class TrainingPanel:
    """Widgets for a mask head, its options and the seed, Train/Stop buttons, a live loss plot, the
    last run's per-split AP table, a table and chart comparing every run. Train trains in a thread
    (:meth:`start`, :meth:`wait`), Stop ends it at its next logged iteration, :meth:`run` trains in
    this thread; :attr:`runs` holds the finished :class:`RunLog`, :attr:`last` the latest (even
    stopped)."""

    #: The choice widgets, in menu order (each named after its key in :func:`config_from_choices`).
    CHOICES = ("mask_head", "transfer_input", "structure", "stop_grad", "mlp_fusion", "protocol",
               "iterations", "seed")  # fmt: skip

    def __init__(self, runs: Sequence[RunLog] = (), min_plot_interval_s: float = 0.3) -> None:
        self.runs: list[RunLog] = list(runs)
        self.last: RunLog | None = None
        self.min_plot_interval_s = float(min_plot_interval_s)
        self._stop = threading.Event()
        self._busy = False
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        self._last_draw = 0.0
        self._make_widgets()
        self.mask_head.observe(self._sync_enabled, names="value")
        self.protocol.observe(self._sync_enabled, names="value")
        self.train_button.on_click(self._on_click)
        self.stop_button.on_click(lambda button: self.stop())
        self._sync_enabled()
        self._show_comparison()
        self.widget = self._layout()

    def _make_widgets(self) -> None:
        import ipywidgets as w

        from mxr.model.transfer import TRANSFER_INPUTS

        d, style = default_choices(), {"description_width": "110px"}
        inputs = [(f"{k} ({t.description})", k) for k, t in TRANSFER_INPUTS.items()]
        self.mask_head = w.ToggleButtons(options=list(MASK_HEAD_CHOICES), description="mask head")
        self.transfer_input = w.Dropdown(options=inputs, description="transfer input")
        self.structure = w.Dropdown(options=list(STRUCTURES), description="τ structure")
        self.stop_grad = w.Checkbox(description="stop-grad on w_det")
        self.mlp_fusion = w.Checkbox(description="MLP fusion")
        # stage-wise: the mask branch alone on the seed's frozen, cached detector (~2 min for 800
        # iterations on 2 cores; the first run of a seed trains its detector, ~10 min); end to end:
        # the whole model (~5 min)
        self.protocol = w.ToggleButtons(options=list(PROTOCOLS), description="training")
        self.iterations = w.BoundedIntText(min=1, max=100_000, description="iterations")
        self.seed = w.BoundedIntText(min=0, max=1_000_000, description="seed (train.seed)")
        for key in self.CHOICES:
            wid = getattr(self, key)
            wid.value = d[key]
            if not isinstance(wid, w.Checkbox):
                wid.style = style
        self.reuse = w.Checkbox(value=True, description="reuse a finished run")
        self.train_button = w.Button(description="Train", button_style="primary", icon="play")
        self.stop_button = w.Button(
            description="Stop", button_style="warning", icon="stop", disabled=True
        )
        self.status = w.HTML("Choose the settings and press <b>Train</b>.")

        # explicit sizes (the figures' pixel sizes at 80 dpi): an Image sized "auto" can collapse to
        # 0x0 in a flex box when its picture changes
        def image(width: str, **kw: Any) -> Any:
            return w.Image(format="png", layout=w.Layout(width=width, min_width=width, height="auto"), **kw)  # fmt: skip

        self.plot = image("480px", value=figure_png(loss_figure([], "Training loss")))
        self.table, self.comparison = w.HTML(), w.HTML()
        self.chart = image("640px")

    def _layout(self) -> Any:
        import ipywidgets as w

        buttons = w.HBox([self.train_button, self.stop_button])
        options = w.VBox([*(getattr(self, k) for k in self.CHOICES), self.reuse, buttons, self.status])  # fmt: skip
        heading = w.HTML("<b>All runs of this panel</b> (several seeds of one config: mean ± std)")
        return w.VBox(
            [w.HBox([options, self.plot]), self.table, heading, self.comparison, self.chart]
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
        c = {key: getattr(self, key).value for key in self.CHOICES}
        return {**c, "iterations": int(c["iterations"]), "seed": int(c["seed"])}

    def set_choices(self, **choices: Any) -> None:
        """Set widgets from keyword choices (names as in :func:`config_from_choices`)."""
        for key, value in _checked_choices({**self.choices(), **choices}).items():
            getattr(self, key).value = value

    @property
    def training(self) -> bool:
        """Whether a training (in the background or in :meth:`run`) is under way."""
        return self._busy

    def _sync_enabled(self, change: Any = None) -> None:
        for wid in (self.transfer_input, self.structure):
            wid.disabled = self.mask_head.value != "transfer"
        # stop-gradient only matters while the detector learns (end to end)
        self.stop_grad.disabled = (
            self.mask_head.value != "transfer" or self.protocol.value != "end to end"
        )

    def _draw(self, log: RunLog, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last_draw < self.min_plot_interval_s:
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
            train_choices(log.choices, log, reuse=self.reuse.value, on_record=self._draw,
                          should_stop=self._stop.is_set)  # fmt: skip
        except Exception as e:
            self.status.value = _error_html(f"Training failed: {type(e).__name__}: {e}")
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
        caption = f"Validation AP per class set: {log.label}"
        self.table.value = html_table(SPLIT_TABLE_HEADER, split_table_rows(log.eval or {}), caption)
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
        """Set the widgets from ``choices`` and train in a background thread (the Train button)."""
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
        """Wait for the background training and return :attr:`last`; re-raises its error."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"the panel's training is still running after {timeout} s")
        if self._thread_error is not None:
            error, self._thread_error = self._thread_error, None
            raise error
        return self.last

    def add(self, *logs: RunLog) -> None:
        """Add finished runs (e.g. :meth:`RunLog.from_variant`) to the comparison."""
        pending = [log.label for log in logs if log.eval is None]
        if pending:
            raise ValueError(f"add: runs {pending} have no evaluation; expected finished runs")
        self.runs.extend(logs)
        self._show_comparison()

    def _on_click(self, button: Any) -> None:
        try:
            self.start()
        except Exception as e:  # a button callback has nowhere to raise to: show it
            self.status.value = _error_html(str(e))

    def run(self, **choices: Any) -> RunLog:
        """Set the widgets from ``choices`` and train in this thread; errors propagate."""
        return self._train(self._begin(**choices))


def training_panel(runs: Sequence[RunLog] = ()) -> TrainingPanel:
    """The notebook-04 training UI (see :class:`TrainingPanel`); ``runs`` pre-fills the comparison."""
    return TrainingPanel(runs)


# ----------------------------------------------------------------------------- inspecting masks
def failure_cases(ious: Sequence[InstanceIoU], k: int = 6) -> list[InstanceIoU]:
    """The ``k`` instances with the lowest IoU (ties: dataset order)."""
    return sorted(ious, key=lambda r: (r.iou, r.index, r.instance))[:k]


def iou_distribution_figure(
    ious_by_model: Mapping[str, Sequence[InstanceIoU]],
    class_names: Sequence[str],
    a_labels: Sequence[int],
) -> Figure:
    """Per model, a box plot of mask IoU (given true boxes) per class in label order, A warm, B
    cool; grey diamonds mark each class's mean IoU of the "mask = box" guess."""
    from matplotlib.lines import Line2D

    names = list(ious_by_model)
    if not names:
        raise ValueError(
            "iou_distribution_figure: ious_by_model is empty; expected one model or more"
        )
    labels = sorted({r.label for v in ious_by_model.values() for r in v})
    fig = Figure(figsize=(max(7.0, 0.32 * len(labels) + 2), 2.6 * len(names) + 0.6))
    pos = list(range(len(labels)))
    for k, name in enumerate(names):
        ax = fig.add_subplot(len(names), 1, k + 1)
        by = ious_by_label(ious_by_model[name])
        kept = [(p, by[lab]) for p, lab in enumerate(labels) if by.get(lab)]
        if kept:
            parts = ax.boxplot([d for _, d in kept], positions=[p for p, _ in kept], widths=0.6,
                               patch_artist=True, showfliers=True, flierprops={"markersize": 2},
                               medianprops={"color": "black"})  # fmt: skip
            for (p, _), patch in zip(kept, parts["boxes"], strict=True):
                patch.set_facecolor(SET_COLOURS[set_of(labels[p], a_labels)])
        means = [mean_iou(ious_by_model[name], [x], box=True) or 0.0 for x in labels]
        ax.scatter(pos, means, marker="D", s=12, color="grey", zorder=3)
        ticks = [f"{class_names[x]}{'' if set_of(x, a_labels) == 'A' else ' [B]'}" for x in labels]
        ax.set_xticks(pos, ticks, rotation=90, fontsize=7)
        ax.set(ylim=(0, 1), ylabel="mask IoU")
        ax.set_title(f"{name}: mask IoU given the true box, per class", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    box = Line2D([], [], marker="D", color="grey", linestyle="", label="mean IoU of mask = box")
    set_legend(fig, box, fontsize=8)
    return _finish(fig, rect=(0, 0.04, 1, 1))


def _overlay(
    image: Tensor, mask: Tensor, colour: Sequence[int], crop: tuple[int, int, int, int]
) -> Any:
    """``image`` with ``mask`` painted in ``colour``, cut to ``crop``: ``(h, w, 3)`` uint8."""
    from torchvision.utils import draw_segmentation_masks

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
    """The first ``per_class`` instances of each class in ``labels``, in dataset order, class after
    class (models scored on the same dataset give the same instances)."""
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


def _gallery_tile(
    ax: Any, model: Any, ds: Any, r: InstanceIoU | None, col: int, cache: dict, row: int | None
) -> None:
    """Instance ``r``'s mask predicted from its true box on its crop in its set's colour (``cache``:
    masks per image), or blank (``no instance`` in column 0); ``row``: the class named at left."""
    ax.set(xticks=[], yticks=[])
    if row is not None:
        s = set_of(row, getattr(ds, "a_labels", None))
        ax.set_ylabel(f"{ds.class_names[row]}\n[{s}]", fontsize=8)
    if r is None:
        for s in ax.spines.values():
            s.set_visible(False)
        if col == 0:
            ax.text(0.5, 0.5, "no instance", ha="center", va="center", fontsize=8)
        return
    if r.index not in cache:
        cache[r.index] = instance_masks(model, ds, r.index)
    image, target, inst, probs = cache[r.index]
    crop = crop_box(target["boxes"][r.instance], *image.shape[-2:])
    colour = SET_RGB[set_of(r.label, getattr(ds, "a_labels", None))]
    ax.imshow(_overlay(image, probs[inst.index(r.instance)] > 0.5, colour, crop))


def model_gallery(
    models: Mapping[str, torch.nn.Module],
    ds: Any,
    labels: Sequence[int],
    ious_by_model: Mapping[str, Sequence[InstanceIoU]],
    per_class: int = 2,
    title: str = "",
) -> Figure:
    """The same instances (:func:`gallery_instances` of the first model's scores) under several
    models: one row per class, a block of ``per_class`` tiles per model (named above it), each the
    crop around the true box with that model's mask from it and its IoU."""
    labels = _gallery_labels(labels, ds, "model_gallery")
    names = list(models)
    if not names or set(names) != set(ious_by_model):
        raise ValueError(
            f"model_gallery: models {names} and ious_by_model {list(ious_by_model)} must name the "
            "same models (at least one)"
        )
    chosen = gallery_instances(ious_by_model[names[0]], labels, per_class)
    scores = {n: {(r.index, r.instance): r.iou for r in ious_by_model[n]} for n in names}
    missing = [n for n in names if any((r.index, r.instance) not in scores[n] for r in chosen)]
    if missing:
        raise ValueError(
            f"model_gallery: {missing[0]!r} is not scored on the gallery's instances; score every "
            "model with instance_ious on the same dataset"
        )
    gap = 0.25  # a narrow empty column between two models' blocks
    widths = [w for k in range(len(names)) for w in ([gap] if k else []) + [1.0] * per_class]
    fig = Figure(figsize=(1.25 * sum(widths) + 1.0, 1.3 * len(labels) + 0.9))
    grid = fig.add_gridspec(len(labels), len(widths), width_ratios=widths, wspace=0.08)
    caches: dict[str, dict[int, tuple]] = {name: {} for name in names}
    for row, label in enumerate(labels):
        shown = [r for r in chosen if r.label == label]
        for k, name in enumerate(names):
            for col in range(per_class):
                ax = fig.add_subplot(grid[row, k * (per_class + 1) + col])
                r = shown[col] if col < len(shown) else None
                first = k == 0 and col == 0
                _gallery_tile(ax, models[name], ds, r, col, caches[name], label if first else None)
                if r is not None:
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
    """Per failure case (a column): the crop with its true mask (top) and with the predicted mask
    (bottom), titled with the class, its set and the IoU."""
    cases = list(cases)
    if not cases:
        raise ValueError("failure_figure: cases is empty; expected at least one instance")
    a_labels = getattr(ds, "a_labels", None)
    fig = Figure(figsize=(1.7 * len(cases) + 0.8, 4.0))
    for col, r in enumerate(cases):
        image, target, inst, probs = instance_masks(model, ds, r.index)
        crop = crop_box(target["boxes"][r.instance], *image.shape[-2:])
        s = set_of(r.label, a_labels)
        k = inst.index(r.instance)
        for row, (mask, name) in enumerate(
            ((target["masks"][k].bool(), "true mask"), (probs[k] > 0.5, "predicted"))
        ):
            ax = fig.add_subplot(2, len(cases), row * len(cases) + col + 1)
            ax.imshow(_overlay(image, mask, SET_RGB[s], crop))
            ax.set(xticks=[], yticks=[])
            if col == 0:
                ax.set_ylabel(name, fontsize=8)
            if row == 0:
                ax.set_title(f"{ds.class_names[r.label]} [{s}]\nIoU {r.iou:.2f}", fontsize=8)
    title = "Lowest-IoU instances: true mask (top) vs predicted from the true box"
    return _finish(fig, title, fontsize=10)


@torch.no_grad()
def predict(
    model: torch.nn.Module, ds: Any, indices: Sequence[int], device: str | torch.device = "cpu"
) -> list[dict[str, Tensor]]:
    """The model's detections (boxes, labels, scores, masks) for dataset items, on the CPU."""
    model.eval()
    out = []
    for index in indices:
        image, _ = ds[int(index)]
        pred = model([image.to(device)])[0]
        out.append({k: v.detach().cpu() for k, v in pred.items()})
    return out


#: The small course images are drawn at twice their size in the side-by-side and threshold
#: figures, so that the labels' fixed-size font fits beside the objects (the panels are ~3 inches).
_LABEL_UP = 2


def _detections(ds: Any, image: Tensor, shown: Any, score: float) -> Tensor:
    a_labels = getattr(ds, "a_labels", None)
    return draw_instances(image, shown, ds.class_names, a_labels, score, upscale=_LABEL_UP)


def compare_models(
    models: Mapping[str, torch.nn.Module],
    ds: Any,
    indices: Sequence[int],
    score_thresh: float = 0.5,
    predictions: Mapping[str, Sequence[TensorDict]] | None = None,
) -> Figure:
    """The same images (a row per index): the ground truth, then each model's detections with
    score >= ``score_thresh``. ``predictions``: name -> :func:`predict` output, to skip it."""
    indices = list(indices)
    if not indices or not models:
        raise ValueError("compare_models: expected at least one model and one dataset index")
    predictions = predictions or {}
    preds = {n: predictions[n] if n in predictions else predict(m, ds, indices) for n, m in models.items()}  # fmt: skip
    cols = ["ground truth", *models]
    fig = Figure(figsize=(2.8 * len(cols), 2.8 * len(indices) + 0.8))
    for row, index in enumerate(indices):
        image, target = ds[index]
        for col, name in enumerate(cols):
            ax = fig.add_subplot(len(indices), len(cols), row * len(cols) + col + 1)
            shown = target if col == 0 else preds[name][row]
            ax.imshow(_detections(ds, image, shown, score_thresh).permute(1, 2, 0).numpy())
            ax.set(xticks=[], yticks=[])
            if row == 0:
                ax.set_title(name, fontsize=9)
            if col == 0:
                ax.set_ylabel(f"image id {int(target['image_id'])}", fontsize=8)
    fig.suptitle(f"Detections with score >= {score_thresh:.2f}", fontsize=10)
    set_legend(fig)
    return _finish(fig, rect=(0, 0.05, 1, 1))


def detection_counts(
    predictions: Sequence[TensorDict],
    thresholds: Sequence[float],
    a_labels: Sequence[int] | None = None,
) -> dict[str, list[int]]:
    """Detections kept at each score threshold, summed over images: ``{"A": [...], "B": [...]}``."""
    out = {"A": [0] * len(thresholds), "B": [0] * len(thresholds)}
    for p in predictions:
        scores = p["scores"].float()
        is_a = torch.tensor([set_of(x, a_labels) == "A" for x in p["labels"].tolist()], dtype=torch.bool)  # fmt: skip
        for k, t in enumerate(thresholds):
            keep = scores >= t
            out["A"][k] += int((keep & is_a).sum())
            out["B"][k] += int((keep & ~is_a).sum())
    return out


def threshold_figure(
    ds: Any, indices: Sequence[int], predictions: Sequence[TensorDict], score_thresh: float
) -> Figure:
    """Images with the detections at ``score_thresh``, and detections kept against the threshold."""
    indices = list(indices)
    n = len(indices)
    fig = Figure(figsize=(3.0 * n + 4.2, 3.6))
    grid = fig.add_gridspec(1, n + 1, width_ratios=[1.0] * n + [1.3])
    for k, index in enumerate(indices):
        image, target = ds[index]
        kept = int((predictions[k]["scores"] >= score_thresh).sum())
        title = f"image id {int(target['image_id'])}: {kept} kept"
        drawn = _detections(ds, image, predictions[k], score_thresh)
        _show_image(fig.add_subplot(grid[0, k]), drawn, title, interpolation=None)
    ax = fig.add_subplot(grid[0, n])
    ts = [i / 20 for i in range(1, 20)]
    counts = detection_counts(predictions, ts, getattr(ds, "a_labels", None))
    for s in ("A", "B"):
        ax.plot(ts, counts[s], color=SET_COLOURS[s], label=f"set {s} classes")
    ax.axvline(score_thresh, color="black", linestyle="--", linewidth=1, label="threshold")
    ax.set(xlabel="score threshold", ylabel="detections kept")
    ax.set_title("Detections kept vs threshold", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    set_legend(fig)
    return _finish(fig, rect=(0, 0.08, 1, 1))


def score_threshold_viewer(
    model: torch.nn.Module, ds: Any, indices: Sequence[int], score_thresh: float = 0.5
) -> Any:
    """A slider over the score threshold redrawing the detections on ``indices`` (computed once):
    an ``ipywidgets.VBox`` with ``.slider``, ``.image`` and ``.predictions``."""
    import ipywidgets as w

    indices = list(indices)
    if not indices:
        raise ValueError("score_threshold_viewer: indices is empty; expected at least one index")
    predictions = predict(model, ds, indices)
    slider = w.FloatSlider(value=score_thresh, min=0.05, max=0.95, step=0.05, description="score ≥",
                           continuous_update=False, readout_format=".2f")  # fmt: skip
    image = w.Image(format="png")

    def update(change: Any = None) -> None:
        image.value = figure_png(threshold_figure(ds, indices, predictions, float(slider.value)))

    slider.observe(update, names="value")
    update()
    box = w.VBox([slider, image])
    box.slider, box.image, box.predictions = slider, image, predictions
    return box
