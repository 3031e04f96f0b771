"""Drawing helpers that return images (uint8 tensors) and matplotlib Figures; they never call ``show``.

Set A (classes trained with masks) is drawn in warm colours, set B (boxes only) in blues, and
every label names its class's set, e.g. ``"fork-3 [B] 0.91"``. This is the one home of the A/B
palette and legend (:data:`SET_COLOURS`, :func:`set_legend`), bars (:func:`set_bars`), loss curve.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from torch import Tensor
from torchvision.ops import box_iou
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from mxr.course.analysis import (
    TensorDict,
    dataset_item,
    detection_counts,
    gallery_instances,
    gt_detection_ious,
    kept_by_score,
    pca_project,
    run_groups,
    set_of,
    spread,
)
from mxr.evaluation import (
    InstanceIoU,
    detections,
    has_mask_of,
    instances_with_mask,
    ious_by_label,
    masks_for_true_boxes,
    mean_iou,
)
from mxr.files import read_metrics
from mxr.report import (
    A_COLOURS,
    B_COLOURS,
    RGB,
    SET_COLOURS,
    SET_LABELS,
    SET_RGB,
    eval_metric,
    figure_png,
    set_bars,
)

#: Matplotlib's own DejaVu Sans (always installed with it), so labels scale with ``upscale``.
_LABEL_FONT = str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf")


def image_bytes(image: Any, fmt: str = "png", *, scale: int = 1, quality: int = 70) -> bytes:
    """A uint8 ``(3, H, W)`` tensor, ``(H, W, 3|4)`` array or PIL image as PNG or JPEG bytes,
    enlarged ``scale`` times (nearest neighbour)."""
    from PIL import Image

    if isinstance(image, Tensor):
        image = image.detach().cpu().permute(1, 2, 0).numpy()
    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    if fmt == "jpeg":
        pil.convert("RGB").save(buf, format="JPEG", quality=quality)
    else:
        pil.save(buf, format="PNG")
    return buf.getvalue()


def to_uint8_image(image: Tensor) -> Tensor:
    """``(3, H, W)`` float in [0, 1] or uint8 -> uint8 ``(3, H, W)`` on the CPU."""
    image = image.detach().cpu()
    if image.dtype == torch.uint8:
        return image
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def _bool_masks(instances: TensorDict, n: int) -> Tensor | None:
    """Boolean ``(n, H, W)`` masks aligned with the instances (all-False where one has none)."""
    masks = instances.get("masks")
    if masks is None:
        return None
    masks = masks.detach().cpu()
    if masks.dim() == 4:  # predictions: (N, 1, H, W) probabilities
        masks = masks[:, 0]
    masks = masks > 0.5 if masks.is_floating_point() else masks.bool()
    if masks.shape[0] != n:  # a target's masks: only the instances with has_mask
        full = torch.zeros((n, *masks.shape[1:]), dtype=torch.bool)
        full[has_mask_of(instances).cpu()] = masks
        return full
    return masks


def _colours_and_texts(
    labels: Tensor, scores: Tensor | None, class_names: Sequence[str], a_labels: Any
) -> tuple[list[RGB], list[str]]:
    """Per instance: its colour (the next of its set's palette) and its ``name [A|B] score`` label."""
    colours, texts, used = [], [], {"A": 0, "B": 0}
    for i, label in enumerate(labels.tolist()):
        s = set_of(label, a_labels)
        palette = A_COLOURS if s == "A" else B_COLOURS
        colours.append(palette[used[s] % len(palette)])
        used[s] += 1
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        texts.append(f"{name} [{s}]" + ("" if scores is None else f" {float(scores[i]):.2f}"))
    return colours, texts


def draw_instances(
    image: Tensor,
    target_or_prediction: TensorDict,
    class_names: Sequence[str],
    a_labels: Sequence[int] | None = None,
    score_thresh: float = 0.5,
    upscale: int = 1,
) -> Tensor:
    """Boxes, masks and ``name [A|B] score`` labels on an image enlarged ``upscale`` times (nearest:
    the labels keep their size): uint8 ``(3, upscale·H, upscale·W)``. A target's ``masks``
    (M, H, W) are its ``has_mask`` instances'; a prediction's (N, 1, H, W), those below
    ``score_thresh`` not drawn."""
    if isinstance(upscale, bool) or not isinstance(upscale, int) or upscale < 1:
        raise ValueError(f"draw_instances: upscale={upscale!r} is not valid; expected an int >= 1")
    canvas = to_uint8_image(image)
    boxes = target_or_prediction["boxes"].detach().cpu().float().reshape(-1, 4)
    labels = target_or_prediction["labels"].detach().cpu().long().reshape(-1)
    n = boxes.shape[0]
    scores = target_or_prediction.get("scores")
    if scores is not None:
        scores = scores.detach().cpu().float()
    masks = _bool_masks(target_or_prediction, n)
    colours, texts = _colours_and_texts(labels, scores, class_names, a_labels)
    if upscale > 1:
        canvas = canvas.repeat_interleave(upscale, 1).repeat_interleave(upscale, 2)
        boxes = boxes * upscale
        if masks is not None:
            masks = masks.repeat_interleave(upscale, 1).repeat_interleave(upscale, 2)
    idx = [i for i in range(n) if scores is None or scores[i] >= score_thresh]
    if not idx:
        return canvas
    sel = [i for i in idx if masks is not None and masks[i].any()]
    if sel:
        canvas = draw_segmentation_masks(
            canvas, masks[sel], alpha=0.45, colors=[colours[i] for i in sel]
        )
    shown = [colours[i] for i in idx]
    canvas = draw_bounding_boxes(canvas, boxes[idx], colors=shown, width=max(1, upscale // 2))
    return _draw_labels(canvas, boxes[idx], [texts[i] for i in idx], shown, max(10, 6 * upscale))


#: A label's place: ``(x, y, width, height)`` in pixels, ``(x, y)`` its top-left corner.
Rect = tuple[float, float, float, float]


def _overlaps(a: Tensor, b: Tensor) -> Tensor:
    """``(len(a), len(b))``: the areas XYXY rectangles share (``x1``, ``y1`` exclusive)."""
    w = torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(a[:, None, 0], b[None, :, 0])
    h = torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(a[:, None, 1], b[None, :, 1])
    return w.clamp(min=0) * h.clamp(min=0)


def _gaps(rects: Tensor, frame: Tensor) -> Tensor:
    """How far (city-block, px) each XYXY rectangle lies from ``frame``: 0 where they touch."""
    dx = torch.maximum(frame[0] - rects[:, 2], rects[:, 0] - frame[2]).clamp(min=0)
    dy = torch.maximum(frame[1] - rects[:, 3], rects[:, 1] - frame[3]).clamp(min=0)
    return dx + dy


def _cheapest_spot(
    xs: Tensor,
    ys: Tensor,
    size: tuple[float, float],
    image: tuple[int, int],
    frames: Tensor,
    weight: Tensor,
    placed: Tensor,
    i: int,
) -> tuple[Tensor, bool]:
    """Of the places ``xs`` × ``ys`` (moved into the image) of a ``size`` label of box ``i``, the one
    that costs least (see :func:`_place_labels`), and whether it overlaps a placed label."""
    (tw, th), (width, height) = size, image
    gy, gx = torch.meshgrid(
        ys.clamp(0, max(0, height - th)), xs.clamp(0, max(0, width - tw)), indexing="ij"
    )
    spots = torch.stack([gx, gy, gx + tw, gy + th], -1).reshape(-1, 4)
    clash = _overlaps(spots, placed).sum(1)
    cost = (
        1e6 * clash
        + _overlaps(spots, frames) @ weight
        + tw * _gaps(spots, frames[i]) / 2
        + tw * th / 4 * (spots[:, 1] > frames[i, 1])
        + 1e-3 * torch.arange(len(spots))  # a tie: the earlier candidate
    )
    k = int(cost.argmin())
    return spots[k], bool(clash[k] > 0)


def _place_labels(
    boxes: Sequence[Sequence[float]], sizes: Sequence[tuple[float, float]], width: int, height: int
) -> list[Rect]:
    """Where each ``(w, h)`` label of an XYXY box (pixel corners, as drawn) goes in a ``width`` ×
    ``height`` image, in order (the first label gets the best place): at a corner of its box,
    **outside** it where there is room (above, else below: the label does not hide the object it
    names), or stacked against a nearby label. Of those places, the one that costs least: any
    overlap with a label placed before it (prohibitive), the area it covers of its own box and,
    twice over, of other objects' boxes (hidden, and a label there seems to name them; a box with
    IoU >= 0.5 with its own is another detection of its object), its distance from its box (half
    a label area per label height) and, below the box, a quarter of a label area."""
    frames = torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4) + torch.tensor([0, 0, 1, 1])
    others = box_iou(frames, frames) < 0.5  # the boxes of other objects than each box's
    placed = torch.zeros(0, 4, dtype=torch.float64)
    for i, (tw, th) in enumerate(sizes):
        x0, y0, x1, y1 = frames[i].tolist()
        near = placed[_gaps(placed, frames[i]).argsort()[:8]]  # labels it may stack against
        xs = torch.cat([torch.tensor([x0, x1 - tw]), near[:, 2], near[:, 0] - tw])
        ys = torch.cat([torch.tensor([y0 - th, y1, y0]), near[:, 1] - th, near[:, 3]])
        weight = 2.0 * others[i].double()
        weight[i] = 1.0
        spot, clash = _cheapest_spot(xs, ys, (tw, th), (width, height), frames, weight, placed, i)
        if clash:  # crowded: anywhere in the image (steps of 1/8 label width, 1/2 height)
            xs = torch.arange(0.0, max(1.0, width - tw + 1), max(1.0, tw / 8))
            ys = torch.arange(0.0, max(1.0, height - th + 1), max(1.0, th / 2))
            spot, _ = _cheapest_spot(xs, ys, (tw, th), (width, height), frames, weight, placed, i)
        placed = torch.cat([placed, spot[None]])
    return [(x, y, r - x, b - y) for x, y, r, b in placed.tolist()]


def _ink(colour: Sequence[int]) -> tuple[int, int, int]:
    """Black text on a light patch, white on a dark one."""
    r, g, b = colour[:3]
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b >= 110 else (255, 255, 255)


def _draw_labels(
    canvas: Tensor, boxes: Tensor, texts: Sequence[str], colours: Sequence[RGB], size: int
) -> Tensor:
    """Each text on a patch of its colour, placed by :func:`_place_labels` (outside its box, apart
    from the others, inside the image); a label placed off its box is tied to it by a line."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(_LABEL_FONT, size)
    pil = Image.fromarray(canvas.permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(pil)
    extents = [draw.textbbox((0, 0), text, font=font) for text in texts]
    sizes = [(r - left + 2, b - top + 2) for left, top, r, b in extents]
    rects = _place_labels(boxes.tolist(), sizes, pil.width, pil.height)
    for (x, y, w, h), box, colour in zip(rects, boxes.tolist(), colours, strict=True):
        frame = torch.tensor(box, dtype=torch.float64) + torch.tensor([0, 0, 1, 1])
        if float(_gaps(torch.tensor([[x, y, x + w, y + h]], dtype=torch.float64), frame)[0]) > 0:
            # off its box: a line from the box's point nearest the label's centre to the label
            bx = min(max(x + w / 2, box[0]), box[2])
            by = min(max(y + h / 2, box[1]), box[3])
            end = (min(max(bx, x), x + w - 1), min(max(by, y), y + h - 1))
            draw.line([end, (bx, by)], fill=tuple(colour), width=1)
    for (x, y, w, h), text, colour, (left, top, _, _) in zip(
        rects, texts, colours, extents, strict=True
    ):
        draw.rectangle([x, y, x + w - 1, y + h - 1], fill=tuple(colour))
        draw.text((x + 1 - left, y + 1 - top), text, fill=_ink(colour), font=font)
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).contiguous()


def label_upscale(height: int, width: int, target: int = 256) -> int:
    """The :func:`draw_instances` ``upscale`` that brings the longer side to about ``target`` px."""
    return max(1, round(target / max(height, width)))


def crop_box(box: Any, h: int, w: int, pad: float = 0.25) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` pixel bounds of an XYXY box grown by ``pad`` of its size + 2 px, clipped
    to an ``h`` × ``w`` image."""
    x0, y0, x1, y1 = (float(v) for v in torch.as_tensor(box).reshape(-1))
    px, py = (x1 - x0) * pad + 2, (y1 - y0) * pad + 2
    return (
        max(0, int(x0 - px)),
        max(0, int(y0 - py)),
        min(w, int(x1 + px + 1)),
        min(h, int(y1 + py + 1)),
    )


# ------------------------------------------------------------- shared figure parts, dataset samples
def set_legend(fig: Figure, *extra: Any, **kw: Any) -> None:
    """The A/B legend below a figure (``extra`` handles after the two set patches)."""
    handles = [Patch(color=SET_COLOURS[s], label=SET_LABELS[s]) for s in ("A", "B")]
    opts = {"loc": "lower center", "ncol": 2 + len(extra), "frameon": False, **kw}
    fig.legend(handles=[*handles, *extra], **opts)


def _finish(fig: Figure, title: str | None = None, rect: Any = None, **kw: Any) -> Figure:
    if title:
        fig.suptitle(title, **kw)
    fig.tight_layout(**({} if rect is None else {"rect": rect}))
    return fig


def _show_image(ax: Any, image: Tensor, title: str, interpolation: str | None = "nearest") -> None:
    ax.imshow(to_uint8_image(image).permute(1, 2, 0).numpy(), interpolation=interpolation)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def show_samples(ds: Any, indices: Sequence[int], ncols: int = 4, scale: float = 3.0) -> Figure:
    """A grid of dataset samples with boxes, masks and A/B labels (``scale`` inches per panel), each
    titled ``image id N: a A, b B``, and the A/B legend."""
    indices = list(indices)
    if not indices:
        raise ValueError("show_samples: indices is empty; expected at least one dataset index")
    ncols = max(1, min(ncols, len(indices)))
    nrows = (len(indices) + ncols - 1) // ncols
    fig = Figure(figsize=(scale * ncols, scale * nrows + 0.5))
    a_labels = getattr(ds, "a_labels", None)
    for k, index in enumerate(indices):
        image, target = ds[index]
        up = label_upscale(*image.shape[-2:])
        drawn = draw_instances(image, target, ds.class_names, a_labels, upscale=up)
        sets = [set_of(x, a_labels) for x in target["labels"].tolist()]
        n_a = sets.count("A")
        title = f"image id {int(target['image_id'])}: {n_a} A, {len(sets) - n_a} B"
        _show_image(fig.add_subplot(nrows, ncols, k + 1), drawn, title, interpolation=None)
    set_legend(fig)
    return _finish(fig, rect=(0, 0.05, 1, 1))


# -------------------------------------------------------------------------------------- loss curves
#: The losses the training panel plots: the total, the mask loss and the box head's.
PANEL_LOSS_KEYS = ("loss", "loss_mask", "loss_classifier", "loss_box_reg")


def loss_figure(
    records: Sequence[Mapping[str, Any]],
    title: str = "Training loss",
    keys: Sequence[str] | None = PANEL_LOSS_KEYS,
    *,
    log_y: bool = False,
    figsize: tuple[float, float] = (6, 3.2),
) -> Figure:
    """Losses against iteration of engine records (lines without ``iter`` skipped), the total bold;
    ``keys`` ``None``: every ``loss*`` key; ``log_y``: log scale if all are positive. No records:
    empty axes saying "waiting"."""
    from matplotlib.ticker import MaxNLocator

    records = [r for r in records if "iter" in r]
    if keys is None:
        keys = list(dict.fromkeys(k for r in records for k in r if k.startswith("loss")))
    fig = Figure(figsize=figsize)
    ax = fig.add_subplot(1, 1, 1)
    positive = True
    for key in keys:
        pts = [(r["iter"], r[key]) for r in records if isinstance(r.get(key), int | float)]
        if pts:
            xs, ys = zip(*pts, strict=True)
            positive = positive and min(ys) > 0
            marker = "." if len(pts) < 30 else None
            ax.plot(xs, ys, marker=marker, label=key, linewidth=2.0 if key == "loss" else 1.0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="iteration", ylabel="loss (mean over the log interval)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8, loc="upper right")
        if log_y and positive:
            ax.set_yscale("log")
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
    return _finish(fig)


def plot_loss_curve(metrics_jsonl_path: str | Path, keys: Sequence[str] | None = None) -> Figure:
    """:func:`loss_figure` of a ``metrics.jsonl`` (every ``loss*`` key by default, log scale)."""
    path = Path(metrics_jsonl_path)
    title = f"Training losses ({path.parent.name or path.name})"
    return loss_figure(read_metrics(path), title, keys, log_y=True, figsize=(7, 4))


# ------------------------------------------ the walkthrough: feature maps, anchors, boxes, RoI maps
def _add_boxes(ax: Any, boxes: Tensor, colour: Any, width: float = 1.0, label: Any = None) -> None:
    """XYXY ``boxes`` ``(N, 4)`` as unfilled rectangles on ``ax`` (``label`` on the first)."""
    style = {"fill": False, "edgecolor": colour, "linewidth": width}
    for i, (x0, y0, x1, y1) in enumerate(boxes.detach().cpu().float().reshape(-1, 4).tolist()):
        ax.add_patch(
            Rectangle((x0, y0), x1 - x0, y1 - y0, label=label if i == 0 else None, **style)
        )


def plot_feature_maps(
    features: Mapping[str, Tensor], image: Tensor | None = None, image_size: int | None = None
) -> Figure:
    """One panel per feature map ``(B, C, H, W)``: the channel L2 norm of the first image's map,
    with its shape and stride (``image_size``: the input's side, default the image's)."""
    if not features:
        raise ValueError("plot_feature_maps: features is empty; expected at least one map")
    n = len(features) + (image is not None)
    fig = Figure(figsize=(2.8 * n, 3.2))
    if image is not None:
        _show_image(fig.add_subplot(1, n, 1), image, f"input {tuple(image.shape[-2:])}")
        image_size = image_size or int(image.shape[-1])
    for k, (name, fmap) in enumerate(features.items(), start=n - len(features) + 1):
        if fmap.dim() != 4:
            raise ValueError(
                f"plot_feature_maps: map {name!r} has shape {tuple(fmap.shape)}; expected (B, C, H, W)"
            )
        energy = fmap[0].detach().float().norm(dim=0).cpu()
        ax = fig.add_subplot(1, n, k)
        im = ax.imshow(energy.numpy(), cmap="magma")
        stride = f", stride {image_size // fmap.shape[-1]}" if image_size else ""
        ax.set_title(f"'{name}': {tuple(fmap.shape[1:])}{stride}", fontsize=9)
        ax.set(xlabel="x (cells)", ylabel="y (cells)")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="‖feature‖₂")
    return _finish(fig, "FPN feature maps: channel norm per location")


def anchors_at(anchors: Tensor, point: tuple[float, float]) -> Tensor:
    """The anchors ``(N, 4)`` whose centre is nearest to ``point`` ``(x, y)`` (all ratios there)."""
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    d = (centres - torch.tensor(point, dtype=anchors.dtype)).norm(dim=1)
    nearest = centres[int(d.argmin())]
    return anchors[(centres - nearest).abs().amax(dim=1) < 1e-3]


def plot_anchors(
    image: Tensor,
    anchors_per_level: Sequence[Tensor],
    level_names: Sequence[str],
    point: tuple[float, float] | None = None,
) -> Figure:
    """Per level (``(N_l, 4)`` XYXY anchors), the anchors centred nearest to ``point`` (default the
    image centre) on the image, titled with the level's anchor count and size."""
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
        ax.imshow(to_uint8_image(image).permute(1, 2, 0).numpy(), interpolation="nearest")
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
    title = f"Anchors centred nearest to ({point[0]:.0f}, {point[1]:.0f}) at each level"
    return _finish(fig, title)


def plot_rpn_targets(
    image: Tensor, anchors: Tensor, labels: Tensor, gt_boxes: Tensor, sampled: Tensor | None = None
) -> Figure:
    """RPN targets of ``anchors`` ``(N, 4)``: positives (``labels`` 1) as boxes, with the
    ``gt_boxes`` (left); centres of negatives (0; the ``sampled`` ones where given) and neutrals
    (< 0) (right)."""
    anchors = anchors.detach().cpu().float()
    labels = labels.detach().cpu()
    if anchors.shape[0] != labels.shape[0]:
        raise ValueError(
            f"plot_rpn_targets: {anchors.shape[0]} anchors but {labels.shape[0]} labels"
        )
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    pos, neg, neutral = labels == 1, labels == 0, labels < 0
    fig = Figure(figsize=(8, 4.3))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    _show_image(left, image, "Positive anchors (IoU ≥ 0.7 or best for a box)")
    _add_boxes(left, gt_boxes, "white", 2.0, label=f"ground truth ({len(gt_boxes)})")
    _add_boxes(left, anchors[pos], "lime", 0.8, label=f"positive anchors ({int(pos.sum())})")
    _show_image(right, image, "Negative (IoU < 0.3) and neutral anchors")
    shown_neg = neg & sampled.cpu().bool() if sampled is not None else neg
    what = "sampled negative" if sampled is not None else "negative"
    n_neutral, n_shown = int(neutral.sum()), int(shown_neg.sum())
    right.scatter(
        *centres[neutral].T, s=4, c="grey", alpha=0.5, label=f"neutral centres ({n_neutral})"
    )
    right.scatter(
        *centres[shown_neg].T, s=6, c="red", label=f"{what} centres ({n_shown} of {int(neg.sum())})"
    )
    _add_boxes(right, gt_boxes, "white", 2.0)
    for ax in (left, right):
        ax.legend(fontsize=7, loc="lower right")
    return _finish(fig, f"RPN targets for {len(anchors)} anchors")


def plot_box_sets(
    image: Tensor, box_sets: Mapping[str, Tensor], max_boxes: int = 100, title: str | None = None
) -> Figure:
    """One panel per named ``(N, 4)`` set of boxes on the same image (at most ``max_boxes`` drawn),
    titled with how many it holds and how many are drawn."""
    if not box_sets:
        raise ValueError("plot_box_sets: box_sets is empty; expected at least one set of boxes")
    n = len(box_sets)
    fig = Figure(figsize=(3.4 * n, 3.7))
    for k, (name, boxes) in enumerate(box_sets.items()):
        ax = fig.add_subplot(1, n, k + 1)
        boxes = boxes.detach().cpu().reshape(-1, 4)
        drawn = min(len(boxes), max_boxes)
        _show_image(ax, image, f"{name}\n{len(boxes)} boxes ({drawn} drawn)")
        _add_boxes(ax, boxes[:max_boxes], "yellow", 0.7)
    return _finish(fig, title)


def _map_scale(maps: Tensor) -> tuple[float, float, str | None]:
    """``(vmin, vmax, cmap)``: RGB, 0..1 grey (masks), 0..max magma (norms), or symmetric RdBu."""
    if maps.dim() == 4:
        return 0.0, 1.0, None
    if maps.min() >= 0 and maps.max() <= 1:
        return 0.0, 1.0, "gray"
    if maps.min() >= 0:
        return 0.0, float(maps.max()), "magma"
    lim = float(maps.abs().max()) or 1.0
    return -lim, lim, "RdBu_r"


def plot_maps_grid(
    rows: Mapping[str, Tensor], col_titles: Sequence[str] | None = None, title: str | None = None
) -> Figure:
    """A grid of small maps: one row per named ``(R, h, w)`` or RGB ``(R, 3, h, w)`` tensor (all
    the same ``R``), one column per RoI, a colour bar per non-RGB row."""
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
    fig = Figure(figsize=(1.6 * r + 1.6, 1.6 * len(rows) + 0.6))
    grid = fig.add_gridspec(len(rows), r + 1, width_ratios=[1] * r + [0.08])
    for i, (name, maps) in enumerate(rows.items()):
        maps = maps.detach().cpu().float()
        vmin, vmax, cmap = _map_scale(maps)
        for j in range(r):
            ax = fig.add_subplot(grid[i, j])
            shown = maps[j].permute(1, 2, 0).clamp(0, 1) if maps.dim() == 4 else maps[j]
            im = ax.imshow(shown.numpy(), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set(xticks=[], yticks=[])
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
            if i == 0 and col_titles is not None:
                ax.set_title(col_titles[j], fontsize=8)
        if maps.dim() != 4:
            fig.colorbar(im, cax=fig.add_subplot(grid[i, r]))
    return _finish(fig, title)


def _scatter_a_b(ax: Any, xy: Tensor, keep: Tensor, b: Tensor, **kw: Any) -> Any:
    """Points of ``keep``: set A as dots, set B (``b``) as outlined stars; the last collection."""
    out, label = None, kw.pop("label", None)
    for flag, marker, size in ((False, "o", 30), (True, "*", 160)):
        m = keep & (b == flag)
        if m.any():
            c = kw["c"][m].numpy() if isinstance(kw["c"], Tensor) else kw["c"]
            out = ax.scatter(
                *xy[m].T,
                **{**kw, "c": c},
                marker=marker,
                s=size,
                edgecolors="black" if flag else "none",
                label=None if flag else label,
            )
    return out


def plot_weight_pca(
    weights: Mapping[str, Tensor],
    names: Sequence[str],
    groups: Sequence[str],
    values: Sequence[float],
    is_b: Sequence[bool],
    value_label: str = "member",
) -> Figure:
    """Per-class weight vectors (``{title: (N, d)}``) by PCA in 2-D: a column per weight set, the
    top row coloured by group, the bottom by ``values``; set-B classes (``is_b``) are named stars."""
    n = len(names)
    if not (len(groups) == len(values) == len(is_b) == n):
        raise ValueError("plot_weight_pca: names, groups, values and is_b need the same length")
    for title, w in weights.items():
        if w.shape[0] != n:
            raise ValueError(f"plot_weight_pca: {title!r} has {w.shape[0]} rows for {n} names")
    cmap = matplotlib.colormaps["tab10"]
    group_colour = {g: cmap(i % 10) for i, g in enumerate(dict.fromkeys(groups))}
    vals, b = torch.tensor([float(v) for v in values]), torch.tensor([bool(x) for x in is_b])
    ncols = len(weights)
    fig = Figure(figsize=(4.6 * ncols, 8.2))
    for j, (title, w) in enumerate(weights.items()):
        xy, explained = pca_project(w, 2)
        for row in range(2):
            ax = fig.add_subplot(2, ncols, row * ncols + j + 1)
            if row == 0:
                for g, colour in group_colour.items():
                    sel = torch.tensor([x == g for x in groups])
                    _scatter_a_b(ax, xy, sel, b, c=[colour], label=g)
            else:
                everyone = torch.ones(len(b), dtype=torch.bool)
                sc = _scatter_a_b(
                    ax,
                    xy,
                    everyone,
                    b,
                    c=vals,
                    cmap="viridis",
                    vmin=float(vals.min()),
                    vmax=float(vals.max()),
                )
                if sc is not None:
                    fig.colorbar(sc, ax=ax, label=value_label)
            span = float((xy.max(0).values - xy.min(0).values).max().clamp(min=1e-9))
            bs = torch.nonzero(b).flatten().tolist()
            for i in bs:  # a label goes on the side away from a close B neighbour
                close = [j for j in bs if j != i and float((xy[i] - xy[j]).norm()) < 0.15 * span]
                dx = -38 if any(xy[j, 0] > xy[i, 0] for j in close) else 3
                dy = -10 if any(xy[j, 1] > xy[i, 1] for j in close) else 3
                ax.annotate(
                    names[i],
                    xy[i].tolist(),
                    fontsize=7,
                    xytext=(dx, dy),
                    textcoords="offset points",
                )
            ax.set_xlabel(f"PC1 ({100 * float(explained[0]):.0f} % of variance)")
            ax.set_ylabel(f"PC2 ({100 * float(explained[1]):.0f} %)")
            ax.set_title(f"{title}: by {'family' if row == 0 else value_label}", fontsize=9)
            ax.grid(True, alpha=0.3)
    handles, labels = fig.axes[0].get_legend_handles_labels()  # one legend, off the data
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=len(labels),
        fontsize=7,
        frameon=False,
        title="family (★ = set B)",
        title_fontsize=7,
    )
    return _finish(fig, rect=(0, 0.06, 1, 1))


def plot_class_bars(
    series: Mapping[str, Tensor],
    class_names: Sequence[str],
    a_labels: Sequence[int],
    ylabel: str,
    title: str | None = None,
    background: bool = True,
) -> Figure:
    """Per-class values, one panel per ``{title: (C,)}`` series (label 0, background, in grey, or
    left out with ``background=False``; A and B bars in their set colours). Non-negative series
    share one y scale from 0."""
    if not series:
        raise ValueError("plot_class_bars: series is empty")
    c = len(class_names)
    colours = ["lightgrey", *(SET_COLOURS[set_of(i, a_labels)] for i in range(1, c))]
    first = 0 if background else 1  # the first label drawn
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
        ax.bar(range(c - first), values[first:].numpy(), color=colours[first:])
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(c - first), class_names[first:], rotation=90, fontsize=7)
        ax.set(ylabel=ylabel, xlim=(-0.6, c - first - 0.4))
        if shared_top is not None:  # non-negative values: one y scale from 0, so panels compare
            ax.set_ylim(0, shared_top or 1.0)
        ax.grid(True, axis="y", alpha=0.3)
    set_legend(fig)
    return _finish(fig, title, rect=(0, 0.04, 1, 1))


def data_ylim(values: Sequence[float | None], top: float = 100.0) -> tuple[float, float]:
    """A y-range that starts where the data is: the finite ``values`` with a margin (at least 2
    points, or 15 % of their range), kept within ``[0, top]``; ``(0, top)`` when none is finite."""
    finite = [float(v) for v in values if v is not None and v == v]
    if not finite:
        return 0.0, top
    lo, hi = min(finite), max(finite)
    pad = max(2.0, 0.15 * (hi - lo))
    return max(0.0, lo - pad), min(top, hi + pad)


def plot_ap_comparison(
    results: Mapping[str, Mapping[str, Any]],
    metrics: Sequence[str] = ("AP", "AP75", "mIoU"),
    splits: Sequence[str] = ("A", "B"),
    title: str | None = None,
) -> Figure:
    """Mask metrics (``segm`` stats or ``mIoU``; NaN where absent) of ``{run name: evaluate()
    result}`` side by side: one panel per metric, bars per class set."""
    if not results:
        raise ValueError("plot_ap_comparison: results is empty; expected at least one run")
    names = list(results)
    fig = Figure(figsize=(max(4.0, 1.3 * len(names)) * len(metrics) * 0.8 + 1, 3.8))
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), k + 1)
        got = {s: [eval_metric(results[n], s, metric) for n in names] for s in splits}
        values = {s: [float("nan") if v is None else float(v) for v in vs] for s, vs in got.items()}
        set_bars(ax, names, values, rotation=20, ha="right", fontsize=8)
        ax.set_ylim(*data_ylim([v for vals in values.values() for v in vals]))
        ax.set_ylabel(f"mask {metric}" + (" (given true boxes)" if metric == "mIoU" else ""))
        ax.set_title(f"mask {metric}", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    return _finish(fig, title)


def plot_loss_terms(
    losses: Mapping[str, float | Tensor], title: str = "Losses of one step"
) -> Figure:
    """Horizontal bars of named loss terms (e.g. a torchvision detector's training dict)."""
    if not losses:
        raise ValueError("plot_loss_terms: losses is empty")
    names = list(losses)
    vals = [float(v.detach()) if isinstance(v, Tensor) else float(v) for v in losses.values()]
    fig = Figure(figsize=(6, 3))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(names, vals, color="tab:blue")
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:.3f}", va="center", fontsize=8)
    ax.set(xlabel="loss value", title=title, xlim=(0, max(vals) * 1.25 if max(vals) > 0 else 1))
    ax.invert_yaxis()
    return _finish(fig)


