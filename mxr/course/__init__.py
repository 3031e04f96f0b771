"""What the notebooks share: the training-length knob, where the course data lives, cached runs.

One environment variable sets training length for every notebook: ``MXR_BUDGET`` = ``smoke`` (a few
iterations on a small dataset; the default when ``CI`` is set) or ``full`` (the default otherwise).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mxr.config import (  # noqa: F401 - REPO_ROOT: the notebooks find configs/ through it
    REPO_ROOT,
    Config,
    config_to_dict,
    load_config,
)

# the COCO-layout sample is generated data: it lives with the data (mxr.data.sample); re-exported
from mxr.data.sample import COCO_SAMPLE_CATEGORIES, ensure_coco_sample  # noqa: F401
from mxr.report import read_json_file, read_json_or_none

BUDGET_MODES = ("smoke", "full")

#: Per mode: training iterations of every notebook run (the ablation's budget in full mode, so a
#: notebook run and the published row of the same config are the same run), dataset sizes.
BUDGETS: dict[str, dict[str, int]] = {
    "smoke": {"iterations": 12, "train": 48, "val": 12, "test": 12},
    "full": {"iterations": 800, "train": 2000, "val": 300, "test": 300},
}


def budget_mode() -> str:
    """``"smoke"`` or ``"full"`` from ``MXR_BUDGET``; unset means smoke under CI, full otherwise."""
    mode = os.environ.get("MXR_BUDGET", "").strip().lower()
    if not mode:
        return (
            "smoke"
            if os.environ.get("CI", "").strip().lower() not in ("", "0", "false")
            else "full"
        )
    if mode not in BUDGET_MODES:
        raise ValueError(
            f"MXR_BUDGET={mode!r} is not valid; expected one of {', '.join(BUDGET_MODES)}"
        )
    return mode


def budget(key: str) -> int:
    """A figure of the current budget, e.g. ``budget("iterations")``."""
    return BUDGETS[budget_mode()][key]


def course_data_root() -> Path:
    """The ShapesX copy the notebooks use: ``data/shapesx`` (full) or ``data/shapesx_smoke``.

    ``MXR_DATA`` overrides it.
    """
    if os.environ.get("MXR_DATA"):
        return Path(os.environ["MXR_DATA"])
    name = "shapesx" if budget_mode() == "full" else "shapesx_smoke"
    return REPO_ROOT / "data" / name


def ensure_course_data(seed: int = 0) -> Path:
    """Generate the course's ShapesX (sized by the budget) unless it exists; returns its root."""
    from mxr.data import ensure_shapesx

    b = BUDGETS[budget_mode()]
    return ensure_shapesx(
        course_data_root(), train=b["train"], val=b["val"], test=b["test"], seed=seed
    )


# --- the ablation's rows (configs/shapesx/*.yaml) and how each trains ---------------------------
STAGEWISE_ROWS: dict[str, tuple[str, ...]] = {
    "shapesx": (
        "agnostic",
        "agnostic_mlp",
        "agnostic_deep",
        "transfer_randn",
        "transfer_embed",
        "transfer_cls",
        "transfer_box",
        "transfer_clsbox",
        "transfer_clsbox_1layer",
        "transfer_clsbox_relu",
        "transfer_mlp",
        "transfer_cls_mlp",
        "transfer_embed_mlp",
        "oracle",
    ),
}
"""The Table 1 rows of each preset, trained the paper's way: the mask branch alone, on the frozen
detector of their seed (``configs/<preset>/detector.yaml``, trained once per seed and shared)."""

END_TO_END_ROWS: dict[str, tuple[str, ...]] = {
    "shapesx": ("transfer_mlp_e2e", "transfer_mlp_nostopgrad_e2e"),
}
"""The Table 1d / Table 2 rows, trained end to end: row ``<name>_e2e`` is ``configs/<preset>/<name>.yaml``."""

E2E_SUFFIX = "_e2e"
DETECTOR_ROW = "detector"
"""The stage-1 config of a preset (``configs/<preset>/detector.yaml``), one run per seed."""

