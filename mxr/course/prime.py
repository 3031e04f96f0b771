"""Train the notebooks' runs ahead of them (``make run`` calls :func:`prime` before executing the
notebooks, so each notebook only reloads its runs)."""

from __future__ import annotations

from mxr.config import Config
from mxr.course.choices import config_from_choices, default_choices, run_name
from mxr.course.runs import (
    budget_mode,
    course_config,
    ensure_course_data,
    train_or_load,
)

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


def distinct_runs(runs: list[tuple[str, Config]]) -> list[tuple[str, Config]]:
    """``runs`` with one job per config: two names for one config are one run (one folder of the
    run cache), and two processes must not train it side by side. The kept job's name lists both."""
    import json

    from mxr.config import config_to_dict

    kept: dict[str, tuple[str, Config]] = {}
    for name, cfg in runs:
        key = json.dumps(config_to_dict(cfg), sort_keys=True, default=str)
        kept[key] = (f"{kept[key][0]} = {name}", cfg) if key in kept else (name, cfg)
    return list(kept.values())


def _prime_one(job: tuple[str, Config]) -> str:
    name, cfg = job
    return f"{name}: {train_or_load(name, cfg, progress=False).origin}"


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

    from mxr.engine.dist import cpu_count, in_processes

    jobs = jobs or max(1, min(2, cpu_count()))
    ensure_course_data()
    todo = distinct_runs(notebook_runs())
    stagewise = [job for job in todo if job[1].train.trainable == "mask"]
    seeds = sorted({cfg.train.seed for _, cfg in stagewise})
    detectors = [(f"detector-seed{k}", course_config("detector", seed=k)) for k in seeds]
    rounds = (detectors + [job for job in todo if job not in stagewise], stagewise)
    t0 = time.perf_counter()
    print(
        f"priming {len(todo)} notebook runs and {len(detectors)} detector(s) "
        f"({budget_mode()} budget) with {jobs} processes"
    )
    for batch in rounds:
        for _, line in in_processes(_prime_one, batch, jobs, threads=cpu_count() // jobs or 1):
            print(f"  {line} ({time.perf_counter() - t0:.0f} s)", flush=True)
