"""Configuration: one validated dataclass per concern (model, data, train), plus file loading.

Config files are YAML (``.yaml``/``.yml``) or TOML (``.toml``) with up to three sections, ``model``,
``data`` and ``train``, whose keys are the fields of :class:`ModelConfig`, :class:`DataConfig` and
:class:`TrainConfig`. Unknown keys and bad values raise ``ValueError`` naming the key.

Example::

    cfg = load_config("configs/shapesx/transfer_mlp.yaml", overrides=["train.iterations=100"])
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

BACKBONES = ("tiny", "resnet18_fpn", "resnet50_fpn")
MASK_HEADS = ("agnostic", "class", "transfer")
TRANSFER_INPUTS = ("cls", "box", "cls+box", "embed", "randn", "cls+embed")
#: Transfer inputs that read their class embedding from the file ``model.class_embedding``
#: (``randn`` draws its own from ``model.init_seed``).
FILE_EMBEDDING_INPUTS = ("embed", "cls+embed")
TRANSFER_LAYERS = (1, 2)
TRANSFER_ACTIVATIONS = ("relu", "leaky_relu")
MLP_FORMS = ("light", "paper")
BOX_HEADS = ("2fc", "4conv1fc")
BOX_PREDICTOR_INITS = ("torchvision", "detectron")
OPTIMIZERS = ("sgd", "adamw")


def _choice(section: str, name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(
            f"{section}.{name}={value!r} is not valid; expected one of {', '.join(map(repr, choices))}"
        )


def _positive(section: str, name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{section}.{name}={value!r} is not valid; expected a positive integer")


@dataclass(frozen=True)
class ModelConfig:
    """What to build: Mask R-CNN with FPN plus the Mask^X R-CNN mask heads.

    ``num_classes`` counts the background (label 0). ``mask_classes`` is set A: the labels whose
    instances carry mask annotations; the mask loss only sees RoIs of these classes. ``None`` for
    either means "take it from the dataset" (the engine fills it in before building).
    Head sizes left as ``None`` take the backbone's default (see :func:`ModelConfig.resolved`).
    ``transfer_zero_init`` starts τ's first layer at zero (so w_det directions set A never spans map
    to nothing); ``box_predictor_init="detectron"`` draws the box predictor as Detectron does
    (N(0, 0.01) / N(0, 0.001)). Both were tried on ShapesX and left off (``docs/results.md``).

    ``transfer_input`` names what τ reads for each class: detection weights (``"cls"``, ``"box"``,
    ``"cls+box"``), a fixed class embedding (``"embed"``: the paper's GloVe row, read from the file
    ``class_embedding`` names, relative to ``data.root`` unless absolute; ``"cls+embed"``: both,
    concatenated), or a fixed N(0, 1) vector of ``randn_dim`` numbers per class drawn from
    ``init_seed`` (``"randn"``: the paper's negative control). Embeddings are never trained.
    """

    num_classes: int | None = None
    mask_classes: tuple[int, ...] | None = None
    backbone: str = "tiny"
    mask_head: str = "transfer"
    transfer_input: str = "cls+box"
    transfer_layers: int = 2
    transfer_activation: str = "leaky_relu"
    transfer_zero_init: bool = False
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
    box_predictor_init: str = "torchvision"
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
        s = "model"
        _choice(s, "backbone", self.backbone, BACKBONES)
        _choice(s, "mask_head", self.mask_head, MASK_HEADS)
        _choice(s, "transfer_input", self.transfer_input, TRANSFER_INPUTS)
        _choice(s, "transfer_layers", self.transfer_layers, TRANSFER_LAYERS)
        _choice(s, "transfer_activation", self.transfer_activation, TRANSFER_ACTIVATIONS)
        _choice(s, "mlp_form", self.mlp_form, MLP_FORMS)
        _choice(s, "box_head", self.box_head, BOX_HEADS)
        _choice(s, "box_predictor_init", self.box_predictor_init, BOX_PREDICTOR_INITS)
        for name in ("stop_grad", "mlp_fusion", "transfer_zero_init"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"{s}.{name}={getattr(self, name)!r} is not valid; expected true or false"
                )
        if self.transfer_input in FILE_EMBEDDING_INPUTS and not self.class_embedding:
            raise ValueError(
                f"model.class_embedding is required for transfer_input={self.transfer_input!r}; "
                'expected a JSON file {"<category name>": [floats]} or an .npy file with a '
                ".names.txt beside it (see data/README.md)"
            )
        if self.class_embedding is not None and not isinstance(self.class_embedding, str):
            raise ValueError(
                f"model.class_embedding={self.class_embedding!r} is not valid; expected a file path"
            )
        _positive(s, "randn_dim", self.randn_dim)
        _positive(s, "num_classes", self.num_classes, allow_none=True)
        if self.num_classes is not None and self.num_classes < 2:
            raise ValueError(
                f"model.num_classes={self.num_classes} is not valid; expected at least 2 "
                "(background + one class)"
            )
        if self.mask_classes is not None:
            mc = self.mask_classes
            if isinstance(mc, str) or not isinstance(mc, Iterable):
                raise ValueError(
                    f"model.mask_classes={mc!r} is not valid; expected a list of labels"
                )
            mc = tuple(mc)
            object.__setattr__(self, "mask_classes", mc)
            bad = [c for c in mc if isinstance(c, bool) or not isinstance(c, int) or c < 1]
            if self.num_classes is not None:
                bad += [c for c in mc if isinstance(c, int) and c >= self.num_classes]
            if bad or not mc or len(set(mc)) != len(mc):
                raise ValueError(
                    f"model.mask_classes={mc!r} is not valid; expected distinct labels in "
                    f"1..{(self.num_classes or 0) - 1 if self.num_classes else 'num_classes-1'}"
                )
        if self.anchor_sizes is not None:
            object.__setattr__(self, "anchor_sizes", tuple(self.anchor_sizes))
        for name in (
            "min_size",
            "max_size",
            "mlp_channels",
            "mask_head_convs",
            "rpn_batch_size_per_image",
            "rpn_pre_nms_top_n_train",
            "rpn_post_nms_top_n_train",
            "rpn_pre_nms_top_n_test",
            "rpn_post_nms_top_n_test",
            "box_batch_size_per_image",
            "box_detections_per_img",
        ):
            _positive(s, name, getattr(self, name))
        for name in ("fpn_channels", "box_fc_dim", "mask_head_channels"):
            _positive(s, name, getattr(self, name), allow_none=True)
        f = self.box_positive_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f <= 1.0:
            raise ValueError(
                f"model.box_positive_fraction={f!r} is not valid; expected a number in (0, 1]"
            )
        if self.max_size < self.min_size:
            raise ValueError(
                f"model.max_size={self.max_size} is not valid; expected >= min_size={self.min_size}"
            )

    def resolved(self) -> ModelConfig:
        """A copy with every ``None`` head size replaced by the backbone's default."""
        tiny = self.backbone == "tiny"
        defaults = {
            "fpn_channels": 64 if tiny else 256,
            "box_fc_dim": 256 if tiny else 1024,
            "mask_head_channels": 64 if tiny else 256,
            "anchor_sizes": (8, 16, 32, 64)
            if tiny
            else ((16, 32, 64, 128, 256) if self.min_size < 400 else (32, 64, 128, 256, 512)),
        }
        changes = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class DataConfig:
    """Where the data is: a COCO-format image folder + annotation file per split, and the A/B split.

    Paths are relative to ``root`` unless absolute. ``split`` names set A: a path (relative to root)
    to a JSON file ``{"A": [names], "B": [names]}`` (ShapesX ships one), ``"voc"`` / ``"nonvoc"`` for
    COCO, or a list of category names or ids. ``train_masks="all"`` loads masks for every class (the
    oracle); ``"A"`` only for set A (partial supervision).
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
        _choice("data", "train_masks", self.train_masks, ("A", "all"))
        if not (isinstance(self.flip_prob, int | float) and 0.0 <= self.flip_prob <= 1.0):
            raise ValueError(
                f"data.flip_prob={self.flip_prob!r} is not valid; expected a number in [0, 1]"
            )
        if isinstance(self.split, list):
            object.__setattr__(self, "split", tuple(self.split))
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers={self.num_workers!r} is not valid; expected >= 0")

    def path(self, name: str) -> Path:
        """Absolute-or-relative path of field ``name`` (e.g. ``"val_annotations"``) under ``root``."""
        p = Path(getattr(self, name))
        return p if p.is_absolute() else Path(self.root) / p


@dataclass(frozen=True)
class TrainConfig:
    """How to train: SGD with momentum (or AdamW), linear warm-up, step decay at fractions of
    ``iterations``.

    The paper's schedule (90k iterations, steps at 60k and 80k, 500 warm-up) is the template:
    ``lr_steps=(2/3, 8/9)`` and ``warmup_iters`` in iterations. ``batch_size`` is images per process.
    """

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
    # Detectron parity and GPU-run safety (defaults keep the ShapesX runs as they were; the COCO
    # configs turn them on): biases at bias_lr_factor × lr with weight_decay_bias (None: the same
    # decay as the weights); under AMP, skip a step with a non-finite loss (GradScaler skips it
    # anyway) and stop after max_nonfinite_iters of them in a row; batches of images of one
    # orientation (landscape / portrait) per process, as Detectron and torchvision's reference do.
    bias_lr_factor: float = 1.0
    weight_decay_bias: float | None = None
    max_nonfinite_iters: int = 20
    aspect_ratio_grouping: bool = False

    def __post_init__(self) -> None:
        s = "train"
        _positive(s, "max_nonfinite_iters", self.max_nonfinite_iters)
        if not isinstance(self.aspect_ratio_grouping, bool):
            raise ValueError(
                f"train.aspect_ratio_grouping={self.aspect_ratio_grouping!r} is not valid; "
                "expected true or false"
            )
        for name in ("bias_lr_factor", "weight_decay_bias"):
            v = getattr(self, name)
            if v is None and name == "weight_decay_bias":
                continue
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise ValueError(
                    f"train.{name}={v!r} is not valid; expected a non-negative number"
                    + (" or null" if name == "weight_decay_bias" else "")
                )
        for name in ("iterations", "batch_size", "checkpoint_every", "log_every"):
            _positive(s, name, getattr(self, name))
        if self.warmup_iters < 0:
            raise ValueError(
                f"train.warmup_iters={self.warmup_iters!r} is not valid; expected >= 0"
            )
        for name in ("lr", "weight_decay", "momentum", "gamma", "warmup_factor"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise ValueError(f"train.{name}={v!r} is not valid; expected a non-negative number")
        object.__setattr__(self, "lr_steps", tuple(self.lr_steps))
        if any(not 0 < f < 1 for f in self.lr_steps) or list(self.lr_steps) != sorted(
            self.lr_steps
        ):
            raise ValueError(
                f"train.lr_steps={self.lr_steps!r} is not valid; expected increasing fractions in (0, 1)"
            )
        if self.clip_grad_norm is not None and self.clip_grad_norm <= 0:
            raise ValueError(
                f"train.clip_grad_norm={self.clip_grad_norm!r} is not valid; expected > 0 or null"
            )
        _choice(s, "device", self.device.split(":")[0], ("auto", "cpu", "cuda"))
        _choice(s, "optimizer", self.optimizer, OPTIMIZERS)


@dataclass(frozen=True)
class Config:
    """The whole experiment: ``model``, ``data`` and ``train`` sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def _section_from_dict(name: str, values: dict[str, Any], where: str) -> Any:
    cls = _SECTIONS[name]
    if not isinstance(values, dict):
        raise ValueError(
            f"{where}: section '{name}' must be a mapping, got {type(values).__name__}"
        )
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(f'{name}.{k}' for k in unknown)}; "
            f"valid keys in '{name}': {', '.join(sorted(known))}"
        )
    try:
        return cls(**values)
    except TypeError as e:  # wrong type that the validators did not catch
        raise ValueError(f"{where}: section '{name}': {e}") from e