PRESETS: dict[str, tuple[str, ...]] = {
    name: (*rows, *END_TO_END_ROWS.get(name, ())) for name, rows in STAGEWISE_ROWS.items()
}
"""Rows of each preset, in table order: the stage-wise rows, then the end-to-end ones."""


def config_name(row: str) -> str:
    """The config file stem of an ablation row: ``transfer_mlp_e2e`` -> ``transfer_mlp``."""
    return row.removesuffix(E2E_SUFFIX)


def protocol(preset: str, row: str) -> str:
    """``"stage-wise"`` (mask branch on the seed's frozen detector) or ``"end to end"``."""
    return "stage-wise" if row in STAGEWISE_ROWS.get(preset, ()) else "end to end"


def course_config(variant: str, **train_overrides: Any) -> Config:
    """The ShapesX config of ``variant`` pointed at the course data and sized by the budget. Extra
    keyword args override ``train`` (e.g. ``seed=1``, ``iterations=200``).

    ``variant`` names an ablation row: a Table 1 row (``agnostic_mlp``, ``transfer_mlp``, ...)
    trains the paper's way, its mask branch alone on the frozen detector of its seed
    (:func:`detector_checkpoint`); ``<config>_e2e`` (e.g. ``transfer_mlp_e2e``), ``detector`` and
    every config outside Table 1 (``transfer_mlp_nostopgrad``) train end to end. Iterations scale
    with the budget (a row's 800 at full budget; the detector's 2,400, three times a row's)."""
    path = REPO_ROOT / "configs" / "shapesx" / f"{config_name(variant)}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ValueError(f"variant {variant!r} is not valid; expected one of {', '.join(choices)}")
    cfg = load_config(path)
    scaled = cfg.train.iterations * budget("iterations") // BUDGETS["full"]["iterations"]
    iters = scaled if variant == DETECTOR_ROW else train_overrides.pop("iterations", scaled)
    sized = {
        "iterations": iters,
        "warmup_iters": min(cfg.train.warmup_iters, max(1, iters // 10)),
        "checkpoint_every": iters,
        "log_every": max(1, min(cfg.train.log_every, iters // 4)),
    }
    train = dataclasses.replace(cfg.train, **{**sized, **train_overrides})
    if variant in STAGEWISE_ROWS["shapesx"]:
        init = str(detector_checkpoint(train.seed))
        train = dataclasses.replace(train, init_from=init, trainable="mask")
    data = dataclasses.replace(cfg.data, root=str(course_data_root()))
    return dataclasses.replace(cfg, data=data, train=train)


def detector_checkpoint(seed: int = 0) -> Path:
    """Where the course's stage-1 detector of ``seed`` is cached (``runs_dir()/detector-seed<k>``);
    every stage-wise course run of that seed starts from it (:func:`train_or_load` trains it first)."""
    return runs_dir() / f"detector-seed{seed}" / "last.pt"


def runs_dir() -> Path:
    """Where the notebooks' runs are cached: ``runs/course/<budget mode>/``.

    ``MXR_RUNS`` overrides the ``runs/course`` part (e.g. a temporary folder for a test that must
    train rather than reuse a cached run).
    """
    base = (
        Path(os.environ["MXR_RUNS"])
        if os.environ.get("MXR_RUNS")
        else REPO_ROOT / "runs" / "course"
    )
    return base / budget_mode()


def ablation_dir() -> Path:
    """Where :func:`train_or_load` looks for a finished ablation run of the same config
    (``runs/results/shapesx_sw``, as ``docs/results.md`` runs it; ``MXR_ABLATION`` overrides)."""
    env = os.environ.get("MXR_ABLATION")
    return Path(env) if env else REPO_ROOT / "runs" / "results" / "shapesx_sw"


# --- is this the same run? (the notebooks' cache, the training panel and the ablation ask) ---
_BOOKKEEPING = ("checkpoint_every", "log_every")  # train fields that do not change what a run does
#: A run's copy of its generated data's ``manifest.json`` (seed, parameters, counts): data with an
#: equal manifest is the same data, wherever the clone now sits.
DATA_MANIFEST = "data_manifest.json"


def _repo_path(path: str) -> Path:
    """A path of a config, a relative one counted from the repository."""
    p = Path(path)
    return (p if p.is_absolute() else REPO_ROOT / p).resolve()


@functools.lru_cache(maxsize=256)
def _sha256_of(path: Path, size: int, mtime_ns: int) -> str:
    from mxr.engine.stagewise import file_sha256

    return file_sha256(path)


def _file_identity(path: str) -> str:
    """``sha256:<hex>`` of the file at ``path`` (the same detector wherever it was copied), or its
    resolved path while it does not exist."""
    p = _repo_path(path)
    if not p.is_file():
        return str(p)
    st = p.stat()
    return "sha256:" + _sha256_of(p, st.st_size, st.st_mtime_ns)


def _comparable(section: dict[str, Any], name: str) -> dict[str, Any]:
    out = dict(section or {})
    if name == "train":
        for key in _BOOKKEEPING:
            out.pop(key, None)
        if out.get("init_from"):  # a stage-2 run: its detector counts by its bytes, not its path
            out["init_from"] = _file_identity(out["init_from"])
    if name == "data" and out.get("root"):  # a relative root counts from the repository
        out["root"] = str(_repo_path(out["root"]))
    return out


def same_run_config(stored: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether a run's stored (resolved) ``config.yaml`` is the run ``wanted`` asks for: equal
    ``train`` (bookkeeping aside) and ``data`` sections, and every ``model`` field ``wanted`` sets
    (``None`` is filled in at training, so any stored value fits). A field the stored config lacks
    counts as its default (it was added to mxr after that run)."""
    defaults = config_to_dict(Config())
    stored = {name: {**defaults[name], **(stored.get(name) or {})} for name in defaults}
    for name in ("train", "data"):
        if _comparable(stored[name], name) != _comparable(wanted[name], name):
            return False
    return all(v is None or stored["model"].get(k) == v for k, v in wanted["model"].items())


def same_run(run_dir: str | Path, cfg: Config) -> bool:
    """Whether the run in ``run_dir`` trained ``cfg`` (:func:`same_run_config` on its
    ``config.yaml``). Its data counts as ``cfg``'s when the roots agree, or when it recorded
    (:func:`record_data`) a manifest equal to that of ``cfg.data.root``: a clone that was moved,
    or runs copied from another clone, keep their runs."""
    run_dir, wanted = Path(run_dir), config_to_dict(cfg)
    try:
        stored = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return False
    recorded = read_json_or_none(run_dir / DATA_MANIFEST)
    if recorded is not None and recorded == read_json_or_none(
        Path(cfg.data.root) / "manifest.json"
    ):
        stored["data"] = {**(stored.get("data") or {}), "root": wanted["data"]["root"]}
    return same_run_config(stored, wanted)


def record_data(run_dir: str | Path, cfg: Config) -> None:
    """Copy the manifest of ``cfg``'s generated data (if it has one) into ``run_dir``."""
    manifest = Path(cfg.data.root) / "manifest.json"
    if manifest.is_file():
        shutil.copy2(manifest, Path(run_dir) / DATA_MANIFEST)


def _finished_twin(cfg: Config) -> Path | None:
    """A finished run trained with exactly ``cfg``, or ``None``: an ablation run under
    :func:`ablation_dir`, or another of the notebooks' runs under :func:`runs_dir` (several notebook
    runs share one config, e.g. a notebook's run and the training panel's default)."""
    candidates = [
        (p.parent, "result.json") for p in sorted(ablation_dir().glob("*/seed*/config.yaml"))
    ] + [(p.parent, "eval.json") for p in sorted(runs_dir().glob("*/config.yaml"))]
    for run, finished in candidates:
        if (run / finished).is_file() and (run / "last.pt").is_file() and same_run(run, cfg):
            return run
    return None


def train_or_load(
    name: str, cfg: Config, *, progress: bool = True, callback=None
) -> dict[str, Any]:
    """Train ``cfg`` into ``runs_dir()/name`` unless a finished run with the same config is there.

    Returns ``{"model", "eval", "out_dir", "metrics", "cached"[, "adopted"]}``; the model is in eval
    mode. ``adopted`` is true when the weights came from a finished twin run (see :func:`_finished_twin`).
    """
    from mxr.engine import model_from_checkpoint, train

    seed = cfg.train.seed
    if cfg.train.init_from and _repo_path(cfg.train.init_from) == _repo_path(
        str(detector_checkpoint(seed))
    ):
        train_or_load(
            f"detector-seed{seed}", course_config("detector", seed=seed), progress=progress
        )
    out = runs_dir() / name
    eval_path = out / "eval.json"
    evaluation = read_json_or_none(eval_path)  # None: not evaluated, or cut short by a stop
    if evaluation is not None and (out / "last.pt").is_file() and same_run(out, cfg):
        if not (out / DATA_MANIFEST).is_file():  # a run from before runs recorded their data
            record_data(out, cfg)
        return {
            "model": model_from_checkpoint(out / "last.pt"),
            "eval": evaluation,
            "out_dir": out,
            "metrics": out / "metrics.jsonl",
            "cached": True,
        }
    # Not a finished run of this config: an evaluation left by an older run must not survive into
    # this one, or an interrupted training would later pass for a finished run.
    eval_path.unlink(missing_ok=True)
    twin = _finished_twin(cfg)
    if twin is not None:
        # A finished run (the published ablation's, or another notebook's) already trained this
        # exact config: take its weights and let train() (resuming a finished run) only evaluate
        # them on the validation split.
        out.mkdir(parents=True, exist_ok=True)
        for f in ("last.pt", "config.yaml", "metrics.jsonl"):
            shutil.copy2(twin / f, out / f)
        shown = twin.relative_to(REPO_ROOT) if twin.is_relative_to(REPO_ROOT) else twin.name
        print(f"{name}: using the finished run {shown} (same config); evaluating it on val")
    result = train(cfg, out, resume=twin is not None, progress=progress, callback=callback)
    record_data(out, cfg)
    return {
        # from the checkpoint, as a cached run is: a whole model (a stage-2 run's detector unfrozen)
        "model": model_from_checkpoint(out / "last.pt"),
        "eval": result["eval"],
        "out_dir": out,
        "metrics": Path(result["metrics"]),
        "cached": False,
        "adopted": twin is not None,
    }


def run_origin(run: dict[str, Any]) -> str:
    """Where a :func:`train_or_load` run came from: ``"cached"`` (this notebook run, reloaded),
    ``"adopted"`` (a finished twin's weights, evaluated here) or ``"trained"`` (trained here)."""
    if run.get("cached"):
        return "cached"
    return "adopted" if run.get("adopted") else "trained"


def published_results(path: str | Path | None = None) -> dict[str, Any] | None:
    """The ablation results the docs quote (``docs/results.json``, written by ``python -m mxr
    ablate``), or ``None`` when the file is absent. Notebooks read numbers from here, never retype them.
    """
    path = Path(path) if path is not None else REPO_ROOT / "docs" / "results.json"
    if not path.is_file():
        return None
    expected = "a JSON object with a 'rows' mapping (mxr ablate output)"
    data = read_json_file(path, expected, "results file")
    if not isinstance(data.get("rows"), dict):
        raise ValueError(f"{path}: field 'rows' is missing or not a mapping; expected {expected}")
    return data


# --------------------------------------------------------------------------------------------------
# the training panel's choices (mxr.course.widgets shows them; notebook_runs primes their runs)
# --------------------------------------------------------------------------------------------------
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

#: The panel's choices that give each of :data:`NOTEBOOK_VARIANTS` (``config_from_choices`` of
#: them is the same run as ``course_config(variant)``; missing keys take :func:`default_choices`).
VARIANT_CHOICES: dict[str, dict[str, Any]] = {
    "agnostic": {"mask_head": "agnostic", "mlp_fusion": False},
    "agnostic_mlp": {"mask_head": "agnostic", "mlp_fusion": True},
    "oracle": {"mask_head": "oracle", "mlp_fusion": False},
    "transfer_embed": {"mask_head": "transfer", "transfer_input": "embed", "mlp_fusion": False},
    "transfer_embed_mlp": {"mask_head": "transfer", "transfer_input": "embed"},
    "transfer_randn": {"mask_head": "transfer", "transfer_input": "randn", "mlp_fusion": False},
    "transfer_cls": {"mask_head": "transfer", "transfer_input": "cls", "mlp_fusion": False},
    "transfer_box": {"mask_head": "transfer", "transfer_input": "box", "mlp_fusion": False},
    "transfer_clsbox": {"mask_head": "transfer", "transfer_input": "cls+box", "mlp_fusion": False},
    "transfer_mlp": {"mask_head": "transfer", "transfer_input": "cls+box"},
    "transfer_mlp_e2e": {
        "mask_head": "transfer",
        "transfer_input": "cls+box",
        "protocol": "end to end",
    },
    "transfer_mlp_nostopgrad": {
        "mask_head": "transfer",
        "transfer_input": "cls+box",
        "stop_grad": False,
        "protocol": "end to end",
    },
}


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
    from mxr.model.transfer import TRANSFER_INPUTS

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
    from mxr.model.transfer import TRANSFER_INPUTS

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


#: The ShapesX configs the notebooks train (each cached as ``runs_dir()/<variant>``): the runs they
#: look inside, trained stage-wise on the seed-0 detector (the controls: class-agnostic with and
#: without the MLP, the oracle; τ(embed)+MLP and τ(cls+box)+MLP), and the stop-gradient switch's
#: end-to-end pair for notebook 03 (stop-gradient matters only while the detector learns). The
#: other ablation rows are read from the published three-seed ablation (``docs/results.json``).
NOTEBOOK_VARIANTS = (
    "agnostic",
    "agnostic_mlp",
    "oracle",
    "transfer_embed_mlp",
    "transfer_mlp",
    "transfer_mlp_e2e",
    "transfer_mlp_nostopgrad",
)


def notebook_runs() -> list[tuple[str, Config]]:
    """Every training run the notebooks ask for, as ``(name, config)`` (names as in the notebooks)."""
    runs = [(v, course_config(v)) for v in NOTEBOOK_VARIANTS]
    # notebook 04's panel run (the panel's default; its other comparisons are the variants' runs)
    runs.append((run_name(default_choices()), config_from_choices(default_choices())))
    return runs


def _prime_one(job: tuple[str, Config]) -> str:
    name, cfg = job
    return f"{name}: {run_origin(train_or_load(name, cfg, progress=False))}"


def prime(jobs: int | None = None) -> None:
    """Train the notebooks' runs ahead of them, ``jobs`` single-threaded processes at a time.

    Two rounds: first the stage-1 detector(s) beside the end-to-end runs (neither needs the other),
    then the stage-wise runs, which start from a detector. Each round runs ``jobs`` one-thread
    trainings side by side: on a 2-core machine two of them finish sooner than the same two run one
    after the other with two threads each (small convolutions scale poorly across threads).
    Finished runs are reused, so this is cheap when the cache is warm. ``make run`` calls it before
    the notebooks.
    """
    import time

    from mxr.engine import in_processes
    from mxr.report import cpu_count

    jobs = jobs or max(1, min(2, cpu_count()))
    ensure_course_data()
    todo = notebook_runs()
    stagewise = [job for job in todo if job[1].train.trainable == "mask"]
    seeds = sorted({cfg.train.seed for _, cfg in stagewise})
    detectors = [(f"detector-seed{k}", course_config("detector", seed=k)) for k in seeds]
    rounds = (detectors + [job for job in todo if job not in stagewise], stagewise)
    t0 = time.perf_counter()
    print(f"priming {len(todo)} notebook runs and {len(detectors)} detector(s) "
          f"({budget_mode()} budget) with {jobs} processes")  # fmt: skip
    for batch in rounds:
        for _, line in in_processes(_prime_one, batch, jobs, threads=cpu_count() // jobs or 1):
            print(f"  {line} ({time.perf_counter() - t0:.0f} s)", flush=True)
