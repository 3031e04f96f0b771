"""Evaluation: COCO mask and box AP per class set (A, B, all), and mask IoU given true boxes.

The headline of the paper is mask AP on set B, the classes trained without masks. One COCOeval pass
per task (``segm``, ``bbox``) computes the per-image matches for every category; the summary is then
accumulated three times, with ``params.catIds`` restricted to A, to B and to all categories.

Results are nested dicts in 0–100::

    {"A": {"segm": {"AP": 41.2, "AP50": ..., "AP75": ..., "APs": ..., "APm": ..., "APl": ...},
           "bbox": {...}, "mask_iou": {"mIoU": ...}},
     "B": {...}, "all": {...}}

A metric is ``None`` when the set has no ground truth for it (COCOeval's ``-1``). ``mask_iou`` (only
when requested) is the mean IoU of the predicted mask of each ground-truth instance, predicted from
its true box and true class: it isolates the mask head from detection.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor, nn

from mxr.data.coco import encode_rle

# format_table and the set/statistic names live in mxr.report; re-exported here for old imports
from mxr.report import SETS, STAT_NAMES, TASKS, format_table  # noqa: F401


# --------------------------------------------------------------------------------------------------
# model outputs -> COCO results
# --------------------------------------------------------------------------------------------------
def _cat_id(label_to_cat_id: Mapping[int, int] | Sequence[int], label: int) -> int:
    try:
        return int(label_to_cat_id[label])
    except (KeyError, IndexError) as e:
        raise ValueError(
            f"predicted label {label} has no COCO category id in the dataset's label_to_cat_id map"
        ) from e


def encode_masks(masks: Tensor, threshold: float = 0.5) -> list[dict[str, Any]]:
    """Binarise mask probabilities and encode them as COCO RLE (``counts`` as ``str``, JSON-ready).

    Args:
        masks: ``(N, 1, H, W)`` or ``(N, H, W)`` probabilities in [0, 1].
        threshold: a pixel is foreground when its probability is ``> threshold``.

    Returns:
        ``N`` dicts ``{"size": [H, W], "counts": str}``.
    """
    if masks.dim() == 4:
        masks = masks[:, 0]
    if masks.dim() != 3:
        raise ValueError(f"masks must be (N, 1, H, W) or (N, H, W), got shape {tuple(masks.shape)}")
    return encode_rle((masks > threshold).cpu().numpy())


def outputs_to_coco(
    outputs: Sequence[Mapping[str, Tensor]],
    image_ids: Sequence[int],
    label_to_cat_id: Mapping[int, int] | Sequence[int],
    *,
    mask_threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """Convert torchvision detection outputs into COCO result dicts (bbox and segmentation together).

    Args:
        outputs: per image ``{"boxes": (N, 4) XYXY, "labels": (N,), "scores": (N,),
            "masks": (N, 1, H, W) probabilities}`` (``masks`` optional).
        image_ids: the COCO image id of each output.
        label_to_cat_id: contiguous label -> COCO category id.
        mask_threshold: probability above which a mask pixel is foreground.

    Returns:
        A list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score", "segmentation"}``.
    """
    if len(outputs) != len(image_ids):
        raise ValueError(f"got {len(outputs)} outputs for {len(image_ids)} image ids")
    results: list[dict[str, Any]] = []
    for out, image_id in zip(outputs, image_ids, strict=True):
        boxes = out["boxes"].detach().float().cpu()
        if boxes.numel() == 0:
            continue
        xywh = boxes.clone()
        xywh[:, 2:] -= xywh[:, :2]
        labels = out["labels"].tolist()
        scores = out["scores"].tolist()
        rles = encode_masks(out["masks"], mask_threshold) if "masks" in out else None
        for i, (label, score) in enumerate(zip(labels, scores, strict=True)):
            r = {
                "image_id": int(image_id),
                "category_id": _cat_id(label_to_cat_id, int(label)),
                "bbox": [round(float(v), 2) for v in xywh[i]],
                "score": float(score),
            }
            if rles is not None:
                r["segmentation"] = rles[i]
            results.append(r)
    return results


# --------------------------------------------------------------------------------------------------
# COCOeval per class set
# --------------------------------------------------------------------------------------------------
def _stat(v: float) -> float | None:
    v = float(v)
    return None if (v < 0 or math.isnan(v)) else round(100.0 * v, 3)


def _restrict(e: COCOeval, cat_ids: Sequence[int]) -> COCOeval:
    """A shallow copy of an evaluated COCOeval whose accumulate/summarize see only ``cat_ids``."""
    pe = e._paramsEval
    all_ids = list(pe.catIds)
    n_area, n_img = len(pe.areaRng), len(pe.imgIds)
    keep = [all_ids.index(c) for c in sorted(cat_ids)]
    sub = copy.copy(e)
    sub.evalImgs = [e.evalImgs[k * n_area * n_img + i] for k in keep for i in range(n_area * n_img)]
    sub._paramsEval = copy.deepcopy(pe)
    sub._paramsEval.catIds = sorted(cat_ids)
    sub.params = copy.deepcopy(e.params)
    sub.params.catIds = sorted(cat_ids)
    sub.eval = {}
    sub.stats = []
    return sub


def coco_evaluate(
    coco_gt: COCO,
    results: list[dict[str, Any]],
    cat_sets: Mapping[str, Sequence[int]],
    *,
    image_ids: Sequence[int] | None = None,
    tasks: Iterable[str] = TASKS,
) -> dict[str, dict[str, dict[str, float | None]]]:
    """Run COCOeval once per task and summarise it per category set.

    Args:
        coco_gt: ground truth (with masks for every class that is to be scored on ``segm``).
        results: COCO result dicts (see :func:`outputs_to_coco`); may be empty.
        cat_sets: set name -> COCO category ids, e.g. ``{"A": [...], "B": [...], "all": [...]}``.
        image_ids: images to score (default: every image in ``coco_gt``).
        tasks: ``"segm"`` and/or ``"bbox"``.

    Returns:
        ``{set: {task: {"AP", "AP50", "AP75", "APs", "APm", "APl"}}}`` in 0–100; ``None`` where the
        set has no ground truth.
    """
    tasks = list(tasks)
    for t in tasks:
        if t not in TASKS:
            raise ValueError(f"task {t!r} is not valid; expected one of {', '.join(TASKS)}")
    img_ids = sorted(int(i) for i in (image_ids if image_ids is not None else coco_gt.getImgIds()))
    all_cat_ids = sorted({int(c) for ids in cat_sets.values() for c in ids})
    unknown = sorted(set(all_cat_ids) - set(coco_gt.getCatIds()))
    if unknown:
        raise ValueError(f"category ids {unknown} are not in the ground-truth annotations")
    out: dict[str, dict[str, dict[str, float | None]]] = {name: {} for name in cat_sets}
    for task in tasks:
        n_gt = {
            name: len(coco_gt.getAnnIds(imgIds=img_ids, catIds=list(ids), iscrowd=False))
            for name, ids in cat_sets.items()
        }
        # segm results without "bbox" (else loadRes takes the box area as the mask area), bbox
        # results without "segmentation" (smaller copies).
        drop = "bbox" if task == "segm" else "segmentation"
        task_results = [
            {k: v for k, v in r.items() if k != drop}
            for r in results
            if task != "segm" or "segmentation" in r
        ]
        if not task_results or not all_cat_ids:
            for name in cat_sets:
                value = 0.0 if n_gt[name] and cat_sets[name] else None
                out[name][task] = dict.fromkeys(STAT_NAMES, value)
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes(task_results)
            e = COCOeval(coco_gt, coco_dt, iouType=task)
            e.params.imgIds = img_ids
            e.params.catIds = all_cat_ids
            e.evaluate()
            for name, ids in cat_sets.items():
                if not ids:
                    out[name][task] = dict.fromkeys(STAT_NAMES, None)
                    continue
                sub = _restrict(e, ids)
                sub.accumulate()
                sub.summarize()
                out[name][task] = {
                    k: _stat(v) for k, v in zip(STAT_NAMES, sub.stats[:6], strict=True)
                }
    return out


# --------------------------------------------------------------------------------------------------
# mask IoU given ground-truth boxes (isolates the mask head)
# --------------------------------------------------------------------------------------------------
def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def _mxr_model(model: nn.Module) -> nn.Module:
    m = _unwrap(model)
    if not hasattr(m, "detect_and_mask_boxes"):
        raise TypeError(
            f"mask IoU given true boxes needs an mxr model (mxr.build_model), got {type(m).__name__}"
        )
    return m


def masks_from_boxes(
    model: nn.Module,
    images: Sequence[Tensor],
    boxes: Sequence[Tensor],
    labels: Sequence[Tensor],
) -> list[Tensor]:
    """The model's mask probabilities for given boxes and classes, per image ``(N, H, W)`` pasted
    into the image: :meth:`mxr.model.MaskXRCNN.masks_for_boxes` (DDP-wrapped models too)."""
    return _mxr_model(model).masks_for_boxes(list(images), list(boxes), list(labels))


def detect_and_mask_boxes(
    model: nn.Module,
    images: Sequence[Tensor],
    boxes: Sequence[Tensor] | None = None,
    labels: Sequence[Tensor] | None = None,
) -> tuple[list[dict[str, Tensor]], list[Tensor] | None]:
    """The model's detections and, from the same backbone pass, masks for given boxes
    (:meth:`mxr.model.MaskXRCNN.detect_and_mask_boxes`); without boxes, ``(model(images), None)``."""
    if boxes is None or labels is None:
        with torch.no_grad():
            return _unwrap(model)(list(images)), None
    return _mxr_model(model).detect_and_mask_boxes(list(images), list(boxes), list(labels))


# --------------------------------------------------------------------------------------------------
# the whole evaluation
# --------------------------------------------------------------------------------------------------
def _batches(n: int, batch_size: int) -> list[range]:
    return [range(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Any,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    progress: bool = True,
    mask_iou: bool = False,
    mask_threshold: float = 0.5,
) -> dict[str, Any]:
    """Detect on every image of ``dataset`` and score it with COCOeval per class set.

    Args:
        model: a Mask R-CNN; it is put in eval mode (and restored afterwards).
        dataset: a :class:`mxr.data.CocoInstances` (needs ``coco``, ``image_ids``,
            ``label_to_cat_id``, ``a_cat_ids``, ``b_cat_ids``); its ground truth must carry masks of
            every class (load it with ``masks="all"``) for ``segm`` and ``mask_iou``.
        device: where to run the model.
        batch_size: images per forward pass.
        progress: show a tqdm bar.
        mask_iou: also compute the mean mask IoU given true boxes (``results[set]["mask_iou"]``).
        mask_threshold: binarisation threshold for predicted masks.

    Returns:
        ``{"A"|"B"|"all": {"segm": {...}, "bbox": {...}[, "mask_iou": {"mIoU"}]}}`` in 0–100.
    """
    from tqdm.auto import tqdm

    m = _unwrap(model)
    was_training = m.training
    m.eval()
    device = torch.device(device)
    results: list[dict[str, Any]] = []
    ious: dict[int, list[float]] = {}
    try:
        for idx in tqdm(_batches(len(dataset), batch_size), desc="eval", disable=not progress):
            samples = [dataset[i] for i in idx]
            images = [s[0].to(device) for s in samples]
            targets = [s[1] for s in samples]
            gt = _gt_for_mask_iou(targets, device) if mask_iou else None
            outputs, gt_box_masks = detect_and_mask_boxes(
                m, images, *(gt[:2] if gt else (None, None))
            )
            image_ids = [int(t["image_id"]) for t in targets]
            results += outputs_to_coco(
                outputs, image_ids, dataset.label_to_cat_id, mask_threshold=mask_threshold
            )
            if gt is not None and gt_box_masks is not None:
                _accumulate_ious(gt_box_masks, gt[2], gt[1], ious, mask_threshold)
    finally:
        m.train(was_training)
    a, b = [int(c) for c in dataset.a_cat_ids], [int(c) for c in dataset.b_cat_ids]
    sets = {"A": a, "B": b, "all": sorted(a + b)}
    out: dict[str, Any] = coco_evaluate(
        dataset.coco, results, sets, image_ids=[int(i) for i in dataset.image_ids]
    )
    if mask_iou:
        cat_of = dataset.label_to_cat_id
        for name, ids in sets.items():
            vals = [v for lab, vs in ious.items() if _cat_id(cat_of, lab) in ids for v in vs]
            out[name]["mask_iou"] = {"mIoU": round(100 * float(np.mean(vals)), 3) if vals else None}
    return out


def has_mask_of(target: Mapping[str, Tensor]) -> Tensor:
    """``(N,)`` bool: which instances of a target carry a true mask (``has_mask``, as
    :class:`mxr.data.CocoInstances` marks them; every instance when the target has no flag)."""
    has = target.get("has_mask")
    if has is None:
        return torch.ones(len(target["labels"]), dtype=torch.bool)
    return has.bool()


def _gt_for_mask_iou(
    targets: list[dict[str, Tensor]], device: torch.device
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """Per image: boxes ``(M, 4)``, labels ``(M,)`` and masks ``(M, H, W)`` of the instances with a
    ground-truth mask."""
    boxes, labels, gts = [], [], []
    for t in targets:
        keep = has_mask_of(t)
        if "has_mask" in t and len(t["masks"]) != int(keep.sum()):
            raise ValueError(
                "target masks do not match has_mask; load the dataset with masks='all'"
            )
        boxes.append(t["boxes"][keep].to(device))
        labels.append(t["labels"][keep].to(device))
        gts.append(t["masks"].to(device).bool())
    return boxes, labels, gts


def _accumulate_ious(
    preds: list[Tensor],
    gts: list[Tensor],
    labels: list[Tensor],
    ious: dict[int, list[float]],
    threshold: float,
) -> None:
    """Add the IoU of each predicted ``(M, H, W)`` mask with its ground truth, by label."""
    for p, g, lab in zip(preds, gts, labels, strict=True):
        if len(lab) == 0:
            continue
        iou = mask_iou(p > threshold, g)
        for label, v in zip(lab.tolist(), iou.tolist(), strict=True):
            ious.setdefault(int(label), []).append(float(v))


# --------------------------------------------------------------------------------------------------
# mask IoU given true boxes, per instance (galleries, failure cases and probes read these)
# --------------------------------------------------------------------------------------------------
def mask_iou(pred: Tensor, gt: Tensor) -> Tensor:
    """IoU of boolean masks pairwise along the first axis: ``(N, H, W)`` x2 -> ``(N,)``.

    Two empty masks score 1 (they agree). The one mask-IoU rule: :func:`evaluate`'s ``mask_iou``,
    :func:`instance_ious` and the notebooks' galleries and probes all score with it.
    """
    pred, gt = pred.bool().flatten(1), gt.bool().flatten(1)
    inter = (pred & gt).sum(1).float()
    union = (pred | gt).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


@dataclass(frozen=True)
class InstanceIoU:
    """One ground-truth instance scored by a model's mask head given its true box and class.

    ``iou``: IoU of the predicted mask (probability > 0.5) with the true mask; ``box_iou``: IoU of
    the filled true box with the true mask (what a "mask = box" guess would score).
    """

    index: int
    instance: int
    label: int
    iou: float
    box_iou: float


def mask_instances(target: Mapping[str, torch.Tensor]) -> list[int]:
    """The instance numbers of a target that carry a true mask (``has_mask``; all when absent)."""
    return [i for i, has in enumerate(has_mask_of(target).tolist()) if has]


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Filled boxes as boolean masks: ``(N, 4)`` XYXY pixels -> ``(N, H, W)`` (pixel centres inside)."""
    ys = torch.arange(height, dtype=torch.float32).view(1, -1, 1) + 0.5
    xs = torch.arange(width, dtype=torch.float32).view(1, 1, -1) + 0.5
    b = boxes.detach().cpu().float().view(-1, 4, 1, 1)
    return (xs >= b[:, 0]) & (xs <= b[:, 2]) & (ys >= b[:, 1]) & (ys <= b[:, 3])