def plot_images(
    panels: Mapping[str, Tensor], title: str | None = None, scale: float = 3.0
) -> Figure:
    """``{panel title: (3, H, W) image}`` side by side (``scale`` inches per panel)."""
    if not panels:
        raise ValueError("plot_images: panels is empty; expected at least one image")
    n = len(panels)
    fig = Figure(figsize=(scale * n, scale + 0.4))
    for k, (name, image) in enumerate(panels.items()):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(
                f"plot_images: panel {name!r} has shape {tuple(image.shape)}; expected (3, H, W)"
            )
        _show_image(fig.add_subplot(1, n, k + 1), image, name)
    return _finish(fig, title)


def _set_label(label: int, class_names: Sequence[str], a_labels: Any) -> str:
    return f"{class_names[label]} [{set_of(label, a_labels)}]"


def _colour_ticks(labels: Sequence[Any], classes: Sequence[int], a_labels: Any) -> None:
    """Colour tick labels by the set of their class (``classes[i]`` < 1: black)."""
    for text, label in zip(labels, classes, strict=True):
        if label > 0:
            text.set_color(SET_COLOURS[set_of(label, a_labels)])


def plot_confusion(
    matrix: Tensor,
    class_names: Sequence[str],
    a_labels: Sequence[int],
    title: str | None = None,
    rows: Sequence[int] | None = None,
) -> Figure:
    """A :func:`box_confusion` matrix (rows: true class, columns: the detection's), cells shaded by
    row fraction with their count, ticks coloured by set, B rows outlined; ``rows``: the rows shown
    (default: every row with a count)."""
    c = len(class_names)
    if matrix.shape != (c, c):
        raise ValueError(
            f"plot_confusion: matrix has shape {tuple(matrix.shape)}; expected ({c}, {c})"
        )
    m = matrix.detach().cpu().long()
    rows = [r for r in range(c) if m[r].sum() > 0] if rows is None else [int(r) for r in rows]
    if not rows:
        raise ValueError("plot_confusion: no row to show (the matrix is all zeros)")
    sub = m[rows].float()
    frac = sub / sub.sum(1, keepdim=True).clamp(min=1)
    fig = Figure(figsize=(0.26 * c + 2.6, 0.26 * len(rows) + 2.4))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(frac.numpy(), cmap="Greys", vmin=0, vmax=1, aspect="auto")
    for i, j in torch.nonzero(sub).tolist():
        colour = "white" if frac[i, j] > 0.5 else "black"
        ax.text(j, i, str(int(sub[i, j])), ha="center", va="center", fontsize=6, color=colour)
    for i, r in enumerate(rows):  # outline the B rows
        if r > 0 and set_of(r, a_labels) == "B":
            edge = {"fill": False, "edgecolor": SET_COLOURS["B"], "linewidth": 1.2}
            ax.add_patch(Rectangle((-0.5, i - 0.5), c, 1, **edge))
    names = ["missed", *(_set_label(x, class_names, a_labels) for x in range(1, c))]
    ax.set_xticks(range(c), names, rotation=90, fontsize=7)
    ylabels = ["no object" if r == 0 else _set_label(r, class_names, a_labels) for r in rows]
    ax.set_yticks(range(len(rows)), ylabels, fontsize=7)
    _colour_ticks(ax.get_xticklabels(), range(c), a_labels)
    _colour_ticks(ax.get_yticklabels(), rows, a_labels)
    ax.set(xlabel="class of the detection that claims the object", ylabel="true class")
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label="fraction of the row")
    ax.set_title(title or "What the detector calls each object", fontsize=10)
    return _finish(fig)


