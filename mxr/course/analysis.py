"""Analysis for the course's figures: numbers about models, datasets and runs, nothing drawn
(:mod:`mxr.course.figures` draws them). Per-class confusion of the detector, the holes a mask
encloses, PCA of class weights, the worst instances, runs grouped by config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from mxr.evaluation import InstanceIoU

#: A target or a prediction: ``boxes``, ``labels`` and maybe ``scores``, ``masks``.
TensorDict = Mapping[str, Tensor]


def set_of(label: int, a_labels: Sequence[int] | None) -> str:
    """``"A"`` or ``"B"``: the set of a class label (``a_labels`` ``None``: every class is A)."""
    return "A" if a_labels is None or int(label) in {int(x) for x in a_labels} else "B"


# ----------------------------------------------------------------------------- dataset browser
def dataset_item(
    ds: Any, index: int, class_names: Sequence[str] | None
) -> tuple[Tensor, dict, list]:
    """Dataset item ``index`` (checked) and the class names to label it with."""
    if not 0 <= int(index) < len(ds):
        raise IndexError(f"index={index} is out of range; the dataset has {len(ds)} images")
    image, target = ds[index]
    return image, target, list(class_names) if class_names is not None else list(ds.class_names)


def run_groups(runs: Sequence[Any]) -> list[list[tuple[int, Any]]]:
    """The evaluated runs grouped by config apart from the seed, in order of first appearance:
    ``[(number from 1, run), ...]`` per group; of one config and seed only the last run counts."""
    groups: dict[str, dict[int, tuple[int, Any]]] = {}
    for i, run in enumerate(runs, start=1):
        if run.eval is not None:
            groups.setdefault(run.config_key, {})[run.seed] = (i, run)
    return [sorted(g.values(), key=lambda pair: pair[0]) for g in groups.values()]


def spread(values: Sequence[float | None]) -> tuple[float | None, float | None, list[float]]:
    """``(mean, sample std or None for one value, the values)`` of the values that are not None."""
    import statistics

    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, None, []
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None, vals


# ------------------------------------------------ weight PCA, per-class bars, AP and loss summaries
def pca_project(x: Tensor, k: int = 2) -> tuple[Tensor, Tensor]:
    """Rows ``(N, d)`` on their first ``k`` principal components (``torch.pca_lowrank``; signs
    fixed: largest loading positive): ``(N, k)`` coordinates, ``(k,)`` explained variances (0-1)."""
    if x.dim() != 2:
        raise ValueError(f"pca_project: x has shape {tuple(x.shape)}; expected (N, d)")
    if not 1 <= k <= min(x.shape):
        raise ValueError(f"pca_project: k={k} is not valid for x of shape {tuple(x.shape)}")
    x = x.detach().double()
    with torch.random.fork_rng(
        devices=[]
    ):  # pca_lowrank draws a random basis: keep the caller's RNG
        torch.manual_seed(0)
        _, s, v = torch.pca_lowrank(x, q=min(x.shape), center=True)
    v = v[:, :k]
    v = v * torch.sign(v.gather(0, v.abs().argmax(0, keepdim=True)))  # largest loading positive
    var = s**2
    coords = (x - x.mean(0, keepdim=True)) @ v
    return coords.float(), (var[:k] / var.sum().clamp(min=1e-12)).float()


def group_separation(x: Tensor, groups: Sequence[str]) -> float:
    """Mean distance between rows ``(N, d)`` of different groups over mean distance within a group
    (above 1: groups are tighter than the spread between them)."""
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


# ------------------------------- what the detector calls each object: per image, and over a split
def kept_by_score(prediction: TensorDict, score: float) -> Tensor:
    """Indices of the detections with score >= ``score``, highest score first."""
    scores = prediction["scores"].detach().cpu().float().reshape(-1)
    order = torch.argsort(scores, descending=True, stable=True)
    return order[scores[order] >= score]


def gt_detection_ious(target: TensorDict, prediction: TensorDict, keep: Tensor) -> Tensor:
    """``(G, D)`` box IoU of the ground-truth boxes with the kept detections."""
    from torchvision.ops import box_iou

    gt = target["boxes"].detach().cpu().float().reshape(-1, 4)
    det = prediction["boxes"].detach().cpu().float().reshape(-1, 4)[keep]
    if len(gt) == 0 or len(det) == 0:
        return torch.zeros((len(gt), len(det)))
    return box_iou(gt, det)


def box_confusion(
    predictions: Sequence[TensorDict],
    targets: Sequence[TensorDict],
    num_classes: int,
    iou: float = 0.5,
    score: float = 0.5,
) -> Tensor:
    """What the detector calls each true object: a ``(C, C)`` count matrix ``m``. Each true box goes
    to the highest-scoring detection (score >= ``score``) with box IoU >= ``iou``; ``m[g, p]``:
    true objects of class ``g`` labelled ``p``; column 0: missed objects, row 0: unmatched
    detections."""
    if len(predictions) != len(targets):
        raise ValueError(
            f"box_confusion: {len(predictions)} predictions for {len(targets)} targets"
        )
    if not 0.0 < iou <= 1.0:
        raise ValueError(f"box_confusion: iou={iou} is not valid; expected 0 < iou <= 1")
    m = torch.zeros((num_classes, num_classes), dtype=torch.long)
    for pred, target in zip(predictions, targets, strict=True):
        keep = kept_by_score(pred, score)
        gt_labels = target["labels"].detach().cpu().long().reshape(-1)
        det_labels = pred["labels"].detach().cpu().long().reshape(-1)[keep]
        bad = [int(x) for x in torch.cat([gt_labels, det_labels]) if not 0 < int(x) < num_classes]
        if bad:
            raise ValueError(
                f"box_confusion: label {bad[0]} is not valid; expected 1..{num_classes - 1}"
            )
        hits = gt_detection_ious(target, pred, keep) >= iou  # (G, D), detections in score order
        for g, label in enumerate(gt_labels.tolist()):
            found = torch.nonzero(hits[g]).flatten()
            m[label, int(det_labels[found[0]]) if len(found) else 0] += 1
        for d in torch.nonzero(~hits.any(0)).flatten().tolist():
            m[0, int(det_labels[d])] += 1
    return m


def confusion_outcomes(
    matrix: Tensor, labels: Sequence[int], related: Mapping[int, Sequence[int]]
) -> dict[str, int]:
    """Sum the rows ``labels`` of a :func:`box_confusion` matrix by what the objects were called:
    ``{"own", "related" (a class in ``related[g]``), "other", "missed"}`` counts."""
    c = matrix.shape[0]
    out = {"own": 0, "related": 0, "other": 0, "missed": 0}
    for g in labels:
        if not 0 < int(g) < c:
            raise ValueError(f"confusion_outcomes: label {g} is not valid; expected 1..{c - 1}")
        near = {int(x) for x in related.get(int(g), ())}
        for p, n in enumerate(matrix[int(g)].tolist()):
            kind = (
                "missed"
                if p == 0
                else "own"
                if p == int(g)
                else "related"
                if p in near
                else "other"
            )
            out[kind] += int(n)
    return out


def mask_holes(mask: Tensor) -> Tensor:
    """The background pixels a mask encloses: ``(H, W)`` bool -> ``(H, W)`` bool (no 4-connected
    background path to the border: a ring's centre, not the gap between a fork's prongs)."""
    if mask.dim() != 2:
        raise ValueError(f"mask_holes: mask has shape {tuple(mask.shape)}; expected (H, W)")
    free = ~mask.detach().cpu().bool()
    reached = torch.zeros_like(free)
    reached[0, :], reached[-1, :], reached[:, 0], reached[:, -1] = (
        free[0, :],
        free[-1, :],
        free[:, 0],
        free[:, -1],
    )
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


# ----------------------------------------------------------------------------- inspecting masks
def failure_cases(ious: Sequence[InstanceIoU], k: int = 6) -> list[InstanceIoU]:
    """The ``k`` instances with the lowest IoU (ties: dataset order)."""
    return sorted(ious, key=lambda r: (r.iou, r.index, r.instance))[:k]


def gallery_instances(
    ious: Sequence[InstanceIoU], labels: Sequence[int], per_class: int = 4
) -> list[InstanceIoU]:
    """The first ``per_class`` instances of each class in ``labels``, in dataset order, class after
    class (models scored on the same dataset give the same instances)."""
    if per_class < 1:
        raise ValueError(f"gallery_instances: per_class={per_class} is not valid; expected >= 1")
    return [r for label in labels for r in [x for x in ious if x.label == int(label)][:per_class]]


def detection_counts(
    predictions: Sequence[TensorDict],
    thresholds: Sequence[float],
    a_labels: Sequence[int] | None = None,
) -> dict[str, list[int]]:
    """Detections kept at each score threshold, summed over images: ``{"A": [...], "B": [...]}``."""
    out = {"A": [0] * len(thresholds), "B": [0] * len(thresholds)}
    for p in predictions:
        scores = p["scores"].float()
        is_a = torch.tensor(
            [set_of(x, a_labels) == "A" for x in p["labels"].tolist()], dtype=torch.bool
        )
        for k, t in enumerate(thresholds):
            keep = scores >= t
            out["A"][k] += int((keep & is_a).sum())
            out["B"][k] += int((keep & ~is_a).sum())
    return out


def period2_share(maps: Tensor) -> Tensor:
    """How much of each map's variation repeats every 2 pixels: the deconvolution's checkerboard.

    ``maps`` is ``(..., H, W)`` with even ``H`` and ``W``. Returns ``(...)``: the share of each map's
    energy around its mean that lies at the three period-2 frequencies of its 2-D Fourier transform,
    ``(H/2, 0)``, ``(0, W/2)`` and ``(H/2, W/2)``. 0 for a map that varies smoothly, 1 for a pure
    2×2 pattern tiled over the map (what a stride-2, kernel-2 transposed convolution draws from a
    constant input)."""
    h, w = maps.shape[-2:]
    if h % 2 or w % 2:
        raise ValueError(f"period2_share needs even map sizes, got {h}×{w}")
    centred = maps.double() - maps.double().mean((-2, -1), keepdim=True)
    power = torch.fft.fft2(centred).abs() ** 2
    nyquist = power[..., h // 2, 0] + power[..., 0, w // 2] + power[..., h // 2, w // 2]
    return (nyquist / power.sum((-2, -1)).clamp(min=1e-12)).float()
