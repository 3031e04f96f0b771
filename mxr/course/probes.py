"""Probes: what the detection weights hold, and what a transfer function could make of them.

On ShapesX (classes ``family-k``): :func:`neighbour_hits` asks where the B classes sit among the A
classes in ``w_det`` or ``w_seg``; :func:`interpolation_probe` puts guesses of the B mask weights
built from set A only (:func:`b_weight_guesses`) into a class-specific (oracle) head and measures B
mIoU given the true boxes. ``docs/probe_wdet.py``, ``docs/probe_interpolation.py`` and notebook 02
use them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mxr.model.transfer import read_detection_weights


def family_and_member(name: str) -> tuple[str, int]:
    """``"fork-4"`` -> ``("fork", 4)``."""
    family, k = name.rsplit("-", 1)
    return family, int(k)


def neighbour_hits(w: Tensor, names: Sequence[str], b_names: Sequence[str]) -> tuple[int, int]:
    """(same family, adjacent member) counts over the two nearest A classes (cosine, mean-centred)
    of each B class; ``w`` ``(C, d)``: one row per name (no background), ``b_names``: set B."""
    if len(w) != len(names):
        raise ValueError(f"w has {len(w)} rows but there are {len(names)} class names")
    w = nn.functional.normalize(w - w.mean(0), dim=1)
    sim = w @ w.T
    b_set = set(b_names)
    family = adjacent = 0
    for b in b_names:
        i = names.index(b)
        fam, k = family_and_member(b)
        ranked = [j for j in sim[i].argsort(descending=True).tolist() if names[j] not in b_set]
        for j in ranked[:2]:
            f2, k2 = family_and_member(names[j])
            family += f2 == fam
            adjacent += f2 == fam and abs(k2 - k) == 1
    return family, adjacent


def detection_weights(model: nn.Module) -> dict[str, Tensor]:
    """``{"cls", "box", "cls+box"}`` -> ``(C + 1, d)`` rows of the box predictor (background first),
    read as τ reads them (:func:`mxr.model.transfer.read_detection_weights`)."""
    box = model.roi_heads.box_predictor
    every = torch.arange(box.cls_score.weight.shape[0])
    return {k: read_detection_weights(box, every, k) for k in ("cls", "box", "cls+box")}


def transfer_input_rows(model: nn.Module) -> Tensor | None:
    """τ's input for every label ``(C + 1, d)`` (background first), as a transfer head reads it
    (detection weights and/or the class embedding, per ``transfer_input``); ``None`` for a head
    without τ."""
    heads = model.roi_heads
    if not heads.mask_predictor.uses_detection_weights:
        return None
    every = torch.arange(heads.box_predictor.cls_score.weight.shape[0])
    with torch.no_grad():
        return heads.read_transfer_input(every)


def _class_sets(
    names: Sequence[str], b_names: Sequence[str]
) -> tuple[list[int], list[int], list[list[int]]]:
    """The A labels (1-based), the B labels, and each B class's adjacent A members."""
    label = {n: i + 1 for i, n in enumerate(names)}
    b_set = set(b_names)
    a = [label[n] for n in names if n not in b_set]
    b = [label[n] for n in b_names]
    adjacent = []
    for n in b_names:
        fam, k = family_and_member(n)
        near = (f"{fam}-{k - 1}", f"{fam}-{k + 1}")
        adjacent.append([label[m] for m in near if m in label and m not in b_set])
        if not adjacent[-1]:
            raise ValueError(f"B class {n!r} needs an adjacent member (k - 1 or k + 1) in set A")
    return a, b, adjacent


def ridge_map(x_a: Tensor, y_a: Tensor, x_b: Tensor, strength: float = 1e-3) -> Tensor:
    """Fit ``y = W x + b`` on ``x_a``/``y_a`` by ridge regression (``strength`` relative to the
    mean squared row norm of ``x_a``, in float64) and apply it to ``x_b``."""
    # a column of ones for the bias; solved in the dual (kernel) form: fewer A classes than features
    xa1, xb1 = (nn.functional.pad(x.double(), (0, 1), value=1.0) for x in (x_a, x_b))
    lam = strength * float((x_a.double() ** 2).sum(1).mean())
    eye = torch.eye(len(x_a), dtype=torch.float64)
    alpha = torch.linalg.solve(xa1 @ xa1.T + lam * eye, y_a.double())
    return (xb1 @ xa1.T @ alpha).to(y_a.dtype)


