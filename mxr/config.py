"""Configuration: one validated dataclass per concern (model, data, train), plus file loading.

A YAML, TOML (or JSON) file has up to three sections, ``model``, ``data`` and ``train``, keyed by the
fields of the dataclasses; unknown keys and bad values raise ``ValueError`` naming the key::

    cfg = load_config("configs/shapesx/transfer_mlp.yaml", overrides=["train.iterations=100"])
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from numbers import Real
from pathlib import Path
from typing import Any

import yaml

from mxr.errors import MissingFileError, UserInputError
from mxr.files import write_text_atomic

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

#: The repository a config's relative paths to shipped files count from (``configs/``, the GloVe
#: file): the folder that holds the ``mxr`` package.
REPO_ROOT = Path(__file__).resolve().parents[1]

BACKBONES = ("tiny", "resnet18_fpn", "resnet50_fpn")
MASK_HEADS = ("agnostic", "class", "transfer")
TRANSFER_LAYERS = (1, 2)
TRANSFER_ACTIVATIONS = ("relu", "leaky_relu")
MLP_FORMS = ("light", "paper")
BOX_HEADS = ("2fc", "4conv1fc")
BOX_PREDICTOR_INITS = ("torchvision", "detectron")
OPTIMIZERS = ("sgd", "adamw")
#: ``train.trainable``: every weight (end to end), or the mask branch alone on a frozen detector.
TRAINABLE = ("all", "mask")

#: ``data.split: {random: n, trial: t}``: the paper's random COCO splits (Figure 3), n classes in A
#: and trials 1..5 (``split_coco_dataset_randsplits.py`` in ronghanghu/seg_every_thing).
PAPER_RANDOM_SPLIT_SIZES = (20, 30, 40, 50, 60)
PAPER_RANDOM_SPLIT_TRIALS = 5
#: What a random ``data.split`` looks like, for error messages.
RANDOM_SPLIT_EXPECTED = (
    "{random: <classes in A, an integer >= 1>, seed: <an integer >= 0>} or, for the paper's COCO "
    "splits, {random: <one of 20, 30, 40, 50, 60>, trial: <1..5>}"
)

#: A field's rule: (whether a value is valid, what the error says was expected).
Rule = tuple[Callable[[Any], bool], str]


def is_int(v: Any) -> bool:
    """An integer, not a bool (the config files' and the COCO checks' rule)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A real number (numpy's too), not a bool."""
    return isinstance(v, Real) and not isinstance(v, bool)


def _one_of(choices: Sequence[Any]) -> Rule:
    return (lambda v: v in choices), "one of " + ", ".join(map(repr, choices))


_BOOL: Rule = (lambda v: isinstance(v, bool)), "true or false"
_POSITIVE: Rule = (lambda v: is_int(v) and v > 0), "a positive integer"
_POSITIVE_OR_NONE: Rule = (lambda v: v is None or (is_int(v) and v > 0)), "a positive integer"
_NON_NEGATIVE: Rule = (lambda v: is_number(v) and not v < 0), "a non-negative number"
_NON_NEGATIVE_OR_NULL: Rule = (
    (lambda v: v is None or _NON_NEGATIVE[0](v)),
    "a non-negative number or null",
)
_NON_NEGATIVE_INT: Rule = (lambda v: is_int(v) and v >= 0), "an integer >= 0"
_POSITIVE_NUMBER_OR_NULL: Rule = (lambda v: v is None or (is_number(v) and v > 0)), "> 0 or null"
_FRACTION: Rule = (lambda f: is_number(f) and 0 < f <= 1), "a number in (0, 1]"
_PROBABILITY: Rule = (lambda p: is_number(p) and 0 <= p <= 1), "a number in [0, 1]"
_PATH_OR_NONE: Rule = (lambda v: v is None or isinstance(v, str)), "a file path"


def random_split_spec(value: Any, name: str = "data.split") -> dict[str, int]:
    """``value``, a random A/B split, checked: ``{"random": n, "seed": s}`` (n classes drawn for A by
    a permutation seeded with s) or ``{"random": n, "trial": t}`` (the paper's split of n classes,
    trial t), in that key order; anything else raises one ``ValueError`` naming ``name``. Whether n
    fits the dataset's classes is checked when the split is resolved (:mod:`mxr.data.splits`)."""

    def bad(why: str) -> UserInputError:
        return UserInputError(
            f"{name}={value!r} is not valid ({why}); expected {RANDOM_SPLIT_EXPECTED}"
        )

    if not isinstance(value, Mapping):
        raise bad("not a mapping")
    if unknown := [k for k in value if k not in ("random", "seed", "trial")]:
        raise bad(f"unknown key(s) {', '.join(map(repr, unknown))}")
    if "random" not in value:
        raise bad("'random', the number of classes in A, is missing")
    if ("seed" in value) == ("trial" in value):
        raise bad("give exactly one of 'seed' and 'trial'")
    n = value["random"]
    if not (is_int(n) and n >= 1):
        raise bad(f"random={n!r} is not an integer >= 1")
    if "seed" in value:
        if not (is_int(seed := value["seed"]) and seed >= 0):
            raise bad(f"seed={seed!r} is not an integer >= 0")
        return {"random": n, "seed": seed}
    if not (is_int(trial := value["trial"]) and 1 <= trial <= PAPER_RANDOM_SPLIT_TRIALS):
        raise bad(
            f"trial={trial!r} is not one of the paper's trials 1..{PAPER_RANDOM_SPLIT_TRIALS}"
        )
    if n not in PAPER_RANDOM_SPLIT_SIZES:
        raise bad(f"the paper's splits have 20, 30, 40, 50 or 60 classes in A, not {n}")
    return {"random": n, "trial": trial}


def _invalid(section: str, name: str, value: Any, expected: str) -> UserInputError:
    return UserInputError(f"{section}.{name}={value!r} is not valid; expected {expected}")


def _check(section: str, cfg: Any, rules: Sequence[tuple[str, Rule]]) -> None:
    """Raise for the first field (of each rule's space-separated names) that breaks its rule."""
    for names, (ok, expected) in rules:
        for name in names.split():
            if not ok(value := getattr(cfg, name)):
                raise _invalid(section, name, value, expected)


@dataclass(frozen=True)
class ModelConfig:
    """What to build: Mask R-CNN with FPN plus the Mask^X R-CNN mask heads.

    ``num_classes`` counts the background; ``mask_classes`` is set A, the labels with masks (the
    mask loss sees only them); ``None`` there: from the dataset; ``None`` head sizes: the backbone's
    default (:meth:`resolved`). ``transfer_input``: what τ reads per class, a name in
    :data:`mxr.model.transfer.TRANSFER_INPUTS` (detection weights, a fixed class embedding or a
    random one); an input whose embedding is a file reads ``class_embedding`` (relative: under
    ``data.root``, else under the repository, e.g. ``configs/coco/glove_coco.npy``), ``"randn"``
    draws ``randn_dim`` N(0, 1) numbers per class from ``init_seed``.
    """

    num_classes: int | None = None
    mask_classes: tuple[int, ...] | None = None
    backbone: str = "tiny"
    mask_head: str = "transfer"
    transfer_input: str = "cls+box"
    transfer_layers: int = 2
    transfer_activation: str = "leaky_relu"
    transfer_zero_init: bool = False  # τ's first layer starts at 0 (docs/results.md)
    class_embedding: str | None = None
    randn_dim: int = 12
    stop_grad: bool = True
    mlp_fusion: bool = True
    mlp_form: str = "light"
    mlp_channels: int = 16
    min_size: int = 128
    max_size: int = 128
    backbone_weights: str | None = None
    fpn_channels: int | None = None
    box_fc_dim: int | None = None
    box_head: str = "2fc"
    box_predictor_init: str = "torchvision"  # "detectron": N(0, 0.01) / N(0, 0.001)
    mask_head_channels: int | None = None
    mask_head_convs: int = 4
    anchor_sizes: tuple[int, ...] | None = None
    rpn_batch_size_per_image: int = 256
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    box_detections_per_img: int = 100
    box_score_thresh: float = 0.05
    init_seed: int = 0

    def __post_init__(self) -> None:
        from mxr.model.transfer import TRANSFER_INPUTS  # here: mxr.model imports this module

        rules = [
            ("backbone", _one_of(BACKBONES)),
            ("mask_head", _one_of(MASK_HEADS)),
            ("transfer_input", _one_of(tuple(TRANSFER_INPUTS))),
            ("transfer_layers", _one_of(TRANSFER_LAYERS)),
            ("transfer_activation", _one_of(TRANSFER_ACTIVATIONS)),
            ("mlp_form", _one_of(MLP_FORMS)),
            ("box_head", _one_of(BOX_HEADS)),
            ("box_predictor_init", _one_of(BOX_PREDICTOR_INITS)),
            ("stop_grad mlp_fusion transfer_zero_init", _BOOL),
        ]
        _check("model", self, rules)
        if TRANSFER_INPUTS[self.transfer_input].reads_file and not self.class_embedding:
            raise UserInputError(
                f"model.class_embedding is required for transfer_input={self.transfer_input!r}; "
                'expected a JSON file {"<category name>": [floats]} or an .npy file with a '
                ".names.txt beside it (see data/README.md)"
            )
        rules = [
            ("class_embedding", _PATH_OR_NONE),
            ("randn_dim", _POSITIVE),
            ("num_classes", _POSITIVE_OR_NONE),
            ("num_classes", (lambda v: v is None or v >= 2, "at least 2 (background + one class)")),
        ]
        _check("model", self, rules)
        if (mc := self.mask_classes) is not None:
            if isinstance(mc, str) or not isinstance(mc, Iterable):
                raise _invalid("model", "mask_classes", mc, "a list of labels")
            object.__setattr__(self, "mask_classes", mc := tuple(mc))
            top = self.num_classes - 1 if self.num_classes else None
            in_range = all(is_int(c) and 1 <= c and (top is None or c <= top) for c in mc)
            if not (in_range and mc and len(set(mc)) == len(mc)):
                expected = f"distinct labels in 1..{top or 'num_classes-1'}"
                raise _invalid("model", "mask_classes", mc, expected)
        if self.anchor_sizes is not None:
            object.__setattr__(self, "anchor_sizes", tuple(self.anchor_sizes))
        rules = [
            ("min_size max_size mlp_channels mask_head_convs rpn_batch_size_per_image", _POSITIVE),
            ("rpn_pre_nms_top_n_train rpn_post_nms_top_n_train rpn_pre_nms_top_n_test", _POSITIVE),
            ("rpn_post_nms_top_n_test box_batch_size_per_image box_detections_per_img", _POSITIVE),
            ("fpn_channels box_fc_dim mask_head_channels", _POSITIVE_OR_NONE),
            ("box_positive_fraction", _FRACTION),
        ]
        _check("model", self, rules)
        if self.max_size < self.min_size:
            raise _invalid("model", "max_size", self.max_size, f">= min_size={self.min_size}")

    def resolved(self) -> ModelConfig:
        """A copy with every ``None`` head size replaced by the backbone's default."""
        tiny = self.backbone == "tiny"
        anchors = (16, 32, 64, 128, 256) if self.min_size < 400 else (32, 64, 128, 256, 512)
        defaults = {
            "fpn_channels": 64 if tiny else 256,
            "box_fc_dim": 256 if tiny else 1024,
            "mask_head_channels": 64 if tiny else 256,
            "anchor_sizes": (8, 16, 32, 64) if tiny else anchors,
        }
        changes = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class DataConfig:
    """Where the data is: a COCO-format image folder + annotation file per split, and the A/B split.

    Paths are relative to ``root`` unless absolute. ``split`` names set A: a JSON file
    ``{"A": [names], "B": [names]}`` under root, ``"voc"`` / ``"nonvoc"`` for COCO, a list of
    category names or ids, or a random split ``{random: n, seed: s}`` / ``{random: n, trial: t}``
    (:func:`random_split_spec`). ``train_masks``: ``"A"`` (partial supervision) or ``"all"`` (the
    oracle).
    """

    root: str = "data/shapesx"
    train_images: str = "train"
    train_annotations: str = "annotations/instances_train.json"
    val_images: str = "val"
    val_annotations: str = "annotations/instances_val.json"
    test_images: str = "test"
    test_annotations: str = "annotations/instances_test.json"
    split: Any = "annotations/split.json"
    train_masks: str = "A"
    flip_prob: float = 0.5
    skip_empty_train: bool = True
    num_workers: int = 0
    generate: bool = True  # ShapesX only: generate the dataset if root is missing

    def __post_init__(self) -> None:
        rules = [
            ("train_masks", _one_of(("A", "all"))),
            ("flip_prob", _PROBABILITY),
            ("num_workers", _NON_NEGATIVE_INT),
        ]
        _check("data", self, rules)
        if isinstance(self.split, list):
            object.__setattr__(self, "split", tuple(self.split))
        elif isinstance(self.split, Mapping):
            object.__setattr__(self, "split", random_split_spec(self.split))

    def path(self, name: str) -> Path:
        """Absolute-or-relative path of field ``name`` (e.g. ``"val_annotations"``) under ``root``."""
        p = Path(getattr(self, name))
        return p if p.is_absolute() else Path(self.root) / p


@dataclass(frozen=True)
class TrainConfig:
    """How to train: SGD with momentum (or AdamW), linear warm-up, step decay at fractions of
    ``iterations`` (the paper's 90k schedule, steps at 60k and 80k: ``lr_steps=(2/3, 8/9)``).
    ``batch_size`` is images per process.

    Stage-wise training (the paper's Table 1 protocol): ``init_from`` names an mxr checkpoint whose
    detector weights (backbone + FPN, RPN, box head, box predictor) are loaded before the first
    iteration; ``trainable="mask"`` then freezes them and trains the mask branch alone (mask FCN,
    τ, MLP branch, predictor). ``trainable="all"`` trains end to end (from ``init_from`` if set)."""

    iterations: int = 1500
    batch_size: int = 4
    optimizer: str = "sgd"
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 100
    warmup_factor: float = 0.001
    lr_steps: tuple[float, ...] = (2 / 3, 8 / 9)
    gamma: float = 0.1
    clip_grad_norm: float | None = None
    amp: bool = True
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    device: str = "auto"
    # Detectron parity and GPU safety (the COCO configs turn them on):
    bias_lr_factor: float = 1.0  # biases at bias_lr_factor × lr
    weight_decay_bias: float | None = None  # None: the weights' decay
    max_nonfinite_iters: int = 20  # under AMP, stop after this many skipped steps in a row
    aspect_ratio_grouping: bool = False  # batches of one orientation (landscape / portrait)
    init_from: str | None = None  # an mxr checkpoint whose detector weights start this run
    trainable: str = "all"  # "mask": the detector from init_from frozen, the mask branch trained

    def __post_init__(self) -> None:
        rules = [
            ("max_nonfinite_iters", _POSITIVE),
            ("aspect_ratio_grouping", _BOOL),
            ("bias_lr_factor", _NON_NEGATIVE),
            ("weight_decay_bias", _NON_NEGATIVE_OR_NULL),
            ("iterations batch_size checkpoint_every log_every", _POSITIVE),
            ("warmup_iters", _NON_NEGATIVE_INT),
            ("lr weight_decay momentum gamma warmup_factor", _NON_NEGATIVE),
        ]
        _check("train", self, rules)
        object.__setattr__(self, "lr_steps", steps := tuple(self.lr_steps))
        if not all(0 < f < 1 for f in steps) or list(steps) != sorted(steps):
            raise _invalid("train", "lr_steps", steps, "increasing fractions in (0, 1)")
        _check("train", self, [("clip_grad_norm", _POSITIVE_NUMBER_OR_NULL)])
        device = self.device.split(":")[0] if isinstance(self.device, str) else self.device
        if device not in ("auto", "cpu", "cuda"):
            raise _invalid("train", "device", device, "one of 'auto', 'cpu', 'cuda'")
        _check("train", self, [("optimizer", _one_of(OPTIMIZERS))])
        _check("train", self, [("trainable", _one_of(TRAINABLE)), ("init_from", _PATH_OR_NONE)])
        if self.trainable == "mask" and not self.init_from:
            expected = "a checkpoint path when train.trainable='mask' (the detector to freeze)"
            raise _invalid("train", "init_from", self.init_from, expected)


@dataclass(frozen=True)
class Config:
    """The whole experiment: ``model``, ``data`` and ``train`` sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}
_KEYS = {name: sorted(f.name for f in fields(cls)) for name, cls in _SECTIONS.items()}


def _section_from_dict(name: str, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise UserInputError(
            f"{where}: section '{name}' must be a mapping, got {type(values).__name__}"
        )
    if unknown := sorted(set(values) - set(_KEYS[name])):
        raise UserInputError(
            f"{where}: unknown key(s) {', '.join(f'{name}.{k}' for k in unknown)}; "
            f"valid keys in '{name}': {', '.join(_KEYS[name])}"
        )
    try:
        return _SECTIONS[name](**values)
    except TypeError as e:  # wrong type that the validators did not catch
        raise UserInputError(f"{where}: section '{name}': {e}") from e


def config_from_dict(d: dict[str, Any], where: str = "config") -> Config:
    """Build a :class:`Config` from a nested dict; ``where`` names the source in error messages."""
    if not isinstance(d, dict):
        raise UserInputError(f"{where}: expected a mapping with sections model/data/train")
    if unknown := sorted(set(d) - set(_SECTIONS)):
        raise UserInputError(
            f"{where}: unknown section(s) {', '.join(unknown)}; expected: model, data, train"
        )
    return Config(**{k: _section_from_dict(k, d.get(k) or {}, where) for k in _SECTIONS})


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """A plain, JSON/YAML-serialisable nested dict (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, Mapping):  # a random data.split: a copy, not the config's own dict
            return {k: plain(x) for k, x in v.items()}
        return [plain(x) for x in v] if isinstance(v, tuple | list) else v

    sections = {name: getattr(cfg, name) for name in _SECTIONS}
    return {n: {f.name: plain(getattr(s, f.name)) for f in fields(s)} for n, s in sections.items()}


def apply_overrides(d: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to a nested config dict (returns a new dict); values
    are read as YAML, so ``3``, ``0.1``, ``true``, ``[1, 2]`` and ``null`` work."""
    out = {k: dict(v or {}) for k, v in d.items()}
    for item in overrides:
        if "=" not in item:
            raise UserInputError(f"override {item!r} is not valid; expected section.key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2 or parts[0] not in _SECTIONS:
            raise UserInputError(
                f"override key {key!r} is not valid; expected <section>.<key> with section one of "
                "model, data, train"
            )
        section, name = parts
        if name not in _KEYS[section]:
            raise UserInputError(
                f"override key {key!r} is unknown; valid keys in '{section}': "
                + ", ".join(_KEYS[section])
            )
        with contextlib.suppress(yaml.YAMLError):
            value = yaml.safe_load(value)
        out.setdefault(section, {})[name] = value
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML, TOML or JSON config file into a nested dict, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"config file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            d = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            d = yaml.safe_load(text) or {}
        elif path.suffix == ".json":
            d = json.loads(text)
        else:
            raise UserInputError(
                f"{path}: unknown config format {path.suffix!r}; expected .yaml, .yml, .toml or .json"
            )
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise UserInputError(f"{path}: could not parse: {e}") from e
    if not isinstance(d, dict):
        raise UserInputError(f"{path}: expected a mapping with sections model/data/train")
    return d


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Load a config file (or the defaults when ``path`` is None) and apply dotted overrides."""
    d = apply_overrides(read_config_file(path) if path is not None else {}, overrides)
    return config_from_dict(d, where=str(path) if path else "config")


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    write_text_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
