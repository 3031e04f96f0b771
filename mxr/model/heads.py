"""Mask predictors: class-agnostic, class-specific and weight-transfer, with optional MLP fusion.

Each computes only the mask of each RoI's own class, so its cost does not grow with the vocabulary
(3,000 classes on Visual Genome). ``read_transfer_input(classes (K,)) -> (K, d)`` reads τ's input from the
box predictor (not a submodule here, so no weight is stored twice).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor, nn

from mxr.config import ModelConfig
from mxr.model.transfer import TRANSFER_INPUTS, WeightTransfer

TransferInputReader = Callable[[Tensor], Tensor]


class MLPFusion(nn.Module):
    """Sec. 3.4's class-agnostic MLP branch: an FC predicting a 28×28 logit map per RoI, from the
    28×28×C deconv features (``form="paper"``, the official code: 157 M weights at C=256) or from a
    3×3 conv to ``channels`` on the 14×14 features (``"light"``, as PANet's fused head). The FC
    starts at N(0, 0.001), bias 0, so at first it adds almost nothing to the FCN logits."""

    def __init__(
        self, in_channels: int, *, form: str = "light", channels: int = 16, size: int = 28
    ):
        super().__init__()
        if form not in ("light", "paper"):
            raise ValueError(f"mlp_form={form!r} is not valid; expected 'light' or 'paper'")
        self.form, self.size, self.reduce = form, size, None
        if form == "light":
            self.reduce = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU())
        fc_in = in_channels * size * size if form == "paper" else channels * (size // 2) ** 2
        self.fc = nn.Linear(fc_in, size * size)
        nn.init.normal_(self.fc.weight, std=0.001)
        nn.init.zeros_(self.fc.bias)

    def forward(self, features14: Tensor, features28: Tensor) -> Tensor:
        """``(R, C, 14, 14)``, ``(R, C, 28, 28)`` -> ``(R, 28, 28)`` class-agnostic logits."""
        x = features28 if self.reduce is None else self.reduce(features14)
        return self.fc(x.flatten(1)).view(-1, self.size, self.size)


class MaskPredictor(nn.Module, ABC):
    """Upsample the mask-head features 2× into mask logits ``(features28 · w_seg) + bias (+ MLP)``;
    subclasses say where each RoI's 1×1 mask weights ``w_seg`` come from (:meth:`mask_weights`)."""

    uses_detection_weights = False

    def __init__(
        self,
        in_channels: int,
        *,
        mlp_fusion: bool = False,
        mlp_form: str = "light",
        mlp_channels: int = 16,
    ):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(in_channels, in_channels, 2, stride=2)
        nn.init.kaiming_normal_(self.deconv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.deconv.bias)
        self.mlp = (
            MLPFusion(in_channels, form=mlp_form, channels=mlp_channels) if mlp_fusion else None
        )

    @abstractmethod
    def mask_weights(
        self, classes: Tensor, read_transfer_input: TransferInputReader | None
    ) -> tuple[Tensor, Tensor | None]:
        """``(R,)`` classes -> ``(R, C)`` weights and ``(R,)`` biases (or None)."""

    def forward(
        self,
        features: Tensor,
        classes: Tensor,
        read_transfer_input: TransferInputReader | None = None,
    ) -> Tensor:
        """``(R, C, 14, 14)`` features, ``(R,)`` int64 classes -> ``(R, 28, 28)`` mask logits."""
        x28 = torch.relu(self.deconv(features))
        w_seg, bias = self.mask_weights(classes, read_transfer_input)
        logits = torch.einsum("rchw,rc->rhw", x28, w_seg.to(x28.dtype))
        if bias is not None:
            logits = logits + bias.to(logits.dtype)[:, None, None]
        if self.mlp is not None:
            logits = logits + self.mlp(features, x28)
        return logits

    def class_logits(
        self,
        features: Tensor,
        classes: Tensor,
        read_transfer_input: TransferInputReader | None = None,
    ) -> Tensor:
        """Every RoI segmented with every class's weights (for inspection): ``classes (K,)`` ->
        ``(R, K, 28, 28)``."""
        r, k = features.shape[0], classes.numel()
        logits = self.forward(
            features.repeat_interleave(k, dim=0), classes.repeat(r), read_transfer_input
        )
        return logits.view(r, k, *logits.shape[-2:])


class ClassMaskPredictor(MaskPredictor):
    """One learned 1×1 filter (with bias) per class: Mask R-CNN's class-specific head (the oracle)."""

    def __init__(self, in_channels: int, num_classes: int, **kwargs):
        super().__init__(in_channels, **kwargs)
        self.weight = nn.Parameter(torch.randn(num_classes, in_channels) * 0.001)
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def mask_weights(
        self, classes: Tensor, read_transfer_input: TransferInputReader | None
    ) -> tuple[Tensor, Tensor]:
        return self.weight[classes], self.bias[classes]


class AgnosticMaskPredictor(ClassMaskPredictor):
    """One mask for every class (a single 1×1 filter with bias): the class-agnostic baseline."""

    def __init__(self, in_channels: int, **kwargs):
        super().__init__(in_channels, 1, **kwargs)

    def mask_weights(
        self, classes: Tensor, read_transfer_input: TransferInputReader | None
    ) -> tuple[Tensor, Tensor]:
        n = classes.shape[0]
        return self.weight.expand(n, -1), self.bias.expand(n)


class TransferMaskPredictor(MaskPredictor):
    """Mask weights ``w_seg^c = τ(w_det^c)``, no bias; τ runs once per distinct class in the batch."""

    uses_detection_weights = True

    def __init__(
        self,
        in_channels: int,
        w_det_dim: int,
        *,
        transfer_layers: int = 2,
        transfer_activation: str = "leaky_relu",
        transfer_zero_init: bool = False,
        **kwargs,
    ):
        super().__init__(in_channels, **kwargs)
        self.transfer = WeightTransfer(
            w_det_dim,
            in_channels,
            layers=transfer_layers,
            activation=transfer_activation,
            zero_init=transfer_zero_init,
        )

    def mask_weights(
        self, classes: Tensor, read_transfer_input: TransferInputReader | None
    ) -> tuple[Tensor, None]:
        if read_transfer_input is None:
            raise ValueError(
                "TransferMaskPredictor needs read_transfer_input to read the box predictor's weights"
            )
        distinct, index = torch.unique(classes, return_inverse=True)
        return self.transfer(read_transfer_input(distinct))[index], None  # (K, C) -> (R, C)

    def mask_weights_of(self, classes: Tensor, read_transfer_input: TransferInputReader) -> Tensor:
        """``w_seg`` of the given classes: ``(K,)`` -> ``(K, C)`` (for inspection)."""
        return self.transfer(read_transfer_input(classes))


def build_mask_predictor(cfg: ModelConfig, embedding_dim: int = 0) -> MaskPredictor:
    """The mask predictor ``cfg.mask_head`` names (``cfg`` resolved); ``embedding_dim``: the width
    ``E`` of the class embedding τ reads, if any."""
    common = dict(mlp_fusion=cfg.mlp_fusion, mlp_form=cfg.mlp_form, mlp_channels=cfg.mlp_channels)
    c = cfg.mask_head_channels
    if cfg.mask_head == "agnostic":
        return AgnosticMaskPredictor(c, **common)
    if cfg.mask_head == "class":
        return ClassMaskPredictor(c, cfg.num_classes, **common)
    return TransferMaskPredictor(
        c,
        TRANSFER_INPUTS[cfg.transfer_input].width(cfg.box_fc_dim, embedding_dim),
        transfer_layers=cfg.transfer_layers,
        transfer_activation=cfg.transfer_activation,
        transfer_zero_init=cfg.transfer_zero_init,
        **common,
    )
