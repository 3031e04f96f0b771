"""mxr: Mask^X R-CNN ("Learning to Segment Every Thing") on torchvision's detection parts."""

__version__ = "0.1.0"

from mxr.config import Config, DataConfig, ModelConfig, TrainConfig, load_config  # noqa: E402
from mxr.model import build_model  # noqa: E402

__all__ = [
    "Config",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "__version__",
    "build_model",
    "load_config",
]
