"""The training panel's choices (mask head, τ's input and structure, stop-gradient, MLP fusion,
protocol, iterations, seed) and the course config they describe; :mod:`mxr.course.widgets` shows
them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from mxr.config import Config, config_to_dict
from mxr.course.runs import budget, course_config
from mxr.errors import UserInputError
from mxr.model.transfer import TRANSFER_INPUTS

MASK_HEAD_CHOICES: tuple[str, ...] = ("agnostic", "transfer", "oracle")
"""What the panel's mask-head menu offers: class-agnostic, weight transfer, class-specific oracle."""


PROTOCOLS: tuple[str, ...] = ("stage-wise", "end to end")
"""How the panel trains: the mask branch alone on the seed's frozen detector (the paper's Table 1),
or the whole model end to end."""


STRUCTURES: dict[str, tuple[int, str]] = {
    "1-layer": (1, "leaky_relu"),
    "2-layer ReLU": (2, "relu"),
    "2-layer LeakyReLU": (2, "leaky_relu"),
}
"""τ structures: menu label -> (``model.transfer_layers``, ``model.transfer_activation``)."""


_VARIANT_OF_HEAD = {"agnostic": "agnostic", "transfer": "transfer_clsbox", "oracle": "oracle"}


#: The course config a transfer input starts from (``randn`` sets ``randn_dim``, ``embed`` the
#: embedding file); ``cls+embed`` has none of its own and starts from ``transfer_clsbox``.
_VARIANT_OF_INPUT = {
    "cls": "transfer_cls",
    "box": "transfer_box",
    "cls+box": "transfer_clsbox",
    "embed": "transfer_embed",
    "randn": "transfer_randn",
}


def choices_of(variant: str) -> dict[str, Any]:
    """The panel's choices that give the course run of ``variant`` (read off its config, so that
    :func:`config_from_choices` of them is the same run as ``course_config(variant)``)."""
    cfg = course_config(variant)
    m = cfg.model
    head = "oracle" if m.mask_head == "class" else m.mask_head  # class-specific, with B's masks
    if m.transfer_input not in TRANSFER_INPUTS or head not in MASK_HEAD_CHOICES:
        raise UserInputError(f"variant={variant!r} is not valid; its head is not on the panel")
    choices: dict[str, Any] = {
        "mask_head": head,
        "mlp_fusion": m.mlp_fusion,
        "protocol": "stage-wise" if cfg.train.trainable == "mask" else "end to end",
    }
    if head == "transfer":
        structure = (m.transfer_layers, m.transfer_activation)
        choices |= {
            "transfer_input": m.transfer_input,
            "structure": next(k for k, v in STRUCTURES.items() if v == structure),
            "stop_grad": m.stop_grad,
        }
    if config_to_dict(config_from_choices(choices)) != config_to_dict(cfg):
        raise UserInputError(
            f"variant={variant!r} is not valid; expected a config the panel's menus can build "
            "(e.g. agnostic_mlp, transfer_mlp, transfer_embed_mlp, oracle)"
        )
    return choices


def default_choices() -> dict[str, Any]:
    """The panel's starting point: τ from the class embedding with MLP fusion (the course's
    ``transfer_embed_mlp``, the variant that transfers masks to set B on ShapesX), seed 0, at the
    course budget. The paper's own default input, ``cls+box``, is one menu choice away."""
    return {
        "mask_head": "transfer",
        "transfer_input": "embed",
        "structure": "2-layer LeakyReLU",
        "stop_grad": True,
        "mlp_fusion": True,
        "iterations": budget("iterations"),
        "seed": 0,
        "protocol": "stage-wise",
    }


def checked_choices(choices: Mapping[str, Any]) -> dict[str, Any]:
    """``choices`` completed from :func:`default_choices` and checked (a ``ValueError`` names the
    key, the value and the valid options)."""
    c = {**default_choices(), **dict(choices)}
    unknown = sorted(set(c) - set(default_choices()))
    if unknown:
        raise ValueError(
            f"unknown choice(s) {', '.join(map(repr, unknown))}; expected keys "
            f"{', '.join(default_choices())}"
        )
    for key, options in (
        ("mask_head", MASK_HEAD_CHOICES),
        ("transfer_input", tuple(TRANSFER_INPUTS)),
        ("structure", tuple(STRUCTURES)),
        ("protocol", PROTOCOLS),
    ):
        if c[key] not in options:
            raise ValueError(
                f"{key}={c[key]!r} is not valid; expected one of {', '.join(map(repr, options))}"
            )
    it = c["iterations"]
    if isinstance(it, bool) or not isinstance(it, int) or it <= 0:
        raise ValueError(f"iterations={it!r} is not valid; expected a positive integer")
    seed = c["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} is not valid; expected an integer >= 0")
    c["stop_grad"], c["mlp_fusion"] = bool(c["stop_grad"]), bool(c["mlp_fusion"])
    return c


