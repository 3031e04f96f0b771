"""ipywidgets front-ends over pure functions (in :mod:`mxr.course.figures` and :mod:`mxr.course.analysis`, each tested) that
return data, an image or a Figure. An error inside an ipywidgets callback shows only in the widget's
output area (nbval cannot see it), so the callbacks stay a few lines long."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

import torch

from mxr.course.analysis import dataset_item, run_groups, set_of, spread
from mxr.course.choices import (
    MASK_HEAD_CHOICES,
    PROTOCOLS,
    STRUCTURES,
    checked_choices,
    choices_of,
    config_from_choices,
    default_choices,
    describe_choices,
    run_name,
)
from mxr.course.figures import (
    comparison_chart,
    image_bytes,
    loss_figure,
    render_sample,
    threshold_figure,
)
from mxr.course.runs import CourseRun, course_config, run_dir, train_or_load
from mxr.evaluation import detections, instances_with_mask
from mxr.files import read_metrics
from mxr.report import (
    SET_COLOURS,
    SET_LABELS,
    cell,
    cell_pm,
    eval_metric,
    figure_png,
    markdown_table,
    mask_ap,
    mask_miou,
)


def sample_summary(ds: Any, index: int, class_names: Sequence[str] | None = None) -> str:
    """One line about dataset item ``index``: image id, and each instance as ``name [A|B]``
    (``+mask`` where the dataset gives its mask)."""
    _, target, names = dataset_item(ds, index, class_names)
    a_labels = getattr(ds, "a_labels", None)
    masked = set(instances_with_mask(target)) if "masks" in target else set()
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

    @property
    def origin(self) -> str:
        """``"cached"`` or ``"trained"``, as :attr:`mxr.course.runs.CourseRun.origin`."""
        return "cached" if self.cached else "trained"

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
        """The course's run of ``variant`` (a ShapesX config, e.g. ``"agnostic_mlp"``), trained
        or found in the cache."""
        cfg = course_config(variant)
        t0 = time.perf_counter()
        result = train_or_load(variant, cfg, progress=False)
        choices = {**choices_of(variant), "iterations": cfg.train.iterations}
        log = cls(choices=checked_choices({**choices, "seed": cfg.train.seed}), name=variant)
        log.seconds = time.perf_counter() - t0
        log._fill(result)
        return log

    def _fill(self, result: CourseRun) -> None:
        """Take a finished run (records from its file if cached or unseen)."""
        self.cached, self.out_dir = result.cached, str(result.out_dir)
        self.eval, self.model = result.eval, result.model
        if self.cached or not self.records:
            self.records = [r for r in read_metrics(result.metrics) if "iter" in r]

    def add(self, iteration: int, record: Mapping[str, Any]) -> None:
        """The engine callback: keep ``record`` (``iteration`` overrides its ``iter``)."""
        self.records.append({**dict(record), "iter": int(iteration)})

    def mask_ap(self, split: str) -> float | None:
        return mask_ap(self.eval, split)

    def mask_iou(self, split: str) -> float | None:
        return mask_miou(self.eval, split)


SPLIT_TABLE_HEADER = [
    "set",
    "mask AP",
    "mask AP50",
    "mask AP75",
    "box AP",
    "mask mIoU (true boxes)",
]
#: (metric, class set) of each number column of the comparison: report.eval_metric's names
COMPARISON_METRICS = [("AP", "A"), ("AP", "B"), ("AP75", "B"), ("mIoU", "A"), ("mIoU", "B")]
COMPARISON_HEADER = [
    "#",
    "run",
    *(f"{'mIoU' if m == 'mIoU' else 'mask ' + m} {s}" for m, s in COMPARISON_METRICS),
    "seconds",
]


def split_table_rows(results: Mapping[str, Any]) -> list[list[str]]:
    """Rows of :data:`SPLIT_TABLE_HEADER` for sets A, B and all of an evaluation."""
    return [
        [
            s,
            *map(cell, (r["segm"]["AP"], r["segm"]["AP50"], r["segm"]["AP75"], r["bbox"]["AP"])),
            cell(r.get("mask_iou", {}).get("mIoU")),
        ]
        for s in ("A", "B", "all")
        if (r := results.get(s)) is not None
    ]


def _seconds_cell(logs: Sequence[RunLog]) -> str:
    """Mean wall time of the runs trained here; ``cached`` when none was."""
    trained = [r.seconds for r in logs if r.origin == "trained" and r.seconds is not None]
    if trained:
        return f"{sum(trained) / len(trained):.0f}"
    if all(r.cached for r in logs):
        return "cached"
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
        for metric, split in COMPARISON_METRICS:
            mean, std, _ = spread([eval_metric(r.eval, split, metric) for r in logs])
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
    from mxr.engine.loop import StopTraining

    c = checked_choices(choices)
    log = log if log is not None else RunLog(choices=c)
    name, cfg = run_name(c), config_from_choices(c)

    def callback(iteration: int, record: dict[str, Any]) -> None:
        log.add(iteration, record)
        if on_record is not None:
            on_record(log)
        if should_stop is not None and should_stop():
            raise StopTraining(f"stopped at iteration {iteration}")

    t0 = time.perf_counter()
    try:
        result = train_or_load(name, cfg, progress=False, callback=callback, reuse=reuse)
    except StopTraining:
        log.out_dir = str(run_dir(cfg))
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
    CHOICES = (
        "mask_head",
        "transfer_input",
        "structure",
        "stop_grad",
        "mlp_fusion",
        "protocol",
        "iterations",
        "seed",
    )

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
            return w.Image(
                format="png", layout=w.Layout(width=width, min_width=width, height="auto"), **kw
            )

        self.plot = image("480px", value=figure_png(loss_figure([], "Training loss")))
        self.table, self.comparison = w.HTML(), w.HTML()
        self.chart = image("640px")

    def _layout(self) -> Any:
        import ipywidgets as w

        buttons = w.HBox([self.train_button, self.stop_button])
        options = w.VBox(
            [*(getattr(self, k) for k in self.CHOICES), self.reuse, buttons, self.status]
        )
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
        for key, value in checked_choices({**self.choices(), **choices}).items():
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
        log = RunLog(choices=checked_choices(self.choices()))
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


@torch.no_grad()
def score_threshold_viewer(
    model: torch.nn.Module, ds: Any, indices: Sequence[int], score_thresh: float = 0.5
) -> Any:
    """A slider over the score threshold redrawing the detections on ``indices`` (computed once):
    an ``ipywidgets.VBox`` with ``.slider``, ``.image`` and ``.predictions``."""
    import ipywidgets as w

    indices = list(indices)
    if not indices:
        raise ValueError("score_threshold_viewer: indices is empty; expected at least one index")
    predictions = detections(model, ds, indices)
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
