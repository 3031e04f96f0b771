"""Drawing helpers that return images (uint8 tensors) and matplotlib Figures; they never call ``show``.

Set A (classes trained with masks) is drawn in warm colours, set B (boxes only) in cool colours, and
every label says which set its class is in, e.g. ``"fork-3 [B] 0.91"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from mxr.report import (
    eval_metric,
    read_metrics,  # noqa: F401  (re-exported: plots read what the engine writes)
)

A_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 140, 0),
    (255, 60, 60),
    (255, 210, 0),
    (230, 90, 160),
)
B_COLOURS: tuple[tuple[int, int, int], ...] = (
    (30, 144, 255),
    (0, 200, 255),
    (0, 230, 160),
    (150, 110, 255),
)
#: The one colour of each class set, in every chart, legend and mask overlay of the course and the
#: docs (set A warm, set B cool; the first colour of each instance palette above).
SET_COLOURS: dict[str, str] = {
    s: "#{:02x}{:02x}{:02x}".format(*c) for s, c in (("A", A_COLOURS[0]), ("B", B_COLOURS[0]))
}


#: Matplotlib's own DejaVu Sans (always installed with it), so labels scale with ``upscale``.
_LABEL_FONT = str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf")


def to_uint8_image(image: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` float in [0, 1] or uint8 -> uint8 ``(3, H, W)`` on the CPU."""
    image = image.detach().cpu()
    if image.dtype == torch.uint8:
        return image
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def _instance_masks(
    instances: Mapping[str, torch.Tensor], n: int, h: int, w: int
) -> torch.Tensor | None:
    """Boolean ``(n, H, W)`` masks aligned with the instances (all-False where an instance has none)."""
    masks = instances.get("masks")
    if masks is None:
        return None
    masks = masks.detach().cpu()
    if masks.dim() == 4:  # predictions: (N, 1, H, W) probabilities
        masks = masks[:, 0]
    masks = masks > 0.5 if masks.is_floating_point() else masks.bool()
    has_mask = instances.get("has_mask")
    if has_mask is not None and masks.shape[0] != n:
        full = torch.zeros((n, h, w), dtype=torch.bool)
        full[has_mask.detach().cpu().bool()] = masks
        return full
    return masks


