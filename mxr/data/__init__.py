"""Data: the ShapesX generator, COCO-format loading with A/B splits, and dataset checks.

ShapesX is COCO format on disk, so the code that loads it is the code that loads COCO 2017.
"""

from mxr.data.coco import VOC_CAT_IDS, CocoInstances, collate_fn, resolve_split
from mxr.data.shapesx import ensure_shapesx, generate_shapesx
from mxr.data.validate import ValidationReport, validate_dataset

__all__ = [
    "VOC_CAT_IDS",
    "CocoInstances",
    "ValidationReport",
    "collate_fn",
    "ensure_shapesx",
    "generate_shapesx",
    "resolve_split",
    "validate_dataset",
]
