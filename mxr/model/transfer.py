"""The weight transfer function τ (Hu et al., CVPR 2018, Sec. 3.1) and its inputs.

τ maps class ``c``'s detection weights ``w_det^c`` (``"cls"``: ``cls_score.weight[c]`` ``(D,)``,
``"box"``: ``bbox_pred.weight[4c:4c+4]`` flattened ``(4D,)``, ``"cls+box"``: ``(5D,)``; D = 1024
in the paper) or a fixed, never trained class embedding ``e^c`` ``(E,)`` (``"embed"``: the paper's
GloVe row; ``"randn"``: a fixed random vector, its negative row; ``"cls+embed"``: ``[cls row, e^c]``)
to the class's mask weights ``w_seg^c``: one 1×1 conv filter over the mask features, no bias.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

#: The parts τ's input is made of, in concatenation order, for each ``transfer_input``.
TRANSFER_INPUT_PARTS: dict[str, tuple[str, ...]] = {
    "cls": ("cls",),
    "box": ("box",),
    "cls+box": ("cls", "box"),
    "embed": ("embed",),
    "randn": ("embed",),
    "cls+embed": ("cls", "embed"),
}


def uses_embedding(transfer_input: str) -> bool:
    """Whether τ's input holds a fixed class embedding (``embed``, ``randn``, ``cls+embed``)."""
    return "embed" in TRANSFER_INPUT_PARTS[transfer_input]


def randn_embedding(num_classes: int, dim: int, seed: int) -> Tensor:
    """The paper's ``randn`` row: N(0, 1) ``(num_classes, dim)`` float32 from its own generator."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(num_classes, dim, generator=g, dtype=torch.float32)


def transfer_input_dim(
    transfer_input: str, representation_size: int, embedding_dim: int = 0
) -> int:
    """Length of τ's input: ``D`` per ``cls`` part, ``4D`` per ``box`` part, ``E`` per embedding."""
    size = {"cls": representation_size, "box": 4 * representation_size, "embed": embedding_dim}
    return sum(size[p] for p in TRANSFER_INPUT_PARTS[transfer_input])


def read_detection_weights(
    box_predictor: FastRCNNPredictor, classes: Tensor, transfer_input: str, stop_grad: bool = True
) -> Tensor:
    """``w_det`` of ``classes`` ``(K,)`` (background allowed) -> ``(K, D)``, ``(K, 4D)`` or
    ``(K, 5D)`` for ``"cls"``, ``"box"`` or ``"cls+box"``; ``stop_grad`` detaches them, so a loss
    on τ's output does not reach the box predictor."""
    if transfer_input not in ("cls", "box", "cls+box"):
        raise ValueError(
            f"transfer_input={transfer_input!r} is not valid; expected 'cls', 'box' or 'cls+box'"
        )
    w = box_predictor.bbox_pred.weight  # (4C, D): rows 4c..4c+3 belong to class c
    rows = {"cls": box_predictor.cls_score.weight, "box": w.view(-1, 4 * w.shape[1])}
    parts = [rows[p][classes] for p in TRANSFER_INPUT_PARTS[transfer_input]]
    w_det = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
    return w_det.detach() if stop_grad else w_det


class WeightTransfer(nn.Module):
    """τ: ``(K, d_in)`` detection weights -> ``(K, d_out)`` mask weights, by one Linear or Linear ->
    ReLU/LeakyReLU(0.1) -> Linear (no output activation: mask weights may be negative).
    ``zero_init=True`` zeroes the first layer, so training fills it only in the span of set A's
    w_det rows and τ ignores the rest of a B class's w_det (a random layer turns it into noise)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        layers: int = 2,
        hidden_dim: int | None = None,
        activation: str = "leaky_relu",
        zero_init: bool = False,
    ) -> None:
        super().__init__()
        hidden_dim = hidden_dim or out_dim
        if layers == 1:
            self.mlp = nn.Sequential(nn.Linear(in_dim, out_dim))
        elif layers == 2:
            act = nn.LeakyReLU(0.1) if activation == "leaky_relu" else nn.ReLU()
            self.mlp = nn.Sequential(
                nn.Linear(in_dim, hidden_dim), act, nn.Linear(hidden_dim, out_dim)
            )
        else:
            raise ValueError(f"transfer_layers={layers!r} is not valid; expected 1 or 2")
        if zero_init:
            nn.init.zeros_(self.mlp[0].weight)

    def forward(self, w_det: Tensor) -> Tensor:
        return self.mlp(w_det)
