"""Evaluation: COCO mask and box AP per class set (A, B, all), and mask IoU given true boxes.

The paper's headline is mask AP on set B, the classes trained without masks. One COCOeval pass per
task (``segm``, ``bbox``) matches and accumulates every category; each set's statistics are read
from its precision array. Results are ``{set: {"segm": {"AP", "AP50", "AP75", "APs", "APm",
"APl"}, "bbox": {...}, "mask_iou": {"mIoU"}}}`` in 0–100, ``None`` where the set has no ground
truth. ``mask_iou`` (on request) is the mean IoU of each true instance's mask predicted from its
true box and class: the mask head alone.

:func:`evaluate` is :func:`predict` (the model on every image; under ``torchrun`` each rank on its
share, gathered on rank 0) then :func:`score_predictions` (COCOeval, no model, no collective).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor, nn

from mxr.data.coco import encode_rle
from mxr.engine.dist import DistInfo, gather_to_main
from mxr.report import STAT_NAMES, TASKS


# --- model outputs -> COCO results ----------------------------------------------------------------
def _cat_id(label_to_cat_id: Mapping[int, int] | Sequence[int], label: int) -> int:
    try:
        return int(label_to_cat_id[label])
    except (KeyError, IndexError) as e:
        raise ValueError(
            f"predicted label {label} has no COCO category id in the dataset's label_to_cat_id map"
        ) from e


def encode_masks(masks: Tensor, threshold: float = 0.5) -> list[dict[str, Any]]:
    """Binarise ``(N, 1, H, W)`` or ``(N, H, W)`` probabilities (foreground: ``> threshold``) into
    ``N`` COCO RLEs ``{"size": [H, W], "counts": str}`` (JSON-ready)."""
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
    """torchvision detections (per image ``boxes`` ``(N, 4)`` XYXY, ``labels``, ``scores`` and
    optional ``masks`` ``(N, 1, H, W)``) -> COCO result dicts ``{"image_id", "category_id",
    "bbox": [x, y, w, h], "score"[, "segmentation"]}``, labels mapped by ``label_to_cat_id``."""
    if len(outputs) != len(image_ids):
        raise ValueError(f"got {len(outputs)} outputs for {len(image_ids)} image ids")
    results: list[dict[str, Any]] = []
    for out, image_id in zip(outputs, image_ids, strict=True):
        boxes = out["boxes"].detach().float().cpu()
        if boxes.numel() == 0:
            continue
        xywh = boxes.clone()
        xywh[:, 2:] -= xywh[:, :2]
        labels, scores = out["labels"].tolist(), out["scores"].tolist()
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


# --- COCOeval per class set -----------------------------------------------------------------------
def _stat(v: float) -> float | None:
    v = float(v)
    return None if (v < 0 or math.isnan(v)) else round(100.0 * v, 3)


#: COCOeval's summary statistics 0-5, as ``(IoU threshold or None: all, area range label)``.
_STAT_SLICES = (
    (None, "all"),
    (0.5, "all"),
    (0.75, "all"),
    (None, "small"),
    (None, "medium"),
    (None, "large"),
)


def _set_stats(e: COCOeval, cat_ids: Sequence[int]) -> dict[str, float | None]:
    """``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` of the categories ``cat_ids`` from an
    accumulated COCOeval, as :meth:`COCOeval.summarize` computes them with ``params.catIds =
    cat_ids``: the mean of ``e.eval["precision"]`` ``[T, R, K, A, M]`` over the set's K (entries
    > -1) at 100 detections per image (Detectron2 reads its per-category AP the same way)."""
    p, precision = e.params, e.eval["precision"]
    k = [list(p.catIds).index(int(c)) for c in sorted(cat_ids)]
    m = list(p.maxDets).index(100)
    out: dict[str, float | None] = {}
    for name, (iou, area) in zip(STAT_NAMES, _STAT_SLICES, strict=True):
        t = slice(None) if iou is None else np.flatnonzero(np.isclose(p.iouThrs, iou))
        s = precision[t][:, :, k, p.areaRngLbl.index(area), m]  # (T, R, K), summarize's order
        s = s[s > -1]
        out[name] = _stat(np.mean(s)) if s.size else None
    return out


def _private_annotations(coco_gt: COCO) -> COCO:
    """A shallow copy of ``coco_gt`` with copies of its annotation dicts: COCOeval writes into
    the ground truth (polygons become RLEs with bytes counts), which the dataset reads again."""
    gt = copy.copy(coco_gt)
    gt.anns = {i: dict(a) for i, a in coco_gt.anns.items()}
    return gt


def coco_evaluate(
    coco_gt: COCO,
    results: list[dict[str, Any]],
    cat_sets: Mapping[str, Sequence[int]],
    *,
    image_ids: Sequence[int] | None = None,
    tasks: Iterable[str] = TASKS,
) -> dict[str, dict[str, dict[str, float | None]]]:
    """Run COCOeval once per task (``"segm"``, ``"bbox"``) on ``image_ids`` (default: all) and
    summarise it per category set ``{"A": [cat ids], ...}``: ``{set: {task: {"AP", ...}}}``
    (``coco_gt`` needs masks of every class scored on ``segm``; ``results`` may be empty)."""
    tasks = list(tasks)
    if bad := [t for t in tasks if t not in TASKS]:
        raise ValueError(f"task {bad[0]!r} is not valid; expected one of {', '.join(TASKS)}")
    img_ids = sorted(int(i) for i in (image_ids if image_ids is not None else coco_gt.getImgIds()))
    all_cat_ids = sorted({int(c) for ids in cat_sets.values() for c in ids})
    if unknown := sorted(set(all_cat_ids) - set(coco_gt.getCatIds())):
        raise ValueError(f"category ids {unknown} are not in the ground-truth annotations")
    out: dict[str, dict[str, dict[str, float | None]]] = {name: {} for name in cat_sets}
    for task in tasks:
        # segm results without "bbox" (else loadRes takes the box area as the mask area)
        drop = "bbox" if task == "segm" else "segmentation"
        task_results = [
            {k: v for k, v in r.items() if k != drop}
            for r in results
            if task != "segm" or "segmentation" in r
        ]
        if not task_results or not all_cat_ids:
            for name, ids in cat_sets.items():
                n_gt = len(coco_gt.getAnnIds(imgIds=img_ids, catIds=list(ids), iscrowd=False))
                out[name][task] = dict.fromkeys(STAT_NAMES, 0.0 if n_gt and ids else None)
            continue
        with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress
            gt = _private_annotations(coco_gt)
            e = COCOeval(gt, gt.loadRes(task_results), iouType=task)
            e.params.imgIds = img_ids
            e.params.catIds = all_cat_ids
            e.evaluate()
            e.accumulate()
        for name, ids in cat_sets.items():
            out[name][task] = _set_stats(e, ids) if ids else dict.fromkeys(STAT_NAMES, None)
    return out


# --- masks for given boxes (isolates the mask head) -----------------------------------------------
def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def _mxr_model(model: nn.Module) -> nn.Module:
    m = _unwrap(model)
    if not hasattr(m, "detect_and_mask_boxes"):
        raise TypeError(
            f"mask IoU given true boxes needs an mxr model (mxr.model.build.build_model), got {type(m).__name__}"
        )
    return m


# --- the whole evaluation -------------------------------------------------------------------------
def _inference(
    model: nn.Module,
    dataset: Any,
    indices: Sequence[int],
    *,
    device: torch.device,
    batch_size: int,
    detect: bool,
    true_boxes: bool,
    progress: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[tuple[list[int], list[Tensor], list[dict[str, Tensor]], Any, Any]]:
    """The one inference loop: per batch, ``(indices, images, targets, detections, masks)``, with
    the ``(M, H, W)`` probabilities for the true boxes and classes of the instances with a true mask
    when ``true_boxes`` (same backbone pass). ``shard=(rank, world_size)``: only batches ``rank,
    rank + world_size, ...`` of the batches one process runs. Eval mode, restored afterwards."""
    from tqdm.auto import tqdm

    m = _mxr_model(model) if true_boxes else _unwrap(model)
    was_training = m.training
    m.eval()
    try:
        batches = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
        rank, world_size = shard
        for idx in tqdm(batches[rank::world_size], desc="eval", disable=not progress):
            samples = [dataset[int(i)] for i in idx]
            images = [s[0].to(device) for s in samples]
            targets = [s[1] for s in samples]
            if true_boxes:
                keep = [_checked_has_mask(t) for t in targets]
                boxes = [t["boxes"][k].to(device) for t, k in zip(targets, keep, strict=True)]
                labels = [t["labels"][k].to(device) for t, k in zip(targets, keep, strict=True)]
                detections, masks = m.detect_and_mask_boxes(images, boxes, labels, detect=detect)
            else:
                with torch.no_grad():
                    detections, masks = m(images), None
            yield list(idx), images, targets, detections, masks
    finally:
        m.train(was_training)


def detections(
    model: nn.Module,
    dataset: Any,
    indices: Sequence[int],
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 1,
) -> list[dict[str, Tensor]]:
    """The model's detections (``boxes``, ``labels``, ``scores``, ``masks``) for the dataset items
    ``indices``, on the CPU, from the one inference loop (one image per pass by default)."""
    return [
        {k: v.detach().cpu() for k, v in d.items()}
        for *_, found, _ in _inference(
            model,
            dataset,
            [int(i) for i in indices],
            device=torch.device(device),
            batch_size=batch_size,
            detect=True,
            true_boxes=False,
        )
        for d in found
    ]


@dataclass(frozen=True)
class Predictions:
    """What :func:`predict` gives :func:`score_predictions`: the detections as COCO ``results``
    (image order) and, with ``mask_iou``, the true instances scored given their true boxes
    (``instances``, image then instance order; ``None`` without)."""

    results: list[dict[str, Any]]
    instances: list[InstanceIoU] | None


def predict(
    model: nn.Module,
    dataset: Any,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    progress: bool = True,
    mask_iou: bool = False,
    mask_threshold: float = 0.5,
    info: DistInfo | None = None,
) -> Predictions | None:
    """Detect on every image of ``dataset`` (and, with ``mask_iou``, score its true instances).

    With several processes (``info``, from :func:`mxr.engine.dist.init_distributed`) every rank
    must call it: rank r runs batches r, r + world_size, ... of the batches a single process runs
    (the same batches, so the same padding and the same numbers), and rank 0 gathers them into
    image order; the other ranks get ``None``. Each rank's ``model`` must hold the same weights.
    """
    info = info or DistInfo()
    per_image: list[tuple[int, list[dict[str, Any]], list[InstanceIoU]]] = []
    for idx, _, targets, outputs, masks in _inference(
        model,
        dataset,
        range(len(dataset)),
        device=torch.device(device),
        batch_size=batch_size,
        detect=True,
        true_boxes=mask_iou,
        progress=progress and info.is_main,
        shard=(info.rank, info.world_size),
    ):
        for k, (i, t, out) in enumerate(zip(idx, targets, outputs, strict=True)):
            results = outputs_to_coco(
                [out], [int(t["image_id"])], dataset.label_to_cat_id, mask_threshold=mask_threshold
            )
            scored = score_instances(i, t, masks[k], mask_threshold) if masks is not None else []
            per_image.append((i, results, scored))
    shards = gather_to_main(per_image, info)
    if shards is None:
        return None
    images = sorted((x for shard in shards for x in shard), key=lambda x: x[0])
    return Predictions(
        results=[r for _, results, _ in images for r in results],
        instances=[r for _, _, scored in images for r in scored] if mask_iou else None,
    )


def score_predictions(predictions: Predictions, dataset: Any) -> dict[str, Any]:
    """Score :func:`predict`'s output with COCOeval per class set (A, B, all) of ``dataset``;
    ``[set]["mask_iou"]["mIoU"]`` when it holds true-box ``instances``."""
    a, b = [int(c) for c in dataset.a_cat_ids], [int(c) for c in dataset.b_cat_ids]
    sets = {"A": a, "B": b, "all": sorted(a + b)}
    out: dict[str, Any] = coco_evaluate(
        dataset.coco, predictions.results, sets, image_ids=[int(i) for i in dataset.image_ids]
    )
    if predictions.instances is not None:
        scored, cat_of = predictions.instances, dataset.label_to_cat_id
        order = dict.fromkeys(r.label for r in scored)  # labels as they first appear
        for name, ids in sets.items():
            vals = [
                r.iou
                for lab in order
                if _cat_id(cat_of, lab) in ids
                for r in scored
                if r.label == lab
            ]
            out[name]["mask_iou"] = {"mIoU": round(100 * float(np.mean(vals)), 3) if vals else None}
    return out


def evaluate(
    model: nn.Module,
    dataset: Any,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    progress: bool = True,
    mask_iou: bool = False,
    mask_threshold: float = 0.5,
    records: list[InstanceIoU] | None = None,
    info: DistInfo | None = None,
) -> dict[str, Any] | None:
    """Detect on every image of ``dataset`` (a :class:`mxr.data.coco.CocoInstances` with ``masks="all"``)
    and score it with COCOeval per class set; ``mask_iou`` adds ``[set]["mask_iou"]["mIoU"]``, the
    mean of the set's :func:`score_instances` records (which ``records``, if given, receives).
    Under several processes (``info``) every rank calls it and infers on its share
    (:func:`predict`); rank 0 scores and gets the dict, the others ``None``."""
    predictions = predict(
        model,
        dataset,
        device=device,
        batch_size=batch_size,
        progress=progress,
        mask_iou=mask_iou,
        mask_threshold=mask_threshold,
        info=info,
    )
    if predictions is None:
        return None
    if records is not None and predictions.instances is not None:
        records += predictions.instances
    return score_predictions(predictions, dataset)


def has_mask_of(target: Mapping[str, Tensor]) -> Tensor:
    """``(N,)`` bool: which instances of a target carry a true mask (``has_mask``; all if absent)."""
    has = target.get("has_mask")
    return torch.ones(len(target["labels"]), dtype=torch.bool) if has is None else has.bool()


def _checked_has_mask(target: Mapping[str, Tensor]) -> Tensor:
    """``has_mask_of(target)``, checked against the target's masks (one per flagged instance)."""
    keep = has_mask_of(target)
    if "has_mask" in target and len(target["masks"]) != int(keep.sum()):
        raise ValueError("target masks do not match has_mask; load the dataset with masks='all'")
    return keep


# --- mask IoU given true boxes, per instance (galleries, failure cases and probes read these) -----
def mask_iou(pred: Tensor, gt: Tensor) -> Tensor:
    """IoU of boolean masks pairwise along the first axis: ``(N, H, W)`` x2 -> ``(N,)``; two empty
    masks score 1. The one mask-IoU rule of the evaluation, the galleries and the probes."""
    pred, gt = pred.bool().flatten(1), gt.bool().flatten(1)
    inter = (pred & gt).sum(1).float()
    union = (pred | gt).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


@dataclass(frozen=True)
class InstanceIoU:
    """One true instance scored given its true box and class: ``iou`` of the predicted mask
    (probability > 0.5) with the true mask; ``box_iou`` of the filled box (a "mask = box" guess)."""

    index: int
    instance: int
    label: int
    iou: float
    box_iou: float


def instances_with_mask(target: Mapping[str, torch.Tensor]) -> list[int]:
    """The instance numbers of a target that carry a true mask (``has_mask``; all when absent)."""
    return [i for i, has in enumerate(has_mask_of(target).tolist()) if has]


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Filled boxes as boolean masks: ``(N, 4)`` XYXY pixels -> ``(N, H, W)`` (pixel centres inside)."""
    ys = torch.arange(height, dtype=torch.float32).view(1, -1, 1) + 0.5
    xs = torch.arange(width, dtype=torch.float32).view(1, 1, -1) + 0.5
    b = boxes.detach().cpu().float().view(-1, 4, 1, 1)
    return (xs >= b[:, 0]) & (xs <= b[:, 2]) & (ys >= b[:, 1]) & (ys <= b[:, 3])


def score_instances(
    index: int, target: Mapping[str, Tensor], probs: Tensor, threshold: float = 0.5
) -> list[InstanceIoU]:
    """The records of dataset item ``index``: each instance with a true mask scored by ``probs``
    ``(M, H, W)``, predicted for its true box and class."""
    inst = instances_with_mask(target)
    if not inst:
        return []
    gt = target["masks"].bool()
    ious = mask_iou(probs.cpu() > threshold, gt)
    base = mask_iou(box_masks(target["boxes"][inst], *gt.shape[-2:]), gt)
    return [
        InstanceIoU(int(index), i, int(target["labels"][i]), float(ious[k]), float(base[k]))
        for k, i in enumerate(inst)
    ]


def masks_for_true_boxes(
    model: torch.nn.Module, ds: Any, index: int, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[int], torch.Tensor]:
    """The model's masks for the true boxes and classes of dataset item ``index``: ``(image
    (3, H, W), target, the M instance numbers with a true mask, probabilities (M, H, W))``."""
    ((_, (image,), (target,), _, (probs,)),) = _inference(
        model,
        ds,
        [index],
        device=torch.device(device),
        batch_size=1,
        detect=False,
        true_boxes=True,
    )
    return image.cpu(), target, instances_with_mask(target), probs.cpu()


def instance_ious(
    model: torch.nn.Module,
    ds: Any,
    indices: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    threshold: float = 0.5,
) -> list[InstanceIoU]:
    """Score every true instance with a mask in ``indices`` (default: all), one image per pass.
    The dataset needs masks of every class (``masks="all"``), or B instances are skipped."""
    out: list[InstanceIoU] = []
    for (i,), _, (target,), _, (probs,) in _inference(
        model,
        ds,
        list(range(len(ds)) if indices is None else indices),
        device=torch.device(device),
        batch_size=1,
        detect=False,
        true_boxes=True,
    ):
        out += score_instances(i, target, probs, threshold)
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
