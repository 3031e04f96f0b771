"""Data: the ShapesX generator, COCO-format loading with A/B splits, and dataset checks.

ShapesX is COCO format on disk, so the code that loads it is the code that loads COCO 2017.
"""
