"""The weight transfer function τ (Hu et al., CVPR 2018, Sec. 3.1) and its inputs.

τ maps what it reads for class ``c`` — the detection weights ``w_det^c`` and/or a fixed, never
trained class embedding ``e^c`` — to the class's mask weights ``w_seg^c``: one 1×1 conv filter over
the mask features, no bias. What it reads is ``model.transfer_input``, one of
:data:`TRANSFER_INPUTS`: each input's :class:`TransferInput` says which parts it concatenates, how
wide it is and where its embedding comes from. Config checks, the model, the course panel and the
docs read that registry; a new input is one entry there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

#: The parts τ's input is made of: ``cls`` = ``cls_score.weight[c]`` ``(D,)``, ``box`` =
#: ``bbox_pred.weight[4c:4c+4]`` flattened ``(4D,)`` (D = 1024 in the paper), ``embed`` = the class
#: embedding's row ``e^c`` ``(E,)``.
PARTS = ("cls", "box", "embed")
#: Where an ``embed`` part's ``(C, E)`` embedding comes from: the file ``model.class_embedding``
#: (read by name, e.g. the paper's GloVe), or N(0, 1) drawn from ``model.init_seed`` with
#: ``model.randn_dim`` columns (:func:`randn_embedding`).
EMBEDDING_SOURCES = ("file", "randn")


@dataclass(frozen=True)
class TransferInput:
    """One ``model.transfer_input``: its ``parts`` (of :data:`PARTS`, in concatenation order),
    ``embedding`` (one of :data:`EMBEDDING_SOURCES` when it has an ``embed`` part, else ``None``)
    and ``description`` (what it reads, as docs and the course panel show it)."""

    name: str
    parts: tuple[str, ...]
    description: str
    embedding: str | None = None

    def __post_init__(self) -> None:
        if not self.parts or not set(self.parts) <= set(PARTS):
            raise ValueError(f"transfer input {self.name!r}: parts {self.parts!r}, not of {PARTS}")
        if ("embed" in self.parts) != (self.embedding in EMBEDDING_SOURCES):
            raise ValueError(
                f"transfer input {self.name!r}: embedding={self.embedding!r}; expected one of "
                f"{EMBEDDING_SOURCES} with an 'embed' part, None without one"
            )

    @property
    def reads_file(self) -> bool:
        """Whether its embedding is read from the file ``model.class_embedding``."""
        return self.embedding == "file"

    def width(self, representation_size: int, embedding_dim: int = 0) -> int:
        """Length of τ's input: ``D`` per ``cls`` part, ``4D`` per ``box`` part, ``E`` per ``embed``."""
        size = {"cls": representation_size, "box": 4 * representation_size, "embed": embedding_dim}
        return sum(size[p] for p in self.parts)

    def read(
        self,
        box_predictor: FastRCNNPredictor,
        embedding: Tensor | None,
        classes: Tensor,
        stop_grad: bool = True,
    ) -> Tensor:
        """τ's input for ``classes`` ``(K,)`` (background allowed) -> ``(K, width)``: the parts'
        rows side by side, from the box predictor and/or ``embedding`` ``(C, E)``; ``stop_grad``
        detaches them, so a loss on τ's output does not reach the box predictor."""
        w = box_predictor.bbox_pred.weight  # (4C, D): rows 4c..4c+3 belong to class c
        rows = {"cls": box_predictor.cls_score.weight, "box": w.view(-1, 4 * w.shape[1])}
        parts = [(embedding if p == "embed" else rows[p])[classes] for p in self.parts]
        x = torch.cat([r.to(parts[0].dtype) for r in parts], dim=1) if len(parts) > 1 else parts[0]
        return x.detach() if stop_grad else x


#: Every ``model.transfer_input``, by name, in menu order: ``cls+box`` is the paper's default,
#: ``embed`` its GloVe row (Table 1a), ``randn`` its negative control.
TRANSFER_INPUTS: dict[str, TransferInput] = {
    t.name: t
    for t in (
        TransferInput("cls", ("cls",), "classification weights"),
        TransferInput("box", ("box",), "box-regression weights"),
        TransferInput("cls+box", ("cls", "box"), "both: the paper's"),
        TransferInput("embed", ("embed",), "class embedding", embedding="file"),
        TransferInput("randn", ("embed",), "random vector: control", embedding="randn"),
        TransferInput("cls+embed", ("cls", "embed"), "both", embedding="file"),
    )
}


def randn_embedding(num_classes: int, dim: int, seed: int) -> Tensor:
    """The paper's ``randn`` row: N(0, 1) ``(num_classes, dim)`` float32 from its own generator."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(num_classes, dim, generator=g, dtype=torch.float32)


def read_detection_weights(
    box_predictor: FastRCNNPredictor, classes: Tensor, transfer_input: str, stop_grad: bool = True
) -> Tensor:
    """``w_det`` of ``classes`` ``(K,)`` (background allowed) -> ``(K, D)``, ``(K, 4D)`` or
    ``(K, 5D)`` for ``"cls"``, ``"box"`` or ``"cls+box"``: what τ reads for those inputs."""
    spec = TRANSFER_INPUTS.get(transfer_input)
    if spec is None or spec.embedding is not None:
        detection = [k for k, t in TRANSFER_INPUTS.items() if t.embedding is None]
        raise ValueError(
            f"transfer_input={transfer_input!r} is not valid here; expected one that reads only "
            f"detection weights: {', '.join(map(repr, detection))}"
        )
    return spec.read(box_predictor, None, classes, stop_grad)


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
