"""Drawing helpers that return images (uint8 tensors) and matplotlib Figures; they never call ``show``.

Set A (classes trained with masks) is drawn in warm colours, set B (boxes only) in cool colours, and
every label says which set its class is in, e.g. ``"fork-3 [B] 0.91"``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

A_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 140, 0),
    (255, 60, 60),
    (255, 210, 0),
    (230, 90, 160),
)
B_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 200, 255),
    (60, 120, 255),
    (0, 230, 160),
    (150, 110, 255),
)


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
) -> torch.Tensor:
    """Draw boxes, masks and ``name [A|B] score`` labels on an image.

    Args:
        image: ``(3, H, W)`` float in [0, 1] or uint8.
        target_or_prediction: a dataset target (``boxes`` (N, 4), ``labels`` (N,), optional ``masks``
            uint8 (M, H, W) with ``has_mask`` (N,)) or a model prediction (``boxes``, ``labels``,
            ``scores`` (N,), ``masks`` float (N, 1, H, W)); predictions below ``score_thresh`` are skipped.
        class_names: index = label.
        a_labels: labels in set A; ``None`` treats every class as A.

    Returns:
        uint8 ``(3, H, W)``: A instances in warm colours, B instances in cool colours.
    """
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
    idx = [i for i in range(n) if keep[i]]
    if not idx:
        return canvas
    if masks is not None:
        sel = [i for i in idx if masks[i].any()]
        if sel:
            canvas = draw_segmentation_masks(
                canvas, masks[sel], alpha=0.45, colors=[colours[i] for i in sel]
            )
    return draw_bounding_boxes(
        canvas,
        boxes[idx],
        labels=[texts[i] for i in idx],
        colors=[colours[i] for i in idx],
        width=1,
    )


def _legend(fig: Figure) -> None:
    fig.legend(
        handles=[
            Patch(color=[c / 255 for c in A_COLOURS[0]], label="set A (masks in training)"),
            Patch(color=[c / 255 for c in B_COLOURS[0]], label="set B (boxes only)"),
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
        drawn = draw_instances(image, target, ds.class_names, a_labels)
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


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``metrics.jsonl`` file (one JSON object per line), naming the file and line on errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file not found: {path}")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {n} is not valid JSON ({e})") from e
        if isinstance(row, dict):
            rows.append(row)
    return rows


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
