"""The weight transfer function τ and the detection-weight readout (Hu et al., CVPR 2018, Sec. 3.1).

For class ``c`` the detection weights ``w_det^c`` are read out of the box predictor:

* ``"cls"``: ``cls_score.weight[c]``                       -> ``(D,)``
* ``"box"``: ``bbox_pred.weight[4c:4c+4]`` flattened      -> ``(4D,)``
* ``"cls+box"``: their concatenation                      -> ``(5D,)``

where ``D`` is the box head's representation size (1024 in the paper). τ maps ``w_det^c`` to the
class's mask weights ``w_seg^c`` (one 1×1 conv filter over the mask features, no bias).

τ may instead read a fixed class embedding ``e^c`` (``(E,)``, a buffer of the RoI heads, never
trained, so stop-gradient is moot for it): ``"embed"`` (the paper's GloVe row, from a file),
``"randn"`` (a fixed random vector per class, the paper's negative row) and ``"cls+embed"``
(``[cls row, e^c]``). :func:`transfer_input_of` reads any of them.
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
    """A fixed N(0, 1) vector per class, ``(num_classes, dim)`` float32, drawn from its own generator
    seeded with ``seed`` (the global RNG is untouched): the paper's ``randn`` row."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(num_classes, dim, generator=g, dtype=torch.float32)


def transfer_input_dim(
    transfer_input: str, representation_size: int, embedding_dim: int = 0
) -> int:
    """Length of τ's input: ``D`` per ``cls`` part, ``4D`` per ``box`` part, ``E`` per embedding."""
    size = {"cls": representation_size, "box": 4 * representation_size, "embed": embedding_dim}
    return sum(size[p] for p in TRANSFER_INPUT_PARTS[transfer_input])


def transfer_input_of(
    box_predictor: FastRCNNPredictor,
    embedding: Tensor | None,
    classes: Tensor,
    transfer_input: str,
    stop_grad: bool = True,
) -> Tensor:
    """τ's input for ``classes`` ``(K,)`` -> ``(K, d)``, ``d = transfer_input_dim(...)``: the
    detection weights of ``box_predictor`` (detached when ``stop_grad``), rows of the fixed
    ``(C, E)`` class ``embedding`` (a buffer: never trained), or both, as ``transfer_input`` says."""
    if transfer_input not in TRANSFER_INPUT_PARTS:
        raise ValueError(
            f"transfer_input={transfer_input!r} is not valid; expected one of "
            f"{', '.join(map(repr, TRANSFER_INPUT_PARTS))}"
        )
    parts = TRANSFER_INPUT_PARTS[transfer_input]
    det = "+".join(p for p in parts if p != "embed")
    out = [read_detection_weights(box_predictor, classes, det, stop_grad)] if det else []
    if "embed" in parts:
        if embedding is None:
            raise ValueError(
                f"transfer_input={transfer_input!r} needs a class embedding; none was given"
            )
        out.append(embedding[classes].to(out[0].dtype if out else embedding.dtype))
    return torch.cat(out, dim=1) if len(out) > 1 else out[0]


def read_detection_weights(
    box_predictor: FastRCNNPredictor,
    classes: Tensor,
    transfer_input: str,
    stop_grad: bool = True,
) -> Tensor:
    """``w_det`` of ``classes`` ``(K,)`` (background allowed) -> ``(K, D)``, ``(K, 4D)`` or
    ``(K, 5D)`` for ``transfer_input`` ``"cls"``, ``"box"`` or ``"cls+box"``, read out of
    ``cls_score`` (Linear D -> C) and ``bbox_pred`` (Linear D -> 4C). ``stop_grad`` detaches them,
    so a loss on τ's output does not reach the box predictor."""
    if transfer_input not in ("cls", "box", "cls+box"):
        raise ValueError(
            f"transfer_input={transfer_input!r} is not valid; expected 'cls', 'box' or 'cls+box'"
        )
    w = box_predictor.bbox_pred.weight  # (4C, D): rows 4c..4c+3 belong to class c
    # one row per class: (C, D) and (C, 4D)
    rows = {"cls": box_predictor.cls_score.weight, "box": w.view(-1, 4 * w.shape[1])}
    parts = [rows[p][classes] for p in TRANSFER_INPUT_PARTS[transfer_input]]
    w_det = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
    return w_det.detach() if stop_grad else w_det


class WeightTransfer(nn.Module):
    """τ: an MLP from detection weights ``(K, d_in)`` to mask weights ``(K, d_out)``: one Linear, or
    Linear -> ReLU/LeakyReLU(0.1) -> Linear; no activation on the output (mask weights may be
    negative). ``zero_init=True`` starts the first layer's weights at zero: gradient steps add to
    them only in the span of the w_det rows τ is trained on (set A), so τ reads a B class's w_det
    only through its part in that span and ignores the rest, which a random first layer would turn
    into noise. τ then starts as a constant (class-agnostic) map through the biases.
    """

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
        """``(K, d_in)`` -> ``(K, d_out)``."""
        return self.mlp(w_det)