def plot_overlaps(
    target: TensorDict,
    prediction: TensorDict,
    class_names: Sequence[str],
    a_labels: Sequence[int],
    score: float = 0.5,
    title: str | None = None,
    ax: Any = None,
) -> Figure:
    """Ground-truth instances (columns) vs detections with score >= ``score`` (rows, by score) of
    one image, shaded by box IoU; IoUs >= 0.1 written green (same class) or red. ``ax``: draw into
    it (its figure is returned)."""
    keep = kept_by_score(prediction, score)
    ious = gt_detection_ious(target, prediction, keep).T  # (D, G)
    gt_labels = target["labels"].detach().cpu().long().reshape(-1).tolist()
    det_labels = prediction["labels"].detach().cpu().long().reshape(-1)[keep].tolist()
    det_scores = prediction["scores"].detach().cpu().float().reshape(-1)[keep].tolist()
    if not gt_labels:
        raise ValueError("plot_overlaps: the target has no instance")
    own_figure = ax is None
    if own_figure:
        fig = Figure(figsize=(0.45 * len(gt_labels) + 3.2, 0.28 * max(1, len(det_labels)) + 2.2))
        ax = fig.add_subplot(1, 1, 1)
    shown = ious if len(det_labels) else torch.zeros((1, len(gt_labels)))
    # IoU 1 is a mid blue (vmax 1.5), so the IoU written on it stays readable
    ax.imshow(shown.numpy(), cmap="Blues", vmin=0, vmax=1.5, aspect="auto")
    box = {"facecolor": "white", "alpha": 0.8, "pad": 1.5, "edgecolor": "none"}
    style = {"ha": "center", "va": "center", "fontsize": 8, "fontweight": "bold", "bbox": box}
    for d, g in torch.nonzero(ious >= 0.1).tolist():
        colour = "darkgreen" if det_labels[d] == gt_labels[g] else "red"
        ax.text(g, d, f"{float(ious[d, g]):.2f}", color=colour, **style)
    xlabels = [_set_label(x, class_names, a_labels) for x in gt_labels]
    ax.set_xticks(range(len(gt_labels)), xlabels, rotation=90, fontsize=7)
    _colour_ticks(ax.get_xticklabels(), gt_labels, a_labels)
    ylabels = [
        f"{_set_label(x, class_names, a_labels)} {s:.2f}"
        for x, s in zip(det_labels, det_scores, strict=True)
    ]
    ax.set_yticks(range(len(det_labels)), ylabels, fontsize=7)
    _colour_ticks(ax.get_yticklabels(), det_labels, a_labels)
    ax.set_xlabel("ground truth")
    ax.set_ylabel(f"detections (score ≥ {score:.2f})" if det_labels else "no detection")
    ax.set_title(title or "Box IoU: green = same class, red = another class", fontsize=9)
    return _finish(ax.figure) if own_figure else ax.figure