def draw_instances(
    image: torch.Tensor,
    target_or_prediction: Mapping[str, torch.Tensor],
    class_names: Sequence[str],
    a_labels: Sequence[int] | None = None,
    score_thresh: float = 0.5,
    upscale: int = 1,
) -> torch.Tensor:
    """Draw boxes, masks and ``name [A|B] score`` labels (on a patch of the instance's colour) on an
    image.

    Args:
        image: ``(3, H, W)`` float in [0, 1] or uint8.
        target_or_prediction: a dataset target (``boxes`` (N, 4), ``labels`` (N,), optional ``masks``
            uint8 (M, H, W) with ``has_mask`` (N,)) or a model prediction (``boxes``, ``labels``,
            ``scores`` (N,), ``masks`` float (N, 1, H, W)); predictions below ``score_thresh`` are skipped.
        class_names: index = label.
        a_labels: labels in set A; ``None`` treats every class as A.
        upscale: enlarge the image this many times (nearest neighbour) before drawing, so that the
            labels' fixed-size font stays small beside the objects of a small image (see
            :func:`label_upscale`).

    Returns:
        uint8 ``(3, upscale·H, upscale·W)``: A instances in warm colours, B instances in cool colours.
    """
    if isinstance(upscale, bool) or not isinstance(upscale, int) or upscale < 1:
        raise ValueError(f"draw_instances: upscale={upscale!r} is not valid; expected an int >= 1")
    canvas = to_uint8_image(image)
    _, h, w = canvas.shape
    boxes = target_or_prediction["boxes"].detach().cpu().float().reshape(-1, 4)
    labels = target_or_prediction["labels"].detach().cpu().long().reshape(-1)
    n = boxes.shape[0]
    scores = target_or_prediction.get("scores")
    keep = torch.ones(n, dtype=torch.bool)
    if scores is not None:
        scores = scores.detach().cpu().float()
        keep = scores >= score_thresh
    masks = _instance_masks(target_or_prediction, n, h, w)
    a_set = set(range(len(class_names))) if a_labels is None else {int(x) for x in a_labels}
    colours, texts = [], []
    a_i = b_i = 0
    for i in range(n):
        label = int(labels[i])
        in_a = label in a_set
        if in_a:
            colours.append(A_COLOURS[a_i % len(A_COLOURS)])
            a_i += 1
        else:
            colours.append(B_COLOURS[b_i % len(B_COLOURS)])
            b_i += 1
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        text = f"{name} [{'A' if in_a else 'B'}]"
        if scores is not None:
            text += f" {float(scores[i]):.2f}"
        texts.append(text)
    if upscale > 1:
        canvas = canvas.repeat_interleave(upscale, 1).repeat_interleave(upscale, 2)
        boxes = boxes * upscale
        if masks is not None:
            masks = masks.repeat_interleave(upscale, 1).repeat_interleave(upscale, 2)
    idx = [i for i in range(n) if keep[i]]
    if not idx:
        return canvas
    if masks is not None:
        sel = [i for i in idx if masks[i].any()]
        if sel:
            canvas = draw_segmentation_masks(
                canvas, masks[sel], alpha=0.45, colors=[colours[i] for i in sel]
            )
    canvas = draw_bounding_boxes(
        canvas, boxes[idx], colors=[colours[i] for i in idx], width=max(1, upscale // 2)
    )
    return _draw_labels(
        canvas,
        boxes[idx],
        [texts[i] for i in idx],
        [colours[i] for i in idx],
        size=max(10, 6 * upscale),
    )


def _draw_labels(
    canvas: torch.Tensor,
    boxes: torch.Tensor,
    texts: Sequence[str],
    colours: Sequence[tuple[int, int, int]],
    size: int,
) -> torch.Tensor:
    """Each text on a patch of its colour at its box's top-left corner, moved inside the image
    where it would cross the right or bottom edge (so no label is cut off)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(_LABEL_FONT, size)
    pil = Image.fromarray(canvas.permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(pil)
    for box, text, colour in zip(boxes.tolist(), texts, colours, strict=True):
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 2, bottom - top + 2
        x = min(max(0.0, box[0]), max(0.0, pil.width - tw))
        y = min(max(0.0, box[1]), max(0.0, pil.height - th))
        draw.rectangle([x, y, x + tw - 1, y + th - 1], fill=tuple(colour))
        draw.text((x + 1 - left, y + 1 - top), text, fill=(0, 0, 0), font=font)
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).contiguous()


def label_upscale(height: int, width: int, target: int = 256) -> int:
    """The :func:`draw_instances` ``upscale`` that brings an image's longer side to about ``target``
    pixels (1 for an image already that large), so that labels stay small beside the objects."""
    return max(1, round(target / max(height, width)))


def _legend(fig: Figure) -> None:
    fig.legend(
        handles=[
            Patch(color=SET_COLOURS["A"], label="set A (masks in training)"),
            Patch(color=SET_COLOURS["B"], label="set B (boxes only)"),
        ],
        loc="lower center",
        ncol=2,
        frameon=False,
    )


def show_samples(ds: Any, indices: Sequence[int], ncols: int = 4, scale: float = 3.0) -> Figure:
    """A grid of dataset samples with boxes, masks and A/B labels.

    Args:
        ds: a :class:`mxr.data.CocoInstances` (anything with ``__getitem__``, ``class_names``, ``a_labels``).
        indices: dataset indices to draw.
        ncols: grid columns.
        scale: inches per panel.

    Returns:
        A Figure with one panel per index, titled ``image id N: a A, b B``, and an A/B legend.
    """
    indices = list(indices)
    if not indices:
        raise ValueError("show_samples: indices is empty; expected at least one dataset index")
    ncols = max(1, min(ncols, len(indices)))
    nrows = (len(indices) + ncols - 1) // ncols
    fig = Figure(figsize=(scale * ncols, scale * nrows + 0.5))
    a_labels = getattr(ds, "a_labels", None)
    a_set = set(a_labels) if a_labels is not None else None
    for k, index in enumerate(indices):
        image, target = ds[index]
        ax = fig.add_subplot(nrows, ncols, k + 1)
        up = label_upscale(*image.shape[-2:])
        drawn = draw_instances(image, target, ds.class_names, a_labels, upscale=up)
        ax.imshow(drawn.permute(1, 2, 0).numpy())
        labels = [int(x) for x in target["labels"]]
        n_a = sum(1 for x in labels if a_set is None or x in a_set)
        ax.set_title(
            f"image id {int(target['image_id'])}: {n_a} A, {len(labels) - n_a} B", fontsize=9
        )
        ax.axis("off")
    _legend(fig)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def plot_loss_curve(metrics_jsonl_path: str | Path, keys: Sequence[str] | None = None) -> Figure:
    """Plot training losses against iteration from a ``metrics.jsonl`` file.

    Args:
        metrics_jsonl_path: lines like ``{"iter": 10, "lr": 0.01, "loss": 1.2, "loss_mask": ...}``;
            lines without ``iter`` (e.g. evaluation records) are skipped.
        keys: the series to plot; default every key starting with ``loss``.

    Returns:
        A Figure with labelled axes, a legend and a title (log-scale y when all values are positive).
    """
    rows = [r for r in read_metrics(metrics_jsonl_path) if "iter" in r]
    if keys is None:
        found: dict[str, None] = {}
        for r in rows:
            for k in r:
                if k.startswith("loss"):
                    found[k] = None
        keys = list(found)
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot(1, 1, 1)
    positive = True
    for key in keys:
        pts = [(r["iter"], r[key]) for r in rows if isinstance(r.get(key), int | float)]
        if not pts:
            continue
        xs, ys = zip(*pts, strict=True)
        positive = positive and min(ys) > 0
        ax.plot(xs, ys, label=key, linewidth=2.0 if key == "loss" else 1.0)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    if positive and ax.lines:
        ax.set_yscale("log")
    ax.set_title(
        f"Training losses ({Path(metrics_jsonl_path).parent.name or Path(metrics_jsonl_path).name})"
    )
    if ax.lines:
        ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------
# course figures: the walkthrough (feature maps, anchors, RPN targets, boxes, RoI maps), weight PCA,
# per-class bars and AP comparisons. Each returns a Figure and never shows it.
# --------------------------------------------------------------------------------------------------
def _image_hwc(image: torch.Tensor) -> Any:
    """``(3, H, W)`` float/uint8 -> ``(H, W, 3)`` uint8 numpy array for ``imshow``."""
    return to_uint8_image(image).permute(1, 2, 0).numpy()


def _add_boxes(ax: Any, boxes: torch.Tensor, colour: Any, width: float = 1.0, **kw: Any) -> None:
    """Draw XYXY ``boxes`` ``(N, 4)`` as unfilled rectangles on ``ax``."""
    from matplotlib.patches import Rectangle

    for i, (x0, y0, x1, y1) in enumerate(boxes.detach().cpu().float().reshape(-1, 4).tolist()):
        ax.add_patch(
            Rectangle(
                (x0, y0),
                x1 - x0,
                y1 - y0,
                fill=False,
                edgecolor=colour,
                linewidth=width,
                label=kw.get("label") if i == 0 else None,
            )
        )


def plot_feature_maps(
    features: Mapping[str, torch.Tensor],
    image: torch.Tensor | None = None,
    image_size: int | None = None,
) -> Figure:
    """One panel per feature map: the L2 norm over channels of the first image's map.

    Args:
        features: ``{"0": (B, C, H0, W0), "1": ..., "pool": ...}`` (a backbone's output).
        image: optional ``(3, H, W)`` image drawn in the first panel.
        image_size: the network input's side, to print each map's stride (default: the image's).

    Returns:
        A Figure titled per level with its shape and stride, a colour bar per map.
    """
    if not features:
        raise ValueError("plot_feature_maps: features is empty; expected at least one map")
    n = len(features) + (image is not None)
    fig = Figure(figsize=(2.8 * n, 3.2))
    k = 1
    if image is not None:
        ax = fig.add_subplot(1, n, k)
        ax.imshow(_image_hwc(image), interpolation="nearest")
        ax.set_title(f"input {tuple(image.shape[-2:])}", fontsize=9)
        ax.axis("off")
        k += 1
        image_size = image_size or int(image.shape[-1])
    for name, fmap in features.items():
        if fmap.dim() != 4:
            raise ValueError(
                f"plot_feature_maps: map {name!r} has shape {tuple(fmap.shape)}; expected (B, C, H, W)"
            )
        energy = fmap[0].detach().float().norm(dim=0).cpu()
        ax = fig.add_subplot(1, n, k)
        im = ax.imshow(energy.numpy(), cmap="magma")
        stride = f", stride {image_size // fmap.shape[-1]}" if image_size else ""
        ax.set_title(f"'{name}': {tuple(fmap.shape[1:])}{stride}", fontsize=9)
        ax.set_xlabel("x (cells)")
        ax.set_ylabel("y (cells)")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="‖feature‖₂")
        k += 1
    fig.suptitle("FPN feature maps: channel norm per location")
    fig.tight_layout()
    return fig


def anchors_at(anchors: torch.Tensor, point: tuple[float, float]) -> torch.Tensor:
    """The anchors ``(N, 4)`` whose centre is nearest to ``point`` ``(x, y)`` (all aspect ratios there)."""
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    d = (centres - torch.tensor(point, dtype=anchors.dtype)).norm(dim=1)
    nearest = centres[int(d.argmin())]
    return anchors[(centres - nearest).abs().amax(dim=1) < 1e-3]


def plot_anchors(
    image: torch.Tensor,
    anchors_per_level: Sequence[torch.Tensor],
    level_names: Sequence[str],
    point: tuple[float, float] | None = None,
) -> Figure:
    """For each level, the anchors centred nearest to ``point`` drawn on the image.

    Args:
        image: ``(3, H, W)``.
        anchors_per_level: per level ``(N_l, 4)`` XYXY anchors (``N_l`` = H_l · W_l · ratios).
        level_names: one name per level.
        point: ``(x, y)``; default the image centre.

    Returns:
        A Figure with one panel per level, titled with the level's anchor count and size.
    """
    if len(anchors_per_level) != len(level_names):
        raise ValueError(
            f"plot_anchors: {len(anchors_per_level)} anchor levels but {len(level_names)} names"
        )
    h, w = image.shape[-2:]
    point = point or (w / 2, h / 2)
    n = len(anchors_per_level)
    fig = Figure(figsize=(2.8 * n, 3.3))
    colours = ["tab:red", "tab:green", "tab:blue", "tab:orange", "tab:purple"]
    for k, (anchors, name) in enumerate(zip(anchors_per_level, level_names, strict=True)):
        ax = fig.add_subplot(1, n, k + 1)
        ax.imshow(_image_hwc(image), interpolation="nearest")
        sel = anchors_at(anchors.detach().cpu().float(), point)
        for j, box in enumerate(sel):
            bw, bh = float(box[2] - box[0]), float(box[3] - box[1])
            _add_boxes(ax, box[None], colours[j % len(colours)], 1.5, label=f"{bw:.0f}×{bh:.0f}")
        side = float(((sel[:, 2] - sel[:, 0]) * (sel[:, 3] - sel[:, 1])).sqrt().mean())
        ax.set_title(f"level '{name}': {len(anchors)} anchors\nsize ≈ {side:.0f} px", fontsize=9)
        ax.set_xlim(min(0, float(sel[:, 0].min())) - 2, max(w, float(sel[:, 2].max())) + 2)
        ax.set_ylim(max(h, float(sel[:, 3].max())) + 2, min(0, float(sel[:, 1].min())) - 2)
        ax.legend(fontsize=7, loc="lower right", title="w×h", title_fontsize=7)
        ax.set_xlabel("x (px)")
    fig.suptitle(f"Anchors centred nearest to ({point[0]:.0f}, {point[1]:.0f}) at each level")
    fig.tight_layout()
    return fig


def plot_rpn_targets(
    image: torch.Tensor,
    anchors: torch.Tensor,
    labels: torch.Tensor,
    gt_boxes: torch.Tensor,
    sampled: torch.Tensor | None = None,
) -> Figure:
    """RPN training targets: positive anchors as boxes, negative and neutral anchors as centre dots.

    Args:
        image: ``(3, H, W)``.
        anchors: ``(N, 4)`` XYXY anchors of the image (all levels).
        labels: ``(N,)`` 1 = positive, 0 = negative, -1 = neutral (ignored), -2 = discarded.
        gt_boxes: ``(G, 4)`` ground-truth boxes.
        sampled: optional ``(N,)`` bool, the anchors the loss actually uses; negatives are then drawn
            only where sampled (there are thousands).

    Returns:
        A Figure with two panels (positives; negatives and neutrals) and counts in the legends.
    """
    anchors = anchors.detach().cpu().float()
    labels = labels.detach().cpu()
    if anchors.shape[0] != labels.shape[0]:
        raise ValueError(
            f"plot_rpn_targets: {anchors.shape[0]} anchors but {labels.shape[0]} labels"
        )
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    pos, neg, neutral = labels == 1, labels == 0, labels < 0
    fig = Figure(figsize=(8, 4.3))
    ax = fig.add_subplot(1, 2, 1)
    ax.imshow(_image_hwc(image), interpolation="nearest")
    _add_boxes(ax, gt_boxes, "white", 2.0, label=f"ground truth ({len(gt_boxes)})")
    _add_boxes(ax, anchors[pos], "lime", 0.8, label=f"positive anchors ({int(pos.sum())})")
    ax.set_title("Positive anchors (IoU ≥ 0.7 or best for a box)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.axis("off")
    ax = fig.add_subplot(1, 2, 2)
    ax.imshow(_image_hwc(image), interpolation="nearest")
    shown_neg = neg & sampled.cpu().bool() if sampled is not None else neg
    what = "sampled negative" if sampled is not None else "negative"
    ax.scatter(
        *centres[neutral].T,
        s=4,
        c="grey",
        alpha=0.5,
        label=f"neutral centres ({int(neutral.sum())})",
    )
    ax.scatter(
        *centres[shown_neg].T,
        s=6,
        c="red",
        label=f"{what} centres ({int(shown_neg.sum())} of {int(neg.sum())})",
    )
    _add_boxes(ax, gt_boxes, "white", 2.0)
    ax.set_title("Negative (IoU < 0.3) and neutral anchors", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.axis("off")
    fig.suptitle(f"RPN targets for {len(anchors)} anchors")
    fig.tight_layout()
    return fig


def plot_box_sets(
    image: torch.Tensor,
    box_sets: Mapping[str, torch.Tensor],
    max_boxes: int = 100,
    title: str | None = None,
) -> Figure:
    """One panel per named set of boxes on the same image (e.g. proposals before and after NMS).

    Args:
        image: ``(3, H, W)``.
        box_sets: ``{panel title: (N, 4) XYXY boxes}``; the first ``max_boxes`` of each are drawn.
        max_boxes: cap per panel.
        title: figure title.

    Returns:
        A Figure; each panel's title gives how many boxes it holds and how many are drawn.
    """
    if not box_sets:
        raise ValueError("plot_box_sets: box_sets is empty; expected at least one set of boxes")
    n = len(box_sets)
    fig = Figure(figsize=(3.4 * n, 3.7))
    for k, (name, boxes) in enumerate(box_sets.items()):
        ax = fig.add_subplot(1, n, k + 1)
        ax.imshow(_image_hwc(image), interpolation="nearest")
        boxes = boxes.detach().cpu().reshape(-1, 4)
        _add_boxes(ax, boxes[:max_boxes], "yellow", 0.7)
        drawn = min(len(boxes), max_boxes)
        ax.set_title(f"{name}\n{len(boxes)} boxes ({drawn} drawn)", fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_maps_grid(
    rows: Mapping[str, torch.Tensor],
    col_titles: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """A grid of small maps: one row per named tensor, one column per RoI.

    Args:
        rows: ``{row name: (R, h, w) or (R, 3, h, w)}``, all with the same ``R``. Maps with values
            in [0, 1] are drawn on a 0..1 grey scale (masks, probabilities), other non-negative maps
            (norms) on a sequential scale from 0, signed maps (logits) on a diverging scale
            symmetric about 0; ``(R, 3, h, w)`` rows are drawn as RGB.
        col_titles: one per column (e.g. the RoI's class).
        title: figure title.

    Returns:
        A Figure with a colour bar per row (except RGB rows).
    """
    if not rows:
        raise ValueError("plot_maps_grid: rows is empty; expected at least one named tensor")
    counts = {name: t.shape[0] for name, t in rows.items()}
    r = next(iter(counts.values()))
    if any(c != r for c in counts.values()) or r == 0:
        raise ValueError(
            f"plot_maps_grid: rows need the same positive number of maps, got {counts}"
        )
    if col_titles is not None and len(col_titles) != r:
        raise ValueError(f"plot_maps_grid: {len(col_titles)} column titles for {r} columns")
    nrows = len(rows)
    fig = Figure(figsize=(1.6 * r + 1.6, 1.6 * nrows + 0.6))
    grid = fig.add_gridspec(nrows, r + 1, width_ratios=[1] * r + [0.08])
    for i, (name, maps) in enumerate(rows.items()):
        maps = maps.detach().cpu().float()
        rgb = maps.dim() == 4
        if rgb:
            vmin, vmax, cmap = 0.0, 1.0, None
        elif maps.min() >= 0 and maps.max() <= 1:
            vmin, vmax, cmap = 0.0, 1.0, "gray"
        elif maps.min() >= 0:  # magnitudes (e.g. feature norms)
            vmin, vmax, cmap = 0.0, float(maps.max()), "magma"
        else:
            lim = float(maps.abs().max()) or 1.0
            vmin, vmax, cmap = -lim, lim, "RdBu_r"
        im = None
        for j in range(r):
            ax = fig.add_subplot(grid[i, j])
            shown = maps[j].permute(1, 2, 0).clamp(0, 1) if rgb else maps[j]
            im = ax.imshow(shown.numpy(), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
            if i == 0 and col_titles is not None:
                ax.set_title(col_titles[j], fontsize=8)
        if not rgb and im is not None:
            fig.colorbar(im, cax=fig.add_subplot(grid[i, r]))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def pca_project(x: torch.Tensor, k: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Project rows onto their first ``k`` principal components (SVD of the centred matrix).

    Args:
        x: ``(N, d)`` e.g. one weight vector per class.
        k: number of components (``k <= min(N, d)``).

    Returns:
        ``(N, k)`` coordinates and ``(k,)`` the fraction of variance each component explains. The
        sign of each component is fixed (largest-magnitude loading positive), so results are stable.
    """
    if x.dim() != 2:
        raise ValueError(f"pca_project: x has shape {tuple(x.shape)}; expected (N, d)")
    if not 1 <= k <= min(x.shape):
        raise ValueError(f"pca_project: k={k} is not valid for x of shape {tuple(x.shape)}")
    xc = x.detach().double() - x.detach().double().mean(0, keepdim=True)
    u, s, vh = torch.linalg.svd(xc, full_matrices=False)
    signs = torch.sign(vh[:k].gather(1, vh[:k].abs().argmax(1, keepdim=True))).squeeze(1)
    signs[signs == 0] = 1
    coords = (u[:, :k] * s[:k]) * signs
    var = s**2
    explained = var[:k] / var.sum().clamp(min=1e-12)
    return coords.float(), explained.float()


def plot_weight_pca(
    weights: Mapping[str, torch.Tensor],
    names: Sequence[str],
    groups: Sequence[str],
    values: Sequence[float],
    is_b: Sequence[bool],
    value_label: str = "member",
) -> Figure:
    """Per-class weight vectors projected to 2-D by PCA, coloured by group and by a value.

    Args:
        weights: ``{panel title: (N, d) one row per class}`` (e.g. ``w_det`` and ``w_seg``).
        names: ``N`` class names (labels next to the points).
        groups: ``N`` group names (e.g. the shape family): top row colours.
        values: ``N`` numbers (e.g. the member index): bottom row colours.
        is_b: ``N`` flags; set-B classes are drawn as stars with their names.
        value_label: colour-bar label of ``values``.

    Returns:
        A Figure with two rows (by group, by value) and one column per weight set; axis labels give
        the explained variance of each component.
    """
    n = len(names)
    if not (len(groups) == len(values) == len(is_b) == n):
        raise ValueError("plot_weight_pca: names, groups, values and is_b need the same length")
    for title, w in weights.items():
        if w.shape[0] != n:
            raise ValueError(f"plot_weight_pca: {title!r} has {w.shape[0]} rows for {n} names")
    import matplotlib

    group_names = list(dict.fromkeys(groups))
    cmap = matplotlib.colormaps["tab10"]
    group_colour = {g: cmap(i % 10) for i, g in enumerate(group_names)}
    b = torch.tensor([bool(x) for x in is_b])
    ncols = len(weights)
    fig = Figure(figsize=(4.6 * ncols, 8.2))
    for j, (title, w) in enumerate(weights.items()):
        xy, explained = pca_project(w, 2)
        for row in range(2):
            ax = fig.add_subplot(2, ncols, row * ncols + j + 1)
            if row == 0:
                for g in group_names:
                    sel = torch.tensor([x == g for x in groups])
                    for flag, marker, size in ((False, "o", 30), (True, "*", 160)):
                        m = sel & (b == flag)
                        if m.any():
                            ax.scatter(
                                *xy[m].T,
                                c=[group_colour[g]],
                                marker=marker,
                                s=size,
                                edgecolors="black" if flag else "none",
                                label=g if not flag else None,
                            )
                ax.legend(fontsize=7, title="family (★ = set B)", title_fontsize=7)
            else:
                vals = torch.tensor([float(v) for v in values])
                sc = None
                for flag, marker, size in ((False, "o", 30), (True, "*", 160)):
                    m = b == flag
                    if m.any():
                        sc = ax.scatter(
                            *xy[m].T,
                            c=vals[m].numpy(),
                            cmap="viridis",
                            vmin=float(vals.min()),
                            vmax=float(vals.max()),
                            marker=marker,
                            s=size,
                            edgecolors="black" if flag else "none",
                        )
                if sc is not None:
                    fig.colorbar(sc, ax=ax, label=value_label)
            for i in torch.nonzero(b).flatten().tolist():
                ax.annotate(
                    names[i], xy[i].tolist(), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
            ax.set_xlabel(f"PC1 ({100 * float(explained[0]):.0f} % of variance)")
            ax.set_ylabel(f"PC2 ({100 * float(explained[1]):.0f} %)")
            ax.set_title(f"{title}: by {'family' if row == 0 else value_label}", fontsize=9)
            ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def group_separation(x: torch.Tensor, groups: Sequence[str]) -> float:
    """Mean distance between rows of different groups over mean distance within a group.

    Above 1: rows of a group sit closer together than rows of different groups. ``x`` is ``(N, d)``.
    """
    if x.shape[0] != len(groups):
        raise ValueError(f"group_separation: {x.shape[0]} rows for {len(groups)} group names")
    d = torch.cdist(x.detach().double(), x.detach().double())
    g = list(groups)
    same = torch.tensor([[a == b for b in g] for a in g])
    off = ~torch.eye(len(g), dtype=torch.bool)
    within, between = d[same & off], d[~same]
    if within.numel() == 0 or between.numel() == 0:
        raise ValueError("group_separation: needs at least two groups and a group of two")
    return float(between.mean() / within.mean().clamp(min=1e-12))


def plot_class_bars(
    series: Mapping[str, torch.Tensor],
    class_names: Sequence[str],
    a_labels: Sequence[int],
    ylabel: str,
    title: str | None = None,
) -> Figure:
    """Per-class values (e.g. gradient norms per class row), one panel per named series.

    Args:
        series: ``{panel title: (C,) one value per label}`` (label 0 = background included).
        class_names: ``C`` names.
        a_labels: labels in set A (bars in the A colour; B bars in the B colour; background grey).
        ylabel, title: axis label and figure title.

    Non-negative series share one y scale starting at 0, so an all-zero panel reads as zero.
    """
    if not series:
        raise ValueError("plot_class_bars: series is empty")
    a_set = {int(x) for x in a_labels}
    c = len(class_names)
    colours = ["lightgrey" if i == 0 else SET_COLOURS["A" if i in a_set else "B"] for i in range(c)]
    fig = Figure(figsize=(max(7.0, 0.25 * c), 2.6 * len(series) + 0.6))
    flat = torch.cat([v.detach().cpu().float().flatten() for v in series.values()])
    shared_top = float(flat.max()) * 1.1 if flat.numel() and float(flat.min()) >= 0 else None
    for k, (name, values) in enumerate(series.items()):
        values = values.detach().cpu().float()
        if values.shape != (c,):
            raise ValueError(
                f"plot_class_bars: {name!r} has shape {tuple(values.shape)}; expected ({c},)"
            )
        ax = fig.add_subplot(len(series), 1, k + 1)
        ax.bar(range(c), values.numpy(), color=colours)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel(ylabel)
        ax.set_xticks(range(c))
        ax.set_xticklabels(class_names, rotation=90, fontsize=7)
        ax.set_xlim(-0.6, c - 0.4)
        if shared_top is not None:  # non-negative values: one y scale from 0, so panels compare
            ax.set_ylim(0, shared_top or 1.0)
        ax.grid(True, axis="y", alpha=0.3)
    _legend(fig)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def _metric(result: Mapping[str, Any], split: str, metric: str) -> float:
    """``metric`` of a split in an :func:`mxr.evaluation.evaluate` result (``mIoU`` or a segm stat)."""
    value = eval_metric(result, split, metric)
    return float("nan") if value is None else float(value)


def plot_ap_comparison(
    results: Mapping[str, Mapping[str, Any]],
    metrics: Sequence[str] = ("AP", "AP75", "mIoU"),
    splits: Sequence[str] = ("A", "B"),
    title: str | None = None,
) -> Figure:
    """Mask metrics of several runs side by side, one panel per metric, bars per split.

    Args:
        results: ``{run name: evaluate() result}``.
        metrics: ``segm`` statistics (``AP``, ``AP50``, ``AP75``, ...) or ``mIoU`` (mask IoU given
            ground-truth boxes, when the result has it).
        splits: which class sets to show (``A``, ``B``, ``all``).
    """
    if not results:
        raise ValueError("plot_ap_comparison: results is empty; expected at least one run")
    names = list(results)
    fig = Figure(figsize=(max(4.0, 1.3 * len(names)) * len(metrics) * 0.8 + 1, 3.8))
    width = 0.8 / len(splits)
    colours = SET_COLOURS
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), k + 1)
        for s, split in enumerate(splits):
            vals = [_metric(results[n], split, metric) for n in names]
            xs = [i + (s - (len(splits) - 1) / 2) * width for i in range(len(names))]
            ax.bar(xs, vals, width, label=f"set {split}", color=colours.get(split, "grey"))
        top = max(
            (v for n in names for sp in splits if (v := _metric(results[n], sp, metric)) == v),
            default=0.0,
        )
        ax.set_ylim(0, max(1.0, 1.15 * top))
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(f"mask {metric}" + (" (given true boxes)" if metric == "mIoU" else ""))
        ax.set_title(f"mask {metric}", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_loss_terms(
    losses: Mapping[str, float | torch.Tensor], title: str = "Losses of one step"
) -> Figure:
    """A bar chart of named loss terms (e.g. the dict a torchvision detector returns in training)."""
    if not losses:
        raise ValueError("plot_loss_terms: losses is empty")
    names = list(losses)
    vals = [float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for v in losses.values()]
    fig = Figure(figsize=(6, 3))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(names, vals, color="tab:blue")
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:.3f}", va="center", fontsize=8)
    ax.set_xlabel("loss value")
    ax.set_title(title)
    ax.invert_yaxis()
    ax.set_xlim(0, max(vals) * 1.25 if max(vals) > 0 else 1)
    fig.tight_layout()
    return fig


def plot_images(
    panels: Mapping[str, torch.Tensor], title: str | None = None, scale: float = 3.0
) -> Figure:
    """Images side by side, one titled panel each (e.g. ground truth next to a prediction).

    Args:
        panels: ``{panel title: (3, H, W) float in [0, 1] or uint8}`` (e.g. :func:`draw_instances` output).
        title: figure title.
        scale: inches per panel.
    """
    if not panels:
        raise ValueError("plot_images: panels is empty; expected at least one image")
    n = len(panels)
    fig = Figure(figsize=(scale * n, scale + 0.4))
    for k, (name, image) in enumerate(panels.items()):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(
                f"plot_images: panel {name!r} has shape {tuple(image.shape)}; expected (3, H, W)"
            )
        ax = fig.add_subplot(1, n, k + 1)
        ax.imshow(_image_hwc(image), interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------
# what the detector calls each object: ground truth vs detections (per image, and over a split)
# --------------------------------------------------------------------------------------------------
def _kept(prediction: Mapping[str, torch.Tensor], score: float) -> torch.Tensor:
    """Indices of the detections with score >= ``score``, highest score first."""
    scores = prediction["scores"].detach().cpu().float().reshape(-1)
    order = torch.argsort(scores, descending=True, stable=True)
    return order[scores[order] >= score]


def _box_ious(
    target: Mapping[str, torch.Tensor], prediction: Mapping[str, torch.Tensor], keep: torch.Tensor
) -> torch.Tensor:
    """``(G, D)`` box IoU of the ground-truth boxes with the kept detections."""
    from torchvision.ops import box_iou

    gt = target["boxes"].detach().cpu().float().reshape(-1, 4)
    det = prediction["boxes"].detach().cpu().float().reshape(-1, 4)[keep]
    if len(gt) == 0 or len(det) == 0:
        return torch.zeros((len(gt), len(det)))
    return box_iou(gt, det)


def box_confusion(
    predictions: Sequence[Mapping[str, torch.Tensor]],
    targets: Sequence[Mapping[str, torch.Tensor]],
    num_classes: int,
    iou: float = 0.5,
    score: float = 0.5,
) -> torch.Tensor:
    """What the detector calls each ground-truth object: a ``(C, C)`` count matrix.

    Each true box is matched to the highest-scoring detection (score >= ``score``) whose box IoU
    with it is >= ``iou``, the label a picture of the detections shows on top of the object.

    Args:
        predictions: per image, a model's ``boxes`` (D, 4), ``labels`` (D,), ``scores`` (D,).
        targets: per image, the true ``boxes`` (G, 4) and ``labels`` (G,) (labels ``1..C-1``).
        num_classes: ``C``, background (label 0) included.

    Returns:
        ``m[g, p]``: true objects of class ``g`` whose matched detection is labelled ``p``; column 0
        counts the missed objects (no detection matched), row 0 the detections that match no object.
    """
    if len(predictions) != len(targets):
        raise ValueError(
            f"box_confusion: {len(predictions)} predictions for {len(targets)} targets"
        )
    if not 0.0 < iou <= 1.0:
        raise ValueError(f"box_confusion: iou={iou} is not valid; expected 0 < iou <= 1")
    m = torch.zeros((num_classes, num_classes), dtype=torch.long)
    for pred, target in zip(predictions, targets, strict=True):
        keep = _kept(pred, score)
        gt_labels = target["labels"].detach().cpu().long().reshape(-1)
        det_labels = pred["labels"].detach().cpu().long().reshape(-1)[keep]
        bad = [int(x) for x in torch.cat([gt_labels, det_labels]) if not 0 < int(x) < num_classes]
        if bad:
            raise ValueError(
                f"box_confusion: label {bad[0]} is not valid; expected 1..{num_classes - 1}"
            )
        ious = _box_ious(target, pred, keep)
        hits = ious >= iou  # (G, D); detections are in score order, so the first hit is the top one
        for g, label in enumerate(gt_labels.tolist()):
            found = torch.nonzero(hits[g]).flatten()
            m[label, int(det_labels[found[0]]) if len(found) else 0] += 1
        for d in torch.nonzero(~hits.any(0)).flatten().tolist():
            m[0, int(det_labels[d])] += 1
    return m


def confusion_outcomes(
    matrix: torch.Tensor, labels: Sequence[int], related: Mapping[int, Sequence[int]]
) -> dict[str, int]:
    """Sum the rows ``labels`` of a :func:`box_confusion` matrix by what the objects were called.

    Args:
        matrix: ``(C, C)`` counts (column 0: missed).
        labels: the true classes to count (e.g. set B).
        related: per class, the classes counted as ``"related"`` (e.g. its neighbouring members).

    Returns:
        ``{"own": n, "related": n, "other": n, "missed": n}``: labelled with the object's own class,
        with a related class, with any other class, or not detected.
    """
    c = matrix.shape[0]
    out = {"own": 0, "related": 0, "other": 0, "missed": 0}
    for g in labels:
        if not 0 < int(g) < c:
            raise ValueError(f"confusion_outcomes: label {g} is not valid; expected 1..{c - 1}")
        near = {int(x) for x in related.get(int(g), ())}
        for p, n in enumerate(matrix[int(g)].tolist()):
            if p == 0:
                out["missed"] += int(n)
            elif p == int(g):
                out["own"] += int(n)
            else:
                out["related" if p in near else "other"] += int(n)
    return out


def _set_label(label: int, class_names: Sequence[str], a_set: set[int]) -> str:
    return f"{class_names[label]} [{'A' if label in a_set else 'B'}]"


def _colour_ticks(labels: Sequence[Any], classes: Sequence[int], a_set: set[int]) -> None:
    """Colour tick labels by the set of their class (``classes[i]`` < 1: black)."""
    for text, label in zip(labels, classes, strict=True):
        if label > 0:
            text.set_color(SET_COLOURS["A" if label in a_set else "B"])


def plot_confusion(
    matrix: torch.Tensor,
    class_names: Sequence[str],
    a_labels: Sequence[int],
    title: str | None = None,
    rows: Sequence[int] | None = None,
) -> Figure:
    """A :func:`box_confusion` matrix: rows = true class, columns = the detection's class.

    Cells are coloured by the fraction of the row and hold their count; tick labels are coloured by
    set (A orange, B blue) and B classes are marked ``[B]`` and outlined. Column 0 reads
    ``missed``, row 0 ``no object``.

    Args:
        rows: the true classes to show (default: every class with a count, and row 0).
    """
    c = len(class_names)
    if matrix.shape != (c, c):
        raise ValueError(
            f"plot_confusion: matrix has shape {tuple(matrix.shape)}; expected ({c}, {c})"
        )
    a_set = {int(x) for x in a_labels}
    m = matrix.detach().cpu().long()
    rows = [r for r in range(c) if m[r].sum() > 0] if rows is None else [int(r) for r in rows]
    if not rows:
        raise ValueError("plot_confusion: no row to show (the matrix is all zeros)")
    sub = m[rows].float()
    frac = sub / sub.sum(1, keepdim=True).clamp(min=1)
    fig = Figure(figsize=(0.26 * c + 2.6, 0.26 * len(rows) + 2.4))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(frac.numpy(), cmap="Greys", vmin=0, vmax=1, aspect="auto")
    for i in range(len(rows)):
        for j in range(c):
            n = int(sub[i, j])
            if n:
                ax.text(
                    j, i, str(n), ha="center", va="center", fontsize=6,
                    color="white" if frac[i, j] > 0.5 else "black",
                )  # fmt: skip
    from matplotlib.patches import Rectangle

    for i, r in enumerate(rows):  # outline the B rows
        if r > 0 and r not in a_set:
            ax.add_patch(
                Rectangle(
                    (-0.5, i - 0.5), c, 1, fill=False, edgecolor=SET_COLOURS["B"], linewidth=1.2
                )
            )
    names = ["missed", *(_set_label(x, class_names, a_set) for x in range(1, c))]
    ax.set_xticks(range(c))
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(
        ["no object" if r == 0 else _set_label(r, class_names, a_set) for r in rows], fontsize=7
    )
    _colour_ticks(ax.get_xticklabels(), range(c), a_set)
    _colour_ticks(ax.get_yticklabels(), rows, a_set)
    ax.set_xlabel("class of the detection that claims the object")
    ax.set_ylabel("true class")
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label="fraction of the row")
    ax.set_title(title or "What the detector calls each object", fontsize=10)
    fig.tight_layout()
    return fig


def plot_overlaps(
    target: Mapping[str, torch.Tensor],
    prediction: Mapping[str, torch.Tensor],
    class_names: Sequence[str],
    a_labels: Sequence[int],
    score: float = 0.5,
    title: str | None = None,
    ax: Any = None,
) -> Figure:
    """Ground-truth instances (columns) vs detections (rows) of one image, coloured by box IoU.

    After matterport's ``plot_overlaps``: detections with score >= ``score`` are sorted by score,
    every cell with an IoU >= 0.1 holds it, written green where the two classes agree and red where
    they differ; tick labels are ``name [A|B]`` (detections also their score), coloured by set.

    Args:
        target: ``boxes`` (G, 4), ``labels`` (G,); prediction: ``boxes``, ``labels``, ``scores``.
        ax: draw into this axes (its figure is returned) instead of a new figure.
    """
    a_set = {int(x) for x in a_labels}
    keep = _kept(prediction, score)
    ious = _box_ious(target, prediction, keep).T  # (D, G)
    gt_labels = target["labels"].detach().cpu().long().reshape(-1).tolist()
    det_labels = prediction["labels"].detach().cpu().long().reshape(-1)[keep].tolist()
    det_scores = prediction["scores"].detach().cpu().float().reshape(-1)[keep].tolist()
    if not gt_labels:
        raise ValueError("plot_overlaps: the target has no instance")
    own_figure = ax is None
    if own_figure:
        fig = Figure(figsize=(0.45 * len(gt_labels) + 3.2, 0.28 * max(1, len(det_labels)) + 2.2))
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    shown = ious if len(det_labels) else torch.zeros((1, len(gt_labels)))
    # IoU 1 is a mid blue (vmax 1.5), so the IoU written on it stays readable
    ax.imshow(shown.numpy(), cmap="Blues", vmin=0, vmax=1.5, aspect="auto")
    for d in range(len(det_labels)):
        for g in range(len(gt_labels)):
            v = float(ious[d, g])
            if v >= 0.1:
                same = det_labels[d] == gt_labels[g]
                ax.text(
                    g, d, f"{v:.2f}", ha="center", va="center", fontsize=8, fontweight="bold",
                    color="darkgreen" if same else "red",
                    bbox={"facecolor": "white", "alpha": 0.8, "pad": 1.5, "edgecolor": "none"},
                )  # fmt: skip
    ax.set_xticks(range(len(gt_labels)))
    ax.set_xticklabels(
        [_set_label(x, class_names, a_set) for x in gt_labels], rotation=90, fontsize=7
    )
    _colour_ticks(ax.get_xticklabels(), gt_labels, a_set)
    ax.set_yticks(range(len(det_labels)))
    ax.set_yticklabels(
        [
            f"{_set_label(x, class_names, a_set)} {s:.2f}"
            for x, s in zip(det_labels, det_scores, strict=True)
        ],
        fontsize=7,
    )
    _colour_ticks(ax.get_yticklabels(), det_labels, a_set)
    ax.set_xlabel("ground truth")
    ax.set_ylabel(f"detections (score ≥ {score:.2f})" if det_labels else "no detection")
    ax.set_title(title or "Box IoU: green = same class, red = another class", fontsize=9)
    if own_figure:
        fig.tight_layout()
    return fig


def mask_holes(mask: torch.Tensor) -> torch.Tensor:
    """The background pixels a mask encloses (its holes): ``(H, W)`` bool -> ``(H, W)`` bool.

    A background pixel is in a hole when no 4-connected path of background pixels joins it to the
    image border (a ring's centre; not the gap between a fork's prongs, which opens outwards).
    """
    if mask.dim() != 2:
        raise ValueError(f"mask_holes: mask has shape {tuple(mask.shape)}; expected (H, W)")
    free = ~mask.detach().cpu().bool()
    reached = torch.zeros_like(free)
    reached[0, :], reached[-1, :], reached[:, 0], reached[:, -1] = (
        free[0, :], free[-1, :], free[:, 0], free[:, -1],
    )  # fmt: skip
    while True:
        grown = reached.clone()
        grown[1:] |= reached[:-1]
        grown[:-1] |= reached[1:]
        grown[:, 1:] |= reached[:, :-1]
        grown[:, :-1] |= reached[:, 1:]
        grown &= free
        if torch.equal(grown, reached):
            return free & ~reached
        reached = grown