@torch.no_grad()
def instance_masks(
    model: torch.nn.Module, ds: Any, index: int, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[int], torch.Tensor]:
    """The model's masks for the true boxes and classes of dataset item ``index``.

    Returns:
        ``(image, target, instances, probs)``: the image ``(3, H, W)``, its target, the instance
        numbers that carry a true mask (M of them), and the predicted probabilities ``(M, H, W)``.
    """
    image, target = ds[index]
    inst = mask_instances(target)
    if not inst:
        return image, target, inst, torch.zeros((0, *image.shape[-2:]))
    model.eval()
    probs = masks_from_boxes(
        model,
        [image.to(device)],
        [target["boxes"][inst].to(device)],
        [target["labels"][inst].to(device)],
    )[0]
    return image, target, inst, probs.cpu()


def instance_ious(
    model: torch.nn.Module,
    ds: Any,
    indices: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    threshold: float = 0.5,
) -> list[InstanceIoU]:
    """Score every true instance with a mask in ``indices`` (default: the whole dataset).

    The dataset must carry masks of every class (``masks="all"``, as the val/test datasets of
    :func:`mxr.engine.build_dataset` do), or B instances are skipped.
    """
    out = []
    for index in range(len(ds)) if indices is None else indices:
        image, target, inst, probs = instance_masks(model, ds, int(index), device)
        if not inst:
            continue
        gt = target["masks"].bool()
        ious = mask_iou(probs > threshold, gt)
        h, w = image.shape[-2:]
        base = mask_iou(box_masks(target["boxes"][inst], h, w), gt)
        for k, i in enumerate(inst):
            out.append(
                InstanceIoU(int(index), i, int(target["labels"][i]), float(ious[k]), float(base[k]))
            )
    return out


def ious_by_label(ious: Sequence[InstanceIoU]) -> dict[int, list[float]]:
    """``{label: [iou, ...]}`` in label order."""
    out: dict[int, list[float]] = {}
    for r in sorted(ious, key=lambda r: r.label):
        out.setdefault(r.label, []).append(r.iou)
    return out


def mean_iou(ious: Sequence[InstanceIoU], labels: Sequence[int], box: bool = False) -> float | None:
    """Mean IoU (0–1) over instances whose label is in ``labels`` (``box``: of the box guess)."""
    keep = set(int(x) for x in labels)
    vals = [(r.box_iou if box else r.iou) for r in ious if r.label in keep]
    return float(sum(vals) / len(vals)) if vals else None
