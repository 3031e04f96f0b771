"""Backbones with FPN, built without downloads: ``tiny`` (for CPUs), ``resnet18_fpn``, ``resnet50_fpn``.

All start from scratch unless ``backbone_weights`` names a local ImageNet state dict, which
``resnet50_fpn`` (the paper's) requires: from scratch it is a much weaker detector than the paper's,
so it is built without weights only for :data:`NO_WEIGHTS`, the user's explicit opt-out.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from mxr.errors import MissingFileError, UserInputError

#: ``model.backbone_weights`` value that builds ``resnet50_fpn`` from scratch on purpose.
NO_WEIGHTS = "none-i-know"


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyBody(nn.Sequential):
    """A small conv net (~0.4 M parameters): ``layer1..layer3`` at strides 4 / 8 / 16."""

    channels = (32, 64, 128)

    def __init__(self) -> None:
        c1, c2, c3 = self.channels
        stages = OrderedDict(
            stem=nn.Sequential(_conv_bn(3, 16, 2), _conv_bn(16, c1, 2)),
            layer1=nn.Sequential(_conv_bn(c1, c1, 1), _conv_bn(c1, c1, 1)),
            layer2=nn.Sequential(_conv_bn(c1, c2, 2), _conv_bn(c2, c2, 1)),
            layer3=nn.Sequential(_conv_bn(c2, c3, 2), _conv_bn(c3, c3, 1)),
        )
        super().__init__(stages)


def load_backbone_weights(body: nn.Module, path: str | Path) -> None:
    """Load a local state dict (plain or under ``"state_dict"`` / ``"model"``, ``"module."`` prefix
    allowed, ``fc.*`` ignored) into a backbone body; errors name the file and the keys that misfit."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"backbone_weights: file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise UserInputError(
            f"backbone_weights: {path} is not a readable PyTorch state dict: {e}"
        ) from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserInputError(
            f"backbone_weights: {path} holds a {type(state).__name__}, expected a state dict"
        )
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = {k: v for k, v in body.state_dict().items() if not k.startswith("fc.")}
    ignored = ("num_batches_tracked",)
    found = {
        "missing keys": sorted(k for k in own if k not in state and not k.endswith(ignored)),
        "unexpected keys": sorted(k for k in state if k not in own and not k.endswith(ignored)),
        "shape mismatches": sorted(
            f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
            for k, v in state.items()
            if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)
        ),
    }
    problems = [
        f"{len(ks)} {what}: {', '.join(ks[:5])}" + (f" (+{len(ks) - 5} more)" if ks[5:] else "")
        for what, ks in found.items()
        if ks
    ]
    if problems:
        raise UserInputError(
            f"backbone_weights: {path} does not fit the {type(body).__name__} backbone: "
            + "; ".join(problems)
        )
    body.load_state_dict(state, strict=False)


def build_backbone(
    name: str, fpn_channels: int, weights: str | Path | None = None, *, load: bool = True
) -> BackboneWithFPN:
    """Backbone + FPN with ``fpn_channels`` maps ``"0".."k"`` and ``"pool"``: ``tiny`` 3 stages
    (strides 4..16) + pool (32), ResNets 4 stages (4..32) + pool (64). ResNets with ``weights`` get
    frozen BatchNorm, stem and layer1 (Detectron's ``FREEZE_AT=2``). ``load=False``: that layout,
    without reading ``weights`` (for a model whose every weight comes from a checkpoint).
    """
    if str(weights) == NO_WEIGHTS:
        weights = None
    elif weights is None and load and name == "resnet50_fpn":
        raise UserInputError(
            "model.backbone_weights=None is not valid for backbone='resnet50_fpn': the paper starts "
            "from ImageNet weights (with frozen BatchNorm and frozen stem + res2), and from scratch "
            "the results are not comparable. Get a local ImageNet state dict (on a machine with "
            "internet: `import torch, torchvision; m = torchvision.models.resnet50(weights="
            "torchvision.models.ResNet50_Weights.IMAGENET1K_V1); torch.save(m.state_dict(), "
            "'resnet50_imagenet.pth')`, copy the file here and set model.backbone_weights to its "
            f"path), or set model.backbone_weights={NO_WEIGHTS} to train from scratch on purpose"
        )
    if name == "tiny":
        body = TinyBody()
        in_channels = list(body.channels)
    elif name in ("resnet18_fpn", "resnet50_fpn"):
        ctor = resnet18 if name == "resnet18_fpn" else resnet50
        norm = FrozenBatchNorm2d if weights is not None else nn.BatchNorm2d
        body = ctor(weights=None, norm_layer=norm)
        c = 64 if name == "resnet18_fpn" else 256
        in_channels = [c, 2 * c, 4 * c, 8 * c]
    else:
        raise UserInputError(
            f"backbone={name!r} is not valid; expected 'tiny', 'resnet18_fpn' or 'resnet50_fpn'"
        )
    if weights is not None and load:
        load_backbone_weights(body, weights)
    if weights is not None and name != "tiny":  # freeze the stem and layer1
        for pname, p in body.named_parameters():
            if not pname.startswith(("layer2", "layer3", "layer4")):
                p.requires_grad_(False)
    return_layers = {f"layer{i + 1}": str(i) for i in range(len(in_channels))}
    return BackboneWithFPN(
        body, return_layers, in_channels, fpn_channels, extra_blocks=LastLevelMaxPool()
    )
