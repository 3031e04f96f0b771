"""What the notebooks share: the training-length knob, where the course data lives, cached runs.

One environment variable sets training length for every notebook: ``MXR_BUDGET`` = ``smoke`` (a few
iterations on a small dataset; the default when ``CI`` is set) or ``full`` (the default otherwise).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from mxr.config import Config, load_config

BUDGET_MODES = ("smoke", "full")

#: Per mode: training iterations of a "main" run and a "short" comparison run, dataset sizes.
BUDGETS: dict[str, dict[str, int]] = {
    "smoke": {"iterations": 12, "short_iterations": 6, "train": 48, "val": 12, "test": 12},
    "full": {"iterations": 1000, "short_iterations": 400, "train": 2000, "val": 300, "test": 300},
}

REPO_ROOT = Path(__file__).resolve().parents[1]


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


def course_config(variant: str, *, short: bool = False, **train_overrides: Any) -> Config:
    """The ShapesX config ``configs/shapesx/<variant>.yaml`` pointed at the course data and sized
    by the budget (``short`` = the comparison-run length). Extra keyword args override ``train``."""
    path = REPO_ROOT / "configs" / "shapesx" / f"{variant}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ValueError(f"variant {variant!r} is not valid; expected one of {', '.join(choices)}")
    cfg = load_config(path)
    iters = budget("short_iterations" if short else "iterations")
    train = dataclasses.replace(
        cfg.train,
        iterations=iters,
        warmup_iters=min(cfg.train.warmup_iters, max(1, iters // 10)),
        checkpoint_every=iters,
        log_every=max(1, min(cfg.train.log_every, iters // 4)),
        **train_overrides,
    )
    data = dataclasses.replace(cfg.data, root=str(course_data_root()))
    return dataclasses.replace(cfg, data=data, train=train)


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


def train_or_load(
    name: str, cfg: Config, *, progress: bool = True, callback=None
) -> dict[str, Any]:
    """Train ``cfg`` into ``runs_dir()/name`` unless a finished run with the same config is there.

    Returns ``{"model", "eval", "out_dir", "metrics", "cached"}``; the model is in eval mode.
    """
    import json

    import yaml

    from mxr.config import config_to_dict
    from mxr.engine import model_from_checkpoint, train

    out = runs_dir() / name
    eval_path, cfg_path = out / "eval.json", out / "config.yaml"
    if eval_path.is_file() and cfg_path.is_file() and (out / "last.pt").is_file():
        stored = yaml.safe_load(cfg_path.read_text())
        if (
            stored.get("train") == config_to_dict(cfg)["train"]
            and stored.get("data", {}).get("root") == cfg.data.root
        ):
            model = model_from_checkpoint(out / "last.pt")
            return {
                "model": model,
                "eval": json.loads(eval_path.read_text()),
                "out_dir": out,
                "metrics": out / "metrics.jsonl",
                "cached": True,
            }
    result = train(cfg, out, progress=progress, callback=callback)
    return {
        "model": result["model"].eval(),
        "eval": result["eval"],
        "out_dir": out,
        "metrics": Path(result["metrics"]),
        "cached": False,
    }


def published_results(path: str | Path | None = None) -> dict[str, Any] | None:
    """The ablation results the docs quote (``docs/results.json``, written by ``python -m mxr
    ablate``), or ``None`` when the file is absent. Notebooks read numbers from here, never retype them.
    """
    import json

    path = Path(path) if path is not None else REPO_ROOT / "docs" / "results.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("rows"), dict):
        raise ValueError(
            f"{path}: expected a JSON object with a 'rows' mapping (mxr ablate output)"
        )
    return data