def jpeg(fig: Figure, dpi: int = 80, quality: int = 70) -> Any:
    """A Figure as a JPEG ``IPython.display.Image`` (pictures of noisy images: smaller than PNG)."""
    from IPython.display import Image
    from PIL import Image as PILImage

    png = PILImage.open(io.BytesIO(figure_png(fig, dpi=dpi)))
    return Image(data=image_bytes(png, "jpeg", quality=quality), format="jpeg")


def render_sample(ds: Any, index: int, class_names: Sequence[str] | None = None) -> Tensor:
    """Dataset item ``index`` drawn with boxes, masks and A/B labels: uint8 ``(3, H, W)``."""
    image, target, names = dataset_item(ds, index, class_names)
    return draw_instances(image, target, names, getattr(ds, "a_labels", None))


def comparison_chart(runs: Sequence[Any]) -> Figure:
    """Bars per config (:func:`run_groups`), A vs B: mask AP (left) and mask mIoU given true boxes
    (right); several seeds: the mean, ± std error bars and a dot per seed."""
    groups = run_groups(runs)
    fig = Figure(figsize=(8, 3.2))
    panels = (
        ("mask AP", lambda run, s: run.mask_ap(s)),
        ("mask mIoU given true boxes", lambda run, s: run.mask_iou(s)),
    )
    ticks = [g[0][1].group_label for g in groups]  # a config's name (its seeds share a bar)
    for k, (name, getter) in enumerate(panels):
        ax = fig.add_subplot(1, 2, k + 1)
        stats = {s: [spread([getter(r, s) for _, r in g]) for g in groups] for s in SET_COLOURS}
        means = {s: [m or 0.0 for m, _, _ in v] for s, v in stats.items()}
        at = set_bars(ax, ticks, means, width=0.76, rotation=20, ha="right", fontsize=7)
        for s, v in stats.items():
            for x, (mean, std, vals) in zip(at[s], v, strict=True):
                if std is not None:
                    ax.errorbar(x, mean, yerr=std, color="black", capsize=3, linewidth=1)
                    ax.scatter([x] * len(vals), vals, s=8, color="black", zorder=3)
        seen = [v for per_set in stats.values() for _, _, vals in per_set for v in vals]
        seen += [
            m + k * sd for per_set in stats.values() for m, sd, _ in per_set if sd for k in (-1, 1)
        ]
        ax.set(ylabel=f"{name} (0-100)", ylim=data_ylim(seen))
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
        ax.set_xticks(xs, rows, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(f"{metric} on set {split} (0-100)")
        ax.set_title(f"set {split} {metric}: each seed and the mean", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return _finish(fig)


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
    if r.index not in cache:  # model None: the ground truth's masks
        if model is None:
            image, target = ds[r.index]
            cache[r.index] = (image, target, instances_with_mask(target), target["masks"])
        else:
            cache[r.index] = masks_for_true_boxes(model, ds, r.index)
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
    truth: bool = True,
) -> Figure:
    """The same instances (:func:`gallery_instances` of the first model's scores) under several
    models: one row per class, a block of ``per_class`` tiles per model (named above it), each the
    crop around the true box with that model's mask from it and its IoU. ``truth``: a first block,
    "ground truth", shows the instances' true masks."""
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
    blocks = (["ground truth"] if truth else []) + names  # the truth's block has no model
    gap = 0.25  # a narrow empty column between two blocks
    widths = [w for k in range(len(blocks)) for w in ([gap] if k else []) + [1.0] * per_class]
    fig = Figure(figsize=(1.25 * sum(widths) + 1.0, 1.3 * len(labels) + 0.9))
    grid = fig.add_gridspec(len(labels), len(widths), width_ratios=widths, wspace=0.08)
    caches: dict[str, dict[int, tuple]] = {name: {} for name in blocks}
    for row, label in enumerate(labels):
        shown = [r for r in chosen if r.label == label]
        for k, name in enumerate(blocks):
            for col in range(per_class):
                ax = fig.add_subplot(grid[row, k * (per_class + 1) + col])
                r = shown[col] if col < len(shown) else None
                first = k == 0 and col == 0
                model = models[name] if name in scores else None
                _gallery_tile(ax, model, ds, r, col, caches[name], label if first else None)
                if r is not None and name in scores:  # IoU on 0-100, as the tables
                    ax.set_title(f"IoU {100 * scores[name][(r.index, r.instance)]:.0f}", fontsize=7)
    fig.suptitle(title or "Predicted masks from true boxes: the same instances, per model")
    top = 1 - 1.0 / fig.get_figheight()
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.02, top=top)
    for k, name in enumerate(blocks):  # each block's name above its columns
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
        image, target, inst, probs = masks_for_true_boxes(model, ds, r.index)
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
    preds = {
        n: predictions[n] if n in predictions else detections(m, ds, indices)
        for n, m in models.items()
    }
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


