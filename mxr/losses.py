"""Losses as pure functions, with torchvision's names and shapes.

Box and class losses: torchvision's ``fastrcnn_loss`` unchanged (all classes, A ∪ B). The mask loss
sees only RoIs whose instance has a mask (set A, Detectron's ``MRCNN_FILTER_LABELS``), and gets each
RoI's logits for its own class already selected (no ``(R, num_classes, 28, 28)`` tensor).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.roi_heads import fastrcnn_loss, project_masks_on_boxes

__all__ = ["fastrcnn_loss", "partial_mask_loss", "mask_targets"]


def mask_targets(
    gt_masks: list[Tensor], proposals: list[Tensor], mask_rows: list[Tensor], size: int
) -> Tensor:
    """Each RoI's ground-truth mask cropped and resized to ``size × size`` (RoIAlign), ``(sum R_i,
    size, size)`` in [0, 1]; per image: ``gt_masks`` ``(M_i, H, W)``, ``proposals`` ``(R_i, 4)``
    XYXY, ``mask_rows`` ``(R_i,)`` int64 row of ``gt_masks[i]`` each RoI is matched to."""
    rows = zip(gt_masks, proposals, mask_rows, strict=True)
    return torch.cat([project_masks_on_boxes(m, p, r, size) for m, p, r in rows], dim=0)


def partial_mask_loss(
    mask_logits: Tensor, proposals: list[Tensor], gt_masks: list[Tensor], mask_rows: list[Tensor]
) -> Tensor:
    """Mean per-pixel binary cross-entropy of each RoI's own-class logits ``(R, 28, 28)`` against
    its target (:func:`mask_targets`). With no RoI it is ``mask_logits.sum() * 0``: a zero gradient
    rather than none, so distributed training sees every parameter."""
    if mask_logits.shape[0] == 0:
        return mask_logits.sum() * 0.0
    targets = mask_targets(gt_masks, proposals, mask_rows, mask_logits.shape[-1])
    return F.binary_cross_entropy_with_logits(mask_logits, targets.to(mask_logits.dtype))