def _class_mask_weights(model: nn.Module) -> Tensor:
    pred = model.roi_heads.mask_predictor
    if not (hasattr(pred, "weight") and pred.weight.shape[0] > 1 and hasattr(pred, "bias")):
        raise ValueError(
            f"{type(pred).__name__} has no per-class mask weights; the interpolation probe needs a "
            "class-specific mask head (model.mask_head: class, the oracle)"
        )
    return torch.cat([pred.weight.detach(), pred.bias.detach()[:, None]], 1)


def b_weight_guesses(
    model: nn.Module,
    names: Sequence[str],
    b_names: Sequence[str],
    ridge: float = 1e-3,
    embedding: Tensor | None = None,
) -> dict[str, Tensor | None]:
    """Guesses for the B classes' mask weights (1×1 filter and bias) from set A only; ``embedding``
    ``(C + 1, E)`` adds a linear map from it. Returns ``{label: (len(b_names), K + 1) or None}``
    (``None``: the model's own weights)."""
    y = _class_mask_weights(model)
    a, b, adjacent = _class_sets(names, b_names)
    same_family = [
        [i for i in a if family_and_member(names[i - 1])[0] == family_and_member(n)[0]]
        for n in b_names
    ]
    guesses: dict[str, Tensor | None] = {
        "own weights (trained with B masks)": None,
        "mean of the adjacent A members": torch.stack([y[i].mean(0) for i in adjacent]),
        "mean of the family's A members": torch.stack([y[i].mean(0) for i in same_family]),
        "mean of all A classes": y[a].mean(0).expand(len(b), -1).clone(),
    }
    w_det = detection_weights(model)
    for name, x in w_det.items():
        guesses[f"linear map from w_det ({name})"] = ridge_map(x[a], y[a], x[b], ridge)
    if embedding is not None:
        e = embedding.to(y.dtype)
        guesses["linear map from the class embedding"] = ridge_map(e[a], y[a], e[b], ridge)
    xc = nn.functional.normalize(w_det["cls"] - w_det["cls"][a].mean(0), dim=1)
    top2 = (xc[b] @ xc[a].T).topk(2, dim=1).indices
    guesses["mean of the 2 nearest A classes in w_det (cls)"] = y[a][top2].mean(1)
    return guesses


def distance_from_adjacent(x: Tensor, names: Sequence[str], b_names: Sequence[str]) -> float:
    """How far each B class's row of ``x`` ``(C, d)`` (row = label, background first) is from the
    mean of its adjacent A members' rows, relative to its own norm (rows centred on the A mean),
    averaged over B: 0 means the rows interpolate between neighbours; how well an input orders the
    classes for τ."""
    a, b, adjacent = _class_sets(names, b_names)
    xc = x.float() - x[a].float().mean(0)
    rel = [
        float((xc[i] - xc[idx].mean(0)).norm() / xc[i].norm())
        for i, idx in zip(b, adjacent, strict=True)
    ]
    return sum(rel) / len(rel)


def wdet_distance_from_adjacent(
    model: nn.Module, names: Sequence[str], b_names: Sequence[str]
) -> dict[str, float]:
    """:func:`distance_from_adjacent` of each kind of ``w_det`` (``cls``, ``box``, ``cls+box``)."""
    return {
        name: distance_from_adjacent(x, names, b_names)
        for name, x in detection_weights(model).items()
    }