def config_from_dict(d: dict[str, Any], where: str = "config") -> Config:
    """Build a :class:`Config` from a nested dict; ``where`` names the source in error messages."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a mapping with sections model/data/train")
    unknown = sorted(set(d) - set(_SECTIONS))
    if unknown:
        raise ValueError(
            f"{where}: unknown section(s) {', '.join(unknown)}; expected: model, data, train"
        )
    parts = {k: _section_from_dict(k, d.get(k) or {}, where) for k in _SECTIONS}
    return Config(**parts)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """A plain, JSON/YAML-serialisable nested dict (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        return v

    return {
        name: {f.name: plain(getattr(getattr(cfg, name), f.name)) for f in fields(_SECTIONS[name])}
        for name in _SECTIONS
    }


def _parse_value(text: str) -> Any:
    """Parse an override value as YAML (so ``3``, ``0.1``, ``true``, ``[1, 2]``, ``null`` work)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(d: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to a nested config dict (returns a new dict)."""
    out = {k: dict(v or {}) for k, v in d.items()}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not valid; expected section.key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2 or parts[0] not in _SECTIONS:
            raise ValueError(
                f"override key {key!r} is not valid; expected <section>.<key> with section one of "
                "model, data, train"
            )
        section, name = parts
        known = {f.name for f in fields(_SECTIONS[section])}
        if name not in known:
            raise ValueError(
                f"override key {key!r} is unknown; valid keys in '{section}': {', '.join(sorted(known))}"
            )
        out.setdefault(section, {})[name] = _parse_value(value)
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or TOML config file into a nested dict, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            d = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            d = yaml.safe_load(text) or {}
        elif path.suffix == ".json":
            d = json.loads(text)
        else:
            raise ValueError(
                f"{path}: unknown config format {path.suffix!r}; expected .yaml, .yml or .toml"
            )
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: could not parse: {e}") from e
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a mapping with sections model/data/train")
    return d


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Load a config file (or the defaults when ``path`` is None) and apply dotted overrides."""
    d = read_config_file(path) if path is not None else {}
    d = apply_overrides(d, overrides)
    return config_from_dict(d, where=str(path) if path else "config")


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


# --------------------------------------------------------------------------------------------------
# is this the same run? (the notebooks' cache, the training panel and the ablation all ask)
# --------------------------------------------------------------------------------------------------
#: The repository (a relative ``data.root`` in a stored config counts from here).
_REPO_ROOT = Path(__file__).resolve().parents[1]

#: ``train`` fields that do not change what a run computes (ignored when matching runs).
_BOOKKEEPING = ("checkpoint_every", "log_every")


def _comparable(section: dict[str, Any], name: str) -> dict[str, Any]:
    out = dict(section or {})
    if name == "train":
        for key in _BOOKKEEPING:
            out.pop(key, None)
    if name == "data" and out.get("root"):
        root = Path(out["root"])
        out["root"] = str((root if root.is_absolute() else _REPO_ROOT / root).resolve())
    return out


def same_run_config(stored: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether a run's stored ``config.yaml`` (resolved) is the run ``wanted`` asks for: equal
    ``train`` (bookkeeping fields aside) and ``data`` sections (a relative root counts from the repo),
    and every ``model`` field that ``wanted`` sets (fields it leaves as ``None`` are filled from the
    data or the backbone when training, so any stored value fits). A field the stored config lacks
    was added to mxr after that run; it counts as its default, which keeps the old behaviour."""
    defaults = config_to_dict(Config())
    stored = {name: {**defaults[name], **(stored.get(name) or {})} for name in defaults}
    for name in ("train", "data"):
        if _comparable(stored[name], name) != _comparable(wanted[name], name):
            return False
    return all(v is None or stored["model"].get(k) == v for k, v in wanted["model"].items())
