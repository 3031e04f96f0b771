"""mxr: Mask^X R-CNN ("Learning to Segment Every Thing") on torchvision's detection parts."""

__version__ = "0.1.0"