def interpolation_probe(
    model: nn.Module,
    dataset: Any,
    names: Sequence[str],
    b_names: Sequence[str],
    *,
    indices: Sequence[int] | None = None,
    ridge: float = 1e-3,
    embedding: Tensor | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """B and A mIoU (0–100, true boxes) with each :func:`b_weight_guesses` in place (the model's
    weights are restored). Returns ``[{"guess", "B", "A"}, ...]`` in the order of the guesses."""
    from mxr.evaluation import instance_ious, mean_iou

    pred = model.roi_heads.mask_predictor
    own = _class_mask_weights(model).clone()
    a, b, _ = _class_sets(names, b_names)
    rows = []
    try:
        for name, guess in b_weight_guesses(model, names, b_names, ridge, embedding).items():
            w = own[b] if guess is None else guess  # only B's rows change
            with torch.no_grad():
                pred.weight[b] = w[:, :-1]
                pred.bias[b] = w[:, -1]
            ious = instance_ious(model, dataset, indices)
            row = {
                "guess": name,
                "B": 100 * (mean_iou(ious, b) or 0.0),
                "A": 100 * (mean_iou(ious, a) or 0.0),
            }
            rows.append(row)
            if progress is not None:
                progress(f"{name}: B {row['B']:.1f}, A {row['A']:.1f}")
    finally:
        with torch.no_grad():
            pred.weight.copy_(own[:, :-1])
            pred.bias.copy_(own[:, -1])
    return rows


# --------------------------------------------------------------------------------------------------
# the member sweep: one RoI segmented as each member of its family
# --------------------------------------------------------------------------------------------------
def family_labels(names: Sequence[str], name: str) -> list[int]:
    """The labels (``names`` index + 1, as the datasets number them) of every member of ``name``'s
    family, in member order: ``family_labels(names, "fork-4")`` -> labels of fork-1 … fork-5."""
    if name not in names:
        raise ValueError(f"class {name!r} is not in names; expected one of {', '.join(names)}")
    family, _ = family_and_member(name)
    ranked = sorted(
        (family_and_member(n)[1], i + 1)
        for i, n in enumerate(names)
        if family_and_member(n)[0] == family
    )
    return [label for _, label in ranked]


@torch.no_grad()
def member_sweep(
    model: nn.Module, image: Tensor, box: Tensor, labels: Sequence[int] | Tensor
) -> Tensor:
    """One RoI segmented as each class of ``labels`` (the mask head with the labels forced):
    ``image`` ``(3, H, W)``, ``box`` XYXY ``(4,)`` -> ``(L, H, W)`` mask probabilities."""

    box = torch.as_tensor(box, dtype=torch.float32).reshape(-1)
    if box.numel() != 4:
        raise ValueError(f"member_sweep: box has {box.numel()} numbers; expected one XYXY box (4)")
    labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
    if labels.numel() == 0:
        raise ValueError("member_sweep: labels is empty; expected at least one class label")
    model.eval()
    return model.masks_for_boxes([image], [box.expand(len(labels), 4).clone()], [labels])[0]


@torch.no_grad()
def member_sweep_ious(
    model: nn.Module,
    dataset: Any,
    names: Sequence[str],
    b_names: Sequence[str],
    *,
    indices: Sequence[int] | None = None,
    threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """For every B instance with a true mask (a ``masks="all"`` dataset): IoU (0–1) of its own
    class's :func:`member_sweep` mask and of each adjacent A member's with the true mask.

    Returns ``[{"index", "instance", "class", "own", "neighbours": [IoU per member]}]``.
    """
    from mxr.evaluation import instances_with_mask, mask_iou

    _, b, adjacent = _class_sets(names, b_names)
    adjacent_of = dict(zip(b, adjacent, strict=True))
    model.eval()
    rows = []
    for index in range(len(dataset)) if indices is None else indices:
        image, target = dataset[int(index)]
        labels = target["labels"].tolist()
        found = [
            (row, i)
            for row, i in enumerate(instances_with_mask(target))
            if labels[i] in adjacent_of
        ]
        if not found:
            continue
        sweeps = [[labels[i], *adjacent_of[labels[i]]] for _, i in found]
        boxes = torch.cat(
            [target["boxes"][i].expand(len(s), 4) for (_, i), s in zip(found, sweeps, strict=True)]
        )
        probs = model.masks_for_boxes([image], [boxes], [torch.tensor(sum(sweeps, []))])[0]
        chunks = probs.split([len(s) for s in sweeps])
        for (row, i), sweep, p in zip(found, sweeps, chunks, strict=True):
            gt = target["masks"][row].bool().expand(len(sweep), -1, -1)
            ious = mask_iou(p > threshold, gt).tolist()
            rows.append(
                {
                    "index": int(index),
                    "instance": int(i),
                    "class": names[sweep[0] - 1],
                    "own": ious[0],
                    "neighbours": ious[1:],
                }
            )
    return rows


def summarise_member_sweep(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Means over :func:`member_sweep_ious` rows, IoUs in 0–100: ``own`` (the B class's own mask),
    ``neighbour`` (an adjacent A member's mask, averaged over them), ``own_wins`` (the share of B
    objects, 0–1, whose own mask beats every adjacent member's) and ``objects``."""
    if not rows:
        raise ValueError("summarise_member_sweep: rows is empty; expected member_sweep_ious()")
    n = len(rows)
    return {
        "objects": float(n),
        "own": 100 * sum(r["own"] for r in rows) / n,
        "neighbour": 100 * sum(sum(r["neighbours"]) / len(r["neighbours"]) for r in rows) / n,
        "own_wins": sum(r["own"] > max(r["neighbours"]) for r in rows) / n,
    }
