"""ipywidgets front-ends over pure functions.

Every widget here is a thin shell: the work (drawing, building a config, tabulating runs) is done by a
plain function in this module or in :mod:`mxr.viz` that returns data, an image or a Figure, and that
function has its own tests. An error inside an ipywidgets callback is only shown in the widget's
output area (nbval cannot see it), so the callbacks stay a few lines long.
"""

from __future__ import annotations

import io
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
    config_from_choices,
    default_choices,
    describe_choices,
    run_name,
)
from mxr.course import checked_choices as _checked_choices
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
from mxr.report import cell, markdown_table, mask_ap, mask_miou, read_metrics
from mxr.viz import SET_COLOURS, draw_instances


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
    model (eval mode).
    """

    choices: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    eval: dict[str, Any] | None = None
    seconds: float | None = None
    cached: bool = False
    out_dir: str | None = None
    model: Any = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return describe_choices(self.choices)

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


def comparison_rows(runs: Sequence[RunLog]) -> list[list[str]]:
    """One row per evaluated run: number, label, mask AP on A and B, mIoU on A and B, wall time."""
    rows = []
    for i, run in enumerate(runs, start=1):
        if run.eval is None:
            continue
        secs = "cached" if run.cached else ("—" if run.seconds is None else f"{run.seconds:.0f}")
        rows.append(
            [
                str(i),
                run.label,
                cell(run.mask_ap("A")),
                cell(run.mask_ap("B")),
                cell(run.mask_iou("A")),
                cell(run.mask_iou("B")),
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
    """Grouped bars per evaluated run: mask AP (left) and mask mIoU given true boxes (right), A vs B.

    Returns:
        A Figure with two axes; bars are labelled by run number (see the comparison table).
    """
    done = [(i, r) for i, r in enumerate(runs, start=1) if r.eval is not None]
    fig = Figure(figsize=(8, 3.2))
    panels = (("mask AP", RunLog.mask_ap), ("mask mIoU given true boxes", RunLog.mask_iou))
    width = 0.38
    for k, (name, getter) in enumerate(panels):
        ax = fig.add_subplot(1, 2, k + 1)
        xs = list(range(len(done)))
        for j, (split, colour) in enumerate(SET_COLOURS.items()):
            vals = [getter(r, split) or 0.0 for _, r in done]
            ax.bar(
                [x + (j - 0.5) * width for x in xs], vals, width, label=f"set {split}", color=colour
            )
        ax.set_xticks(xs)
        ax.set_xticklabels([f"#{i}" for i, _ in done])
        ax.set_xlabel("run (see the table)")
        ax.set_ylabel(f"{name} (0-100)")
        ax.set_title(f"{name}, set A vs set B", fontsize=10)
        ax.set_ylim(0, 100)
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def train_choices(
    choices: Mapping[str, Any],
    log: RunLog | None = None,
    reuse: bool = True,
    on_record: Callable[[RunLog], None] | None = None,
) -> RunLog:
    """Train (or reload, when ``reuse`` and a finished run exists) the model ``choices`` describe.

    Args:
        choices: see :func:`config_from_choices`.
        log: a :class:`RunLog` to fill (default: a new one).
        reuse: reuse a finished run with the same settings from :func:`mxr.course.runs_dir`.
        on_record: called with the log after each logged iteration (the live plot's hook).

    Returns:
        The log, with ``eval`` filled in; cached runs get their records from ``metrics.jsonl``.
    """
    import shutil

    from mxr.course import runs_dir, train_or_load

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

    t0 = time.perf_counter()
    result = train_or_load(name, cfg, progress=False, callback=callback)
    log.seconds = time.perf_counter() - t0
    log.cached = bool(result["cached"])
    log.out_dir = str(result["out_dir"])
    log.eval = result["eval"]
    log.model = result["model"]
    if log.cached or not log.records:
        log.records = [r for r in read_metrics(result["metrics"]) if "iter" in r]
    return log


class TrainingPanel:
    """Widgets to choose a mask head and its options, a Train button, a live loss plot, the
    per-split AP table of the last run, and a table and chart comparing every run so far.

    Display it as the last expression of a cell. :meth:`run` does what pressing Train does (so a
    notebook can train through the panel when executed headless); :attr:`runs` holds the
    :class:`RunLog` of each run.
    """

    def __init__(self, runs: Sequence[RunLog] = (), min_plot_interval_s: float = 0.3) -> None:
        import ipywidgets as w

        from mxr.config import TRANSFER_INPUTS

        d = default_choices()
        self.runs: list[RunLog] = list(runs)
        self.min_plot_interval_s = float(min_plot_interval_s)
        style = {"description_width": "110px"}
        self.mask_head = w.ToggleButtons(
            options=list(MASK_HEAD_CHOICES),
            value=d["mask_head"],
            description="mask head",
            style=style,
        )
        self.transfer_input = w.Dropdown(
            options=list(TRANSFER_INPUTS),
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
        self.reuse = w.Checkbox(value=True, description="reuse a finished run")
        self.train_button = w.Button(description="Train", button_style="primary", icon="play")
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
                self.reuse,
                self.train_button,
                self.status,
            ]
        )
        self.widget = w.VBox(
            [
                w.HBox([options, self.plot]),
                self.table,
                w.HTML("<b>All runs of this panel</b>"),
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
        }

    def set_choices(self, **choices: Any) -> None:
        """Set widgets from keyword choices (names as in :func:`config_from_choices`)."""
        checked = _checked_choices({**self.choices(), **choices})
        for key, value in checked.items():
            getattr(self, key).value = value

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

    def _train(self) -> RunLog:
        log = RunLog(choices=_checked_choices(self.choices()))
        self.train_button.disabled = True
        self.status.value = f"Training <b>{log.label}</b> …"
        self.table.value = ""
        self._last_draw = 0.0
        self._draw(log, force=True)
        try:
            train_choices(log.choices, log, reuse=self.reuse.value, on_record=self._draw)
        except Exception as e:
            from html import escape

            self.status.value = (
                f"<span style='color:#c00'>Training failed: {escape(type(e).__name__)}: "
                f"{escape(str(e))}</span>"
            )
            raise
        finally:
            self.train_button.disabled = False
        self._draw(log, force=True)
        self.table.value = html_table(
            SPLIT_TABLE_HEADER,
            split_table_rows(log.eval or {}),
            caption=f"Validation AP per class set: {log.label}",
        )
        self.runs.append(log)
        self._show_comparison()
        how = "reloaded a finished run" if log.cached else f"trained in {log.seconds:.0f} s"
        self.status.value = f"Done: <b>{log.label}</b>, {how}."  # last: "Done" means all is shown
        return log

    def _on_click(self, button: Any) -> None:
        try:
            self._train()
        except Exception:  # shown in the status line; a button callback has nowhere to raise to
            pass

    def run(self, **choices: Any) -> RunLog:
        """Set the widgets from ``choices`` and train as the Train button does; errors propagate."""
        if choices:
            self.set_choices(**choices)
        return self._train()


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

    from mxr.viz import to_uint8_image

    x0, y0, x1, y1 = crop
    canvas = to_uint8_image(image)
    if mask.any():
        canvas = draw_segmentation_masks(
            canvas, mask.bool()[None], alpha=0.55, colors=[tuple(colour)]
        )
    return canvas[:, y0:y1, x0:x1].permute(1, 2, 0).numpy()


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
    dataset order. A class with no instance gets a row that says so.
    """
    from mxr.viz import A_COLOURS, B_COLOURS

    labels = list(labels)
    if not labels:
        raise ValueError("class_gallery: labels is empty; expected at least one class label")
    bad = [x for x in labels if not 1 <= int(x) < len(ds.class_names)]
    if bad:
        raise ValueError(
            f"class_gallery: label {bad[0]} is not valid; expected 1..{len(ds.class_names) - 1}"
        )
    a_labels = getattr(ds, "a_labels", None)
    fig = Figure(figsize=(1.6 * per_class + 1.2, 1.6 * len(labels) + 0.5))
    cache: dict[int, tuple] = {}
    for row, label in enumerate(labels):
        chosen = [r for r in ious if r.label == label][:per_class]
        in_a = _set_of(label, a_labels) == "A"
        colour = A_COLOURS[0] if in_a else B_COLOURS[0]
        for col in range(per_class):
            ax = fig.add_subplot(len(labels), per_class, row * per_class + col + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(f"{ds.class_names[label]}\n[{'A' if in_a else 'B'}]", fontsize=8)
            if col >= len(chosen):
                if col == 0:
                    ax.text(0.5, 0.5, "no instance", ha="center", va="center", fontsize=8)
                for s in ax.spines.values():
                    s.set_visible(False)
                continue
            r = chosen[col]
            if r.index not in cache:
                cache[r.index] = instance_masks(model, ds, r.index)
            image, target, inst, probs = cache[r.index]
            h, w = image.shape[-2:]
            crop = _crop(target["boxes"][r.instance], h, w)
            ax.imshow(_overlay(image, probs[inst.index(r.instance)] > 0.5, colour, crop))
            ax.set_title(f"IoU {r.iou:.2f}", fontsize=8)
    fig.suptitle(title or "Predicted masks from true boxes, per class", fontsize=10)
    fig.tight_layout()
    return fig


def failure_figure(model: torch.nn.Module, ds: Any, cases: Sequence[InstanceIoU]) -> Figure:
    """Per failure case (a column): the crop with its true mask, and with the predicted mask.

    Titles give the class, its set and the IoU; rows are labelled "true mask" / "predicted".
    """
    from mxr.viz import A_COLOURS, B_COLOURS

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
    from mxr.viz import _legend

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
    fig = Figure(figsize=(2.4 * len(cols), 2.4 * len(indices) + 0.6))
    for row, index in enumerate(indices):
        image, target = ds[index]
        for col, name in enumerate(cols):
            shown = target if col == 0 else preds[name][row]
            drawn = draw_instances(
                image, shown, ds.class_names, a_labels, score_thresh=score_thresh
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
    from mxr.viz import _legend

    indices = list(indices)
    a_labels = getattr(ds, "a_labels", None)
    n = len(indices)
    fig = Figure(figsize=(2.4 * n + 3.4, 3.0))
    grid = fig.add_gridspec(1, n + 2)
    for k, index in enumerate(indices):
        image, target = ds[index]
        drawn = draw_instances(
            image, predictions[k], ds.class_names, a_labels, score_thresh=score_thresh
        )
        kept = int((predictions[k]["scores"] >= score_thresh).sum())
        ax = fig.add_subplot(grid[0, k])
        ax.imshow(drawn.permute(1, 2, 0).numpy())
        ax.set_title(f"id {int(target['image_id'])}: {kept} kept", fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(grid[0, n:])
    ts = [i / 20 for i in range(1, 20)]
    counts = detection_counts(predictions, ts, a_labels)
    ax.plot(ts, counts["A"], color="#ff8c00", label="set A classes")
    ax.plot(ts, counts["B"], color="#1e90ff", label="set B classes")
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
