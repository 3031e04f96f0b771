"""Probes: what the detection weights hold, and what a transfer function could make of them.

Two questions decide whether τ can segment set B on a dataset whose classes are ``family-k`` (ShapesX):

* **Where do the B classes sit?** :func:`neighbour_hits` counts, for each B class, how many of its two
  most similar A classes (cosine, mean-centred) are in its family and are its adjacent members
  (``k ± 1``). Run it on ``w_det`` and on τ's output ``w_seg``.
* **What would interpolation be worth, and can it be read off ``w_det``?** :func:`interpolation_probe`
  takes a model with a class-specific mask head (the oracle, trained with masks of every class),
  replaces the mask weights of the B classes by guesses built from set A only
  (:func:`b_weight_guesses`), and measures B mIoU given the true boxes for each guess.

``docs/probe_wdet.py`` and ``docs/probe_interpolation.py`` print both for checkpoints; notebook 02 runs
them on its own models.
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
    """(same family, adjacent member) counts over the two nearest A classes of each B class.

    Args:
        w: ``(C, d)`` one row per class, in the order of ``names`` (no background row).
        names: the class names, ``family-k``.
        b_names: the set-B names; every other name is set A.
    """
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
    read as τ reads them (:func:`mxr.model.read_detection_weights`)."""
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
        return heads.read_w_det(every)


def _class_sets(
    names: Sequence[str], b_names: Sequence[str]
) -> tuple[dict[str, int], list[int], list[int], list[list[int]]]:
    """Labels by name (1-based), the A labels, the B labels, and each B class's adjacent A members."""
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
    return label, a, b, adjacent


def ridge_map(x_a: Tensor, y_a: Tensor, x_b: Tensor, strength: float = 1e-3) -> Tensor:
    """Fit ``y = W x + b`` on the rows of ``x_a``/``y_a`` by ridge regression and apply it to ``x_b``.

    ``strength`` is relative to the mean squared norm of the ``x_a`` rows. This is the linear τ that
    the A pairs pin down best; a trained τ sees exactly these pairs. Solved in float64.
    """
    dtype = y_a.dtype
    x_a, y_a, x_b = x_a.double(), y_a.double(), x_b.double()
    xa1 = torch.cat([x_a, torch.ones(len(x_a), 1, dtype=x_a.dtype)], 1)
    xb1 = torch.cat([x_b, torch.ones(len(x_b), 1, dtype=x_b.dtype)], 1)
    lam = strength * float((x_a**2).sum(1).mean())
    alpha = torch.linalg.solve(xa1 @ xa1.T + lam * torch.eye(len(x_a), dtype=x_a.dtype), y_a)
    return (xb1 @ xa1.T @ alpha).to(dtype)


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
    """Guesses for the B classes' mask weights (1×1 filter and bias), built from set A only.

    ``embedding`` ``(C + 1, E)`` (background first; e.g. the ShapesX class embedding) adds the
    guess a linear τ reading it would make, fitted on the A pairs like the ``w_det`` ones.

    Returns ``{label: (len(b_names), K + 1) or None}``; ``None`` is the model's own weights.
    """
    y = _class_mask_weights(model)
    label, a, b, adjacent = _class_sets(names, b_names)
    b_set = set(b_names)
    same_family = [
        [label[m] for m in names if m not in b_set and family_and_member(m)[0] == family_and_member(n)[0]]
        for n in b_names
    ]  # fmt: skip
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
    guesses["mean of the 2 nearest A classes in w_det (cls)"] = torch.stack(
        [y[a][i].mean(0) for i in top2]
    )
    return guesses


def wdet_distance_from_adjacent(
    model: nn.Module, names: Sequence[str], b_names: Sequence[str]
) -> dict[str, float]:
    """How far each B class's ``w_det`` is from the mean of its adjacent A members, relative to its
    own norm (rows centred on the A mean), averaged over B: 0 means the detection weights interpolate."""
    label, a, b, adjacent = _class_sets(names, b_names)
    out = {}
    for name, x in detection_weights(model).items():
        xc = x - x[a].mean(0)
        rel = [
            float((xc[i] - xc[idx].mean(0)).norm() / xc[i].norm())
            for i, idx in zip(b, adjacent, strict=True)
        ]
        out[name] = sum(rel) / len(rel)
    return out


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
    """B and A mIoU (0–100, true boxes) of ``model`` with each :func:`b_weight_guesses` put in place.

    The model's own weights are restored afterwards. ``indices`` restricts the images (default: all);
    ``embedding`` adds the class-embedding guess (see :func:`b_weight_guesses`).

    Returns:
        ``[{"guess": label, "B": mIoU, "A": mIoU}, ...]`` in the order of the guesses.
    """
    from mxr.evaluation import instance_ious, mean_iou

    pred = model.roi_heads.mask_predictor
    own = _class_mask_weights(model).clone()
    _, a, b, _ = _class_sets(names, b_names)
    rows = []
    try:
        for name, guess in b_weight_guesses(model, names, b_names, ridge, embedding).items():
            with torch.no_grad():
                pred.weight.copy_(own[:, :-1])
                pred.bias.copy_(own[:, -1])
                if guess is not None:
                    pred.weight[b] = guess[:, :-1]
                    pred.bias[b] = guess[:, -1]
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


def plot_interpolation_probe(rows: Sequence[dict[str, Any]], title: str | None = None) -> Any:
    """Horizontal bars of B mIoU per guess (:func:`interpolation_probe` rows), grouped by kind:
    the model's own weights, guesses that use the class structure (family, member), and guesses
    read off ``w_det``. A's mIoU, the same for every guess, is the dashed line."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from mxr.viz import SET_COLOURS

    if not rows:
        raise ValueError("plot_interpolation_probe: rows is empty; expected interpolation_probe()")
    kinds = {
        "own weights": ("#333333", "own weights (trained with B masks)"),
        "mean of": ("#9e9e9e", "from the class structure (set A only)"),
        "w_det": ("#e6862e", "read off w_det (set A pairs only)"),
    }

    if any("class embedding" in r["guess"] for r in rows):
        kinds["embedding"] = ("#2a9d8f", "read off the class embedding (set A pairs only)")

    def kind(label: str) -> str:
        if "w_det" in label:
            return "w_det"
        if "class embedding" in label:
            return "embedding"
        return "own weights" if label.startswith("own") else "mean of"

    fig = Figure(figsize=(7.5, 0.42 * len(rows) + 2.2))
    ax = fig.add_subplot(1, 1, 1)
    ys = list(range(len(rows)))[::-1]
    vals = [r["B"] for r in rows]
    ax.barh(ys, vals, color=[kinds[kind(r["guess"])][0] for r in rows])
    for y, v in zip(ys, vals, strict=True):
        ax.text(v + 0.3, y, f"{v:.1f}", va="center", fontsize=8)
    ax.axvline(rows[0]["A"], ls="--", lw=1, color=SET_COLOURS["A"])
    ax.set_yticks(ys, [r["guess"] for r in rows], fontsize=8)
    lo = min(vals)
    ax.set_xlim(max(0.0, lo - 10), max(max(vals), rows[0]["A"]) + 4)
    ax.set_xlabel("B mask IoU given the true boxes (%)")
    handles = [Patch(color=c, label=lab) for c, lab in kinds.values()]
    handles.append(Patch(color=SET_COLOURS["A"], label="set A mIoU (unchanged)"))
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.4, -0.16), ncol=2)
    ax.set_title(title or "What could τ gain? B mask weights guessed from set A")
    fig.tight_layout()
    return fig
