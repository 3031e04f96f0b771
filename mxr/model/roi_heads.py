"""RoI heads for partially supervised training: box losses on A ∪ B, mask loss on set A only.

A target's ``masks`` holds one mask per instance ``(N, H, W)`` or only the existing ones
``(M, H, W)``, in instance order: those ``has_mask`` ``(N,)`` flags or, without it, those of the
instances in ``mask_classes``. At inference every detection gets a mask, whatever its class.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss

from mxr.losses import partial_mask_loss
from mxr.model.heads import MaskPredictor
from mxr.model.transfer import TRANSFER_INPUTS


def mask_row_per_instance(target: dict[str, Tensor], mask_classes: Tensor) -> Tensor:
    """For each instance of a target, the row of ``masks`` holding its mask: ``(N,)`` int64, -1
    where it has none or its class is not in set A (``mask_classes`` ``(A,)``)."""
    labels = target["labels"]
    n = labels.shape[0]
    in_a = torch.isin(labels, mask_classes)
    m = 0 if target.get("masks") is None else target["masks"].shape[0]
    if "has_mask" in target:
        has_mask = target["has_mask"].to(torch.bool)
        if int(has_mask.sum()) != m:
            raise ValueError(
                f"target 'has_mask' marks {int(has_mask.sum())} instances but 'masks' has {m} rows; "
                "expected one mask per marked instance"
            )
        rows = torch.cumsum(has_mask.long(), 0) - 1
    elif m == n:
        has_mask = torch.ones(n, dtype=torch.bool, device=labels.device)
        rows = torch.arange(n, device=labels.device)
    elif m == int(in_a.sum()):
        has_mask = in_a
        rows = torch.cumsum(in_a.long(), 0) - 1
    else:
        raise ValueError(
            f"target 'masks' has {m} rows for {n} instances ({int(in_a.sum())} in mask_classes); expected "
            "one per instance, one per mask-class instance, or a 'has_mask' flag per instance"
        )
    return torch.where(has_mask & in_a, rows, torch.full_like(rows, -1))


class MaskXRoIHeads(RoIHeads):
    """torchvision's :class:`RoIHeads` with a Mask^X R-CNN mask branch: each RoI's mask for one class
    only (ground truth in training, predicted at inference). ``class_embedding`` ``(C, E)`` becomes
    a saved buffer, so a checkpoint needs no embedding file to evaluate."""

    def __init__(
        self,
        *args,
        mask_classes: tuple[int, ...],
        transfer_input: str = "cls+box",
        stop_grad: bool = True,
        class_embedding: Tensor | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.mask_predictor, MaskPredictor):
            raise TypeError(
                "MaskXRoIHeads needs an mxr.model.heads.MaskPredictor as mask_predictor"
            )
        self.register_buffer(
            "mask_classes", torch.tensor(sorted(mask_classes), dtype=torch.int64), persistent=False
        )
        if transfer_input not in TRANSFER_INPUTS:
            raise ValueError(
                f"transfer_input={transfer_input!r} is not valid; expected one of "
                f"{', '.join(map(repr, TRANSFER_INPUTS))}"
            )
        self.transfer_input = transfer_input
        self._transfer_input = TRANSFER_INPUTS[transfer_input]
        self.stop_grad = stop_grad
        self.mask_only = False  # set by MaskXRCNN.freeze_detector: training skips the box head
        if self._transfer_input.embedding is not None:
            if class_embedding is None:
                raise ValueError(
                    f"transfer_input={transfer_input!r} needs class_embedding, a (C, E) tensor"
                )
            self.register_buffer("class_embedding", class_embedding.detach().float().clone())
        else:
            self.class_embedding = None

    def read_transfer_input(self, classes: Tensor) -> Tensor:
        """τ's input for ``classes`` ``(K,)`` -> ``(K, d)``: the detection weights (detached when
        ``stop_grad``) and/or the class embedding rows that ``transfer_input`` names."""
        return self._transfer_input.read(
            self.box_predictor, self.class_embedding, classes, self.stop_grad
        )

    def mask_logits(
        self, features: dict[str, Tensor], boxes: list[Tensor], classes: Tensor, image_shapes
    ) -> Tensor:
        """RoIAlign + mask head + predictor: per-image boxes ``(R_i, 4)``, classes ``(R,)`` -> ``(R, 28, 28)``."""
        x = self.mask_head(self.mask_roi_pool(features, boxes, image_shapes))
        reader = self.read_transfer_input if self.mask_predictor.uses_detection_weights else None
        return self.mask_predictor(x, classes, reader)

    def roi_mask_probs(
        self, features: dict[str, Tensor], boxes: list[Tensor], labels: Tensor, image_shapes
    ) -> Tensor:
        """Mask probabilities ``(R, 28, 28)`` for given boxes (per transformed image ``(R_i, 4)``
        XYXY, in its pixels) and classes ``(R,)``: the detector's own bypassed (mask IoU)."""
        return self.mask_logits(features, boxes, labels, image_shapes).sigmoid()

    def forward(self, features, proposals, image_shapes, targets=None):
        """Same contract as torchvision's ``RoIHeads.forward``: ``(detections, losses)``."""
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            for t in targets:
                if not t["boxes"].is_floating_point():
                    raise TypeError(f"target boxes must be floating point, got {t['boxes'].dtype}")
                if t["labels"].dtype != torch.int64:
                    raise TypeError(f"target labels must be int64, got {t['labels'].dtype}")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(
                proposals, targets
            )
            if self.mask_only:  # a frozen detector: the box losses would teach nothing
                return [], {
                    "loss_mask": self._mask_loss(
                        features, proposals, matched_idxs, labels, targets, image_shapes
                    )
                }
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        if not self.training:
            boxes, scores, labels = self.postprocess_detections(
                class_logits, box_regression, proposals, image_shapes
            )
            classes = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64)
            logits = self.mask_logits(features, boxes, classes, image_shapes)
            # masks (N_i, 1, 28, 28): the transform pastes them into the image
            masks = logits.sigmoid()[:, None].split([len(b) for b in boxes])
            return [
                {"boxes": b, "labels": lab, "scores": s, "masks": m}
                for b, lab, s, m in zip(boxes, labels, scores, masks, strict=True)
            ], {}
        loss_classifier, loss_box_reg = fastrcnn_loss(
            class_logits, box_regression, labels, regression_targets
        )
        loss_mask = self._mask_loss(
            features, proposals, matched_idxs, labels, targets, image_shapes
        )
        return [], dict(
            loss_classifier=loss_classifier, loss_box_reg=loss_box_reg, loss_mask=loss_mask
        )

    def _mask_loss(
        self, features, proposals, matched_idxs, labels, targets, image_shapes
    ) -> Tensor:
        """The partial mask loss over the sampled RoIs ``proposals`` (per image ``(R_i, 4)``)."""
        # Mask branch: foreground RoIs whose matched instance is in set A and has a mask.
        mask_boxes, mask_rows, mask_classes = [], [], []
        per_image = zip(proposals, matched_idxs, labels, targets, strict=True)
        for props, matched, lab, target in per_image:
            rows = mask_row_per_instance(target, self.mask_classes)
            # an image without instances: every RoI is background (matched is clamped to 0)
            row = rows[matched] if rows.numel() else torch.full_like(matched, -1)
            keep = (lab > 0) & (row >= 0)
            mask_boxes.append(props[keep])
            mask_rows.append(row[keep])
            mask_classes.append(lab[keep])
        logits = self.mask_logits(features, mask_boxes, torch.cat(mask_classes), image_shapes)
        gt_masks = [t.get("masks") for t in targets]
        return partial_mask_loss(logits, mask_boxes, gt_masks, mask_rows)
