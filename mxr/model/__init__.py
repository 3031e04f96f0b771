"""The Mask^X R-CNN model: torchvision's Mask R-CNN plus weight transfer, stop-grad and MLP fusion."""

from mxr.model.build import MaskXRCNN, build_model, build_stock_maskrcnn, count_parameters
from mxr.model.heads import (
    AgnosticMaskPredictor,
    ClassMaskPredictor,
    MLPFusion,
    TransferMaskPredictor,
    build_mask_predictor,
)
from mxr.model.roi_heads import MaskXRoIHeads
from mxr.model.transfer import WeightTransfer, read_detection_weights

__all__ = [
    "AgnosticMaskPredictor", "ClassMaskPredictor", "MLPFusion", "MaskXRCNN", "MaskXRoIHeads",
    "TransferMaskPredictor", "WeightTransfer", "build_mask_predictor", "build_model",
    "build_stock_maskrcnn", "count_parameters", "read_detection_weights",
]  # fmt: skip