def plot_interpolation_probe(rows: Sequence[dict[str, Any]], title: str | None = None) -> Any:
    """Horizontal bars of B mIoU per guess (:func:`interpolation_probe` rows), grouped by kind:
    the model's own weights, guesses that use the class structure (family, member), and guesses
    read off ``w_det``. A's mIoU, the same for every guess, is the dashed line."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from mxr.report import SET_COLOURS

    if not rows:
        raise ValueError("plot_interpolation_probe: rows is empty; expected interpolation_probe()")
    kinds = {
        "own weights": ("#333333", "own weights (trained with B masks)"),
        "mean of": ("#9e9e9e", "from the class structure (set A only)"),
        "w_det": ("#8e44ad", "read off w_det (set A pairs only)"),
    }
    if any("class embedding" in r["guess"] for r in rows):
        kinds["embedding"] = ("#2a9d8f", "read off the class embedding (set A pairs only)")

    def kind(label: str) -> str:
        if "w_det" in label:
            return "w_det"
        if "class embedding" in label:
            return "embedding"
        return "own weights" if label.startswith("own") else "mean of"

    fig = Figure(figsize=(7.5, 0.42 * len(rows) + 2.2))
    ax = fig.add_subplot(1, 1, 1)
    ys = list(range(len(rows)))[::-1]
    vals = [r["B"] for r in rows]
    ax.barh(ys, vals, color=[kinds[kind(r["guess"])][0] for r in rows])
    for y, v in zip(ys, vals, strict=True):
        ax.text(v + 0.3, y, f"{v:.1f}", va="center", fontsize=8)
    ax.axvline(rows[0]["A"], ls="--", lw=1, color=SET_COLOURS["A"])
    ax.set_yticks(ys, [r["guess"] for r in rows], fontsize=8)
    ax.set_xlim(max(0.0, min(vals) - 10), max(max(vals), rows[0]["A"]) + 4)
    ax.set_xlabel("B mask IoU given the true boxes (%)")
    handles = [Patch(color=c, label=lab) for c, lab in kinds.values()]
    handles.append(Patch(color=SET_COLOURS["A"], label="set A mIoU (unchanged)"))
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.4, -0.16), ncol=2)
    ax.set_title(title or "What could τ gain? B mask weights guessed from set A")
    fig.tight_layout()
    return fig


def plot_member_sweep(
    sweeps: dict[str, Tensor],
    image: Tensor,
    box: Tensor,
    member_names: Sequence[str],
    *,
    b_names: Sequence[str] = (),
    truth: Tensor | None = None,
    title: str | None = None,
) -> Any:
    """One row per model (``{title: (L, H, W) member_sweep probabilities}``), one column per
    member (``member_names``, B marked): each mask cropped to ``box``; ``truth`` ``(H, W)`` is
    outlined, with each mask's IoU."""
    from matplotlib.figure import Figure

    from mxr.evaluation import mask_iou
    from mxr.report import SET_COLOURS

    if not sweeps:
        raise ValueError("plot_member_sweep: sweeps is empty; expected {model title: masks}")
    shapes = {name: tuple(p.shape) for name, p in sweeps.items()}
    if any(s[0] != len(member_names) or len(s) != 3 for s in shapes.values()):
        raise ValueError(
            f"plot_member_sweep: sweeps have shapes {shapes}; expected ({len(member_names)}, H, W)"
        )
    c0, r0, c1, r1 = crop_box(box, *image.shape[-2:], pad=0.2)
    ncols = len(member_names) + 1
    fig = Figure(figsize=(1.75 * ncols + 0.4, 2.05 * len(sweeps) + 0.7))
    for i, (model_title, probs) in enumerate(sweeps.items()):
        ax = fig.add_subplot(len(sweeps), ncols, i * ncols + 1)
        ax.imshow(image[:, r0:r1, c0:c1].permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        ax.set_ylabel(model_title, fontsize=8)
        ax.set_title(
            "the object" + ("\n(true mask outlined)" if truth is not None else ""), fontsize=8
        )
        panels = [ax]
        for k, name in enumerate(member_names):
            ax = fig.add_subplot(len(sweeps), ncols, i * ncols + k + 2)
            ax.imshow(probs[k, r0:r1, c0:c1].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            s = "B" if name in b_names else "A"
            label = f"{name} [{s}]"
            if truth is not None:
                iou = float(mask_iou((probs[k : k + 1] > 0.5).cpu(), truth[None].cpu()))
                label += f"\nIoU {100 * iou:.0f}"
            ax.set_title(label, fontsize=8, color=SET_COLOURS[s])
            panels.append(ax)
        for ax in panels:
            ax.set_xticks([])
            ax.set_yticks([])
            if truth is not None:
                crop = truth[r0:r1, c0:c1].float().cpu().numpy()
                ax.contour(crop, levels=[0.5], colors=[SET_COLOURS["B"]], linewidths=1)
    fig.suptitle(title or "One RoI segmented with each family member's mask weights", fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------
# the rows that compare τ's inputs, beside the controls
# --------------------------------------------------------------------------------------------------
def plot_transfer_rows(
    labels: dict[str, str],
    published: dict[str, Any] | None = None,
    notebook: dict[str, Any] | None = None,
    *,
    metrics: Sequence[str] = ("mIoU", "AP75"),
    split: str = "B",
    control: str = "agnostic_mlp",
    published_label: str = "published: mean ± std over seeds",
    notebook_label: str = "this notebook's run",
    title: str | None = None,
) -> Any:
    """Set-``split`` mask metrics (``mIoU`` or ``segm`` stats) of the rows ``{row: label}``, one
    panel per metric: ``published`` rows (mean ± std) as dots with error bars, the ``notebook``'s
    own ``{row: evaluate() result}`` as hollow diamonds, the ``control`` row as a dashed line.
    mIoU axes span the values; AP axes start at 0."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from mxr.report import SET_COLOURS, eval_metric

    if not labels:
        raise ValueError("plot_transfer_rows: labels is empty; expected {row: label}")
    if published is None and notebook is None:
        raise ValueError("plot_transfer_rows: give published rows, notebook runs, or both")
    published, notebook = published or {}, notebook or {}
    rows = list(labels)
    ys = list(range(len(rows)))[::-1]
    fig = Figure(figsize=(4.2 * len(metrics) + 2.4, 0.36 * len(rows) + 1.9))
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), k + 1)
        task = "mask_iou" if metric == "mIoU" else "segm"
        seen = []
        for row, y in zip(rows, ys, strict=True):
            mean = eval_metric(published.get(row), split, metric)
            if mean is not None:
                std = published[row][split][task].get(f"{metric}_std") or 0.0
                ax.errorbar(mean, y, xerr=std, fmt="o", color=SET_COLOURS[split], capsize=3, ms=5)
                seen += [mean - std, mean + std]
            own = eval_metric(notebook.get(row), split, metric)
            if own is not None:
                ax.scatter([own], [y], marker="D", s=30, facecolors="none", edgecolors="black")
                seen.append(own)
        ref = eval_metric(published.get(control), split, metric)
        ref = ref if ref is not None else eval_metric(notebook.get(control), split, metric)
        if ref is not None:
            ax.axvline(ref, ls="--", lw=1, color="grey")
        if seen and metric == "mIoU":
            ax.set_xlim(max(0.0, min(seen) - 3), min(100.0, max(seen) + 3))
        else:
            ax.set_xlim(0, max([1.0, *seen]) * 1.1)
        ax.set_yticks(ys, [labels[r] for r in rows] if k == 0 else [""] * len(rows), fontsize=8)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        given = " given the true boxes" if metric == "mIoU" else ""
        ax.set_xlabel(f"set {split} mask {metric}{given}", fontsize=8)
        ax.grid(True, axis="x", alpha=0.3)
    handles = []  # a legend entry only for what is drawn
    if published:
        handles.append(
            Line2D([], [], marker="o", ls="", color=SET_COLOURS[split], label=published_label)
        )
    if notebook:
        handles.append(
            Line2D([], [], marker="D", ls="", mfc="none", mec="black", label=notebook_label)
        )
    handles.append(
        Line2D([], [], ls="--", color="grey", label=f"control: {labels.get(control, control)}")
    )
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(title or f"Set {split}: τ's inputs beside the controls", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


#: The small course images are drawn at twice their size in the side-by-side and threshold
#: figures, so that the labels' fixed-size font fits beside the objects (the panels are ~3 inches).
_LABEL_UP = 2


def transfer_order_figure(
    rows: Sequence[Mapping[str, Any]], metric: str = "B_mIoU", title: str | None = None
) -> Figure:
    """τ's transfer against how well its input orders the classes: one point per input (x: the
    mean :func:`mxr.course.probes.distance_from_adjacent` of its rows, 0 = interpolates; y:
    ``metric``'s mean ± std over seeds, a small dot per seed), the noisy embeddings joined in order
    of σ, and a row without τ input (the class-agnostic control) as a dashed line.
    ``rows``: ``docs/results_embed_noise.json``'s ``rows``."""
    if not rows:
        raise ValueError(
            "transfer_order_figure: rows is empty; expected docs/results_embed_noise.json"
        )
    fig = Figure(figsize=(7.2, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    curve = sorted((r for r in rows if r.get("sigma") is not None), key=lambda r: float(r["sigma"]))
    ax.plot(
        [r["distance_mean"] for r in curve],
        [r[f"{metric}_mean"] for r in curve],
        color=SET_COLOURS["B"],
        linewidth=1,
        label="ideal embedding, then more noise (σ)",
    )
    for r in rows:
        if r["distance_mean"] is None:  # no τ input: drawn below as a level to beat
            continue
        x, y = r["distance_mean"], r[f"{metric}_mean"]
        colour = SET_COLOURS["B"] if r.get("sigma") is not None else "black"
        ax.errorbar(x, y, yerr=r.get(f"{metric}_std"), fmt="o", color=colour, capsize=3)
        ax.scatter(r["distance"], r[metric], s=6, color=colour, alpha=0.5)
        ax.annotate(r["label"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.set(
        xlabel="distance of a B class's input from its neighbours' mean / its length (0: between them)",
        ylabel=f"B {metric.split('_')[1]} (test, given true boxes)"
        if metric == "B_mIoU"
        else f"B {metric.split('_')[1]} (test)",
        title=title or f"B {metric.split('_')[1]} against how well τ's input orders the classes",
    )
    left = ax.get_xlim()[0]
    for r in rows:
        if r["distance_mean"] is None:
            ax.axhline(r[f"{metric}_mean"], color="grey", linestyle="--", linewidth=1)
            ax.text(left, r[f"{metric}_mean"], f" {r['label']}", fontsize=7, va="bottom")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    return _finish(fig)
