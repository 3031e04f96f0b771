"""What the notebooks share: the training-length knob, where the course data lives, cached runs.

One environment variable sets training length for every notebook: ``MXR_BUDGET`` = ``smoke`` (a few
iterations on a small dataset; the default when ``CI`` is set) or ``full`` (the default otherwise).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

from mxr.ablate import config_name, load_preset
from mxr.config import REPO_ROOT, Config, load_config
from mxr.engine.run_key import run_key
from mxr.files import read_json_file, read_json_or_none

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
    from mxr.data.shapesx import ensure_shapesx

    b = BUDGETS[budget_mode()]
    return ensure_shapesx(
        course_data_root(), train=b["train"], val=b["val"], test=b["test"], seed=seed
    )


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
    iters = scaled if variant == "detector" else train_overrides.pop("iterations", scaled)
    sized = {
        "iterations": iters,
        "warmup_iters": min(cfg.train.warmup_iters, max(1, iters // 10)),
        "checkpoint_every": iters,
        "log_every": max(1, min(cfg.train.log_every, iters // 4)),
    }
    train = dataclasses.replace(cfg.train, **{**sized, **train_overrides})
    if variant in load_preset("shapesx").stagewise:
        init = str(detector_checkpoint(train.seed))
        train = dataclasses.replace(train, init_from=init, trainable="mask")
    data = dataclasses.replace(cfg.data, root=str(ensure_course_data()))
    return dataclasses.replace(cfg, data=data, train=train)


def detector_checkpoint(seed: int = 0) -> Path:
    """The course's stage-1 detector of ``seed`` (``course_config("detector", seed=seed)``'s run
    folder); every stage-wise course run of that seed starts from it, and :func:`train_or_load`
    trains it first when it is missing."""
    return run_dir(course_config("detector", seed=seed)) / "last.pt"


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


def run_dir(cfg: Config) -> Path:
    """The folder of ``cfg``'s run: ``runs_dir()/<the first 12 hex digits of its run key>``
    (:func:`mxr.engine.run_key.run_key`), so two names for one config share one run."""
    return runs_dir() / run_key(cfg)[:12]


@dataclasses.dataclass
class CourseRun:
    """A finished course run, as :func:`train_or_load` returns it: the model (in eval mode, from
    the checkpoint), its evaluation dict (:func:`mxr.evaluation.evaluate`), its folder, its
    ``metrics.jsonl`` and whether it was found finished (``cached``) or trained by this call."""

    model: Any
    eval: dict[str, Any]
    out_dir: Path
    metrics: Path
    cached: bool

    @property
    def origin(self) -> str:
        """``"cached"`` (found finished) or ``"trained"`` (by this call)."""
        return "cached" if self.cached else "trained"


def train_or_load(
    name: str, cfg: Config, *, progress: bool = True, callback=None, reuse: bool = True
) -> CourseRun:
    """``cfg``'s run, trained into :func:`run_dir` unless a finished one is there (``name`` labels
    it in messages). A stopped run resumes where it stopped. A stage-wise run of the course's
    detector (:func:`detector_checkpoint`) trains that detector first. ``reuse=False`` deletes
    the run's folder first and trains it again.

    The model comes from the checkpoint, whether this call trained it or found it.
    """
    from mxr.engine.checkpoint import model_from_checkpoint
    from mxr.engine.loop import train

    seed = cfg.train.seed
    if cfg.train.init_from and Path(cfg.train.init_from) == detector_checkpoint(seed):
        train_or_load(
            f"detector-seed{seed}", course_config("detector", seed=seed), progress=progress
        )
    out = run_dir(cfg)
    if not reuse:
        shutil.rmtree(out, ignore_errors=True)
    evaluation = read_json_or_none(out / "eval.json")  # None: not evaluated, or cut short
    cached = evaluation is not None and (out / "last.pt").is_file()
    if not cached:
        evaluation = train(cfg, out, resume=True, progress=progress, callback=callback).eval
    return CourseRun(
        model=model_from_checkpoint(out / "last.pt"),
        eval=evaluation,
        out_dir=out,
        metrics=out / "metrics.jsonl",
        cached=cached,
    )


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