def config_from_choices(choices: Mapping[str, Any]) -> Config:
    """The course config the panel's choices describe.

    Args:
        choices: any of ``mask_head`` (``"agnostic"``, ``"transfer"``, ``"oracle"``),
            ``transfer_input`` (a key of :data:`mxr.model.transfer.TRANSFER_INPUTS`),
            ``structure`` (a key of :data:`STRUCTURES`), ``stop_grad``, ``mlp_fusion`` (bools),
            ``iterations`` and ``seed`` (``train.seed``); missing keys take
            :func:`default_choices`. Transfer input, structure and stop-grad only matter for the
            transfer head; MLP fusion applies to every head.

    Returns:
        The course config (:func:`course_config`) of ``agnostic``, ``oracle`` or the transfer
        input's ``transfer_*`` variant, with the chosen model fields, ``iterations`` and ``seed``;
        warm-up, logging and checkpointing are sized by :func:`course_config`'s one rule.
    """
    c = checked_choices(choices)
    variant = _VARIANT_OF_HEAD[c["mask_head"]]
    if c["mask_head"] == "transfer":
        variant = _VARIANT_OF_INPUT.get(c["transfer_input"], variant)
    if c["protocol"] == "end to end":
        variant += "_e2e"
    cfg = course_config(variant, iterations=c["iterations"], seed=c["seed"])
    model = dataclasses.replace(cfg.model, mlp_fusion=c["mlp_fusion"])
    if c["mask_head"] == "transfer":
        layers, activation = STRUCTURES[c["structure"]]
        # an input that reads a file reads the course data's class embedding
        embed = TRANSFER_INPUTS[c["transfer_input"]].reads_file
        model = dataclasses.replace(
            model,
            transfer_input=c["transfer_input"],
            class_embedding="annotations/class_embedding.json" if embed else model.class_embedding,
            transfer_layers=layers,
            transfer_activation=activation,
            stop_grad=c["stop_grad"],
        )
    return dataclasses.replace(cfg, model=model)


def describe_choices(choices: Mapping[str, Any]) -> str:
    """A short human-readable label of the config apart from the seed, e.g.
    ``"transfer cls+box 2-layer LeakyReLU +MLP (6 it)"`` (runs of several seeds share it)."""
    c = checked_choices(choices)
    parts = [c["mask_head"]]
    if c["mask_head"] == "transfer":
        parts += [c["transfer_input"], c["structure"]]
        if not c["stop_grad"]:
            parts.append("no stop-grad")
    if c["mlp_fusion"]:
        parts.append("+MLP")
    if c["protocol"] == "end to end":
        parts.append("end to end")
    return " ".join(parts) + f" ({c['iterations']} it)"


def run_name(choices: Mapping[str, Any]) -> str:
    """A folder name that differs whenever the choices differ, e.g. ``panel-transfer-clsbox-...``;
    a seed other than 0 adds ``-seed<n>`` (seed 0 keeps the name runs had before the seed choice)."""
    c = checked_choices(choices)
    parts = ["panel", c["mask_head"]]
    if c["mask_head"] == "transfer":
        layers, activation = STRUCTURES[c["structure"]]
        parts += [
            c["transfer_input"].replace("+", ""),
            f"{layers}{'leaky' if activation == 'leaky_relu' else 'relu'}",
            "sg" if c["stop_grad"] else "nosg",
        ]
    parts += ["mlp" if c["mlp_fusion"] else "nomlp", f"{c['iterations']}it"]
    if c["protocol"] == "end to end":
        parts.append("e2e")
    if c["seed"]:
        parts.append(f"seed{c['seed']}")
    return "-".join(parts)
