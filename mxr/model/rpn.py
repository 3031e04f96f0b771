"""torchvision's region proposal network with its box arithmetic kept in float32 under autocast.

Under CUDA autocast torchvision's proposals are float16 (0.5–1 px steps at 800×1333), and the
per-label offsets of ``batched_nms`` round them to a grid of several pixels. Without autocast this
computes exactly what torchvision's RPN computes.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers


class Float32RegionProposalNetwork(RegionProposalNetwork):
    """torchvision's ``RegionProposalNetwork`` (same constructor and contract) whose anchors,
    proposals, scores and losses are float32 whatever the autocast state."""

    def forward(
        self,
        images: ImageList,
        features: dict[str, Tensor],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Proposals per image ``(P_i, 4)`` float32 XYXY, and in training the two RPN losses."""
        feature_list = list(features.values())
        objectness, pred_bbox_deltas = self.head(feature_list)  # autocast's dtype (e.g. float16)
        num_anchors_per_level = [o[0].shape[0] * o[0].shape[1] * o[0].shape[2] for o in objectness]
        with torch.autocast(device_type=feature_list[0].device.type, enabled=False):
            # the anchor generator reads only the maps' shapes, dtype and device: float32 stand-ins
            shapes = [
                f
                if f.dtype == torch.float32
                else torch.empty((), dtype=torch.float32, device=f.device).expand(f.shape)
                for f in feature_list
            ]
            anchors = self.anchor_generator(images, shapes)
            objectness, pred_bbox_deltas = concat_box_prediction_layers(
                [o.float() for o in objectness], [d.float() for d in pred_bbox_deltas]
            )
            # Faster R-CNN does not backpropagate through the proposals: deltas detached.
            proposals = self.box_coder.decode(pred_bbox_deltas.detach(), anchors)
            proposals = proposals.view(len(anchors), -1, 4)
            boxes, _scores = self.filter_proposals(
                proposals, objectness, images.image_sizes, num_anchors_per_level
            )
            losses: dict[str, Tensor] = {}
            if self.training:
                if targets is None:
                    raise ValueError("targets are required in training mode")
                labels, matched_gt_boxes = self.assign_targets_to_anchors(anchors, targets)
                regression_targets = self.box_coder.encode(matched_gt_boxes, anchors)
                loss_objectness, loss_rpn_box_reg = self.compute_loss(
                    objectness, pred_bbox_deltas, labels, regression_targets
                )
                losses = {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_rpn_box_reg}
        return boxes, losses
