"""The training engine: schedule, sampling, outputs, checkpoints, resume, stop signals, bad losses."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
import yaml
from conftest import EpochIndices, stop_at_replace, tiny_config, tiny_overrides

from mxr.config import TrainConfig, config_from_dict, load_config
from mxr.engine.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from mxr.engine.data import batch_indices
from mxr.engine.loop import (
    LOSS_TERMS,
    NonFiniteLossError,
    StopTraining,
    TrainResult,
    lr_factor,
    train,
)
from mxr.files import read_metrics


def test_lr_schedule_warms_up_linearly_then_steps_at_fractions() -> None:
    tc = TrainConfig(
        iterations=90, warmup_iters=10, warmup_factor=0.1, lr_steps=(2 / 3, 8 / 9), gamma=0.1
    )
    assert lr_factor(0, tc) == pytest.approx(0.1)
    assert lr_factor(5, tc) == pytest.approx(0.55)
    assert lr_factor(10, tc) == 1.0
    assert lr_factor(59, tc) == 1.0
    assert lr_factor(60, tc) == pytest.approx(0.1)
    assert lr_factor(80, tc) == pytest.approx(0.01)


def test_batches_depend_only_on_seed_epoch_and_cover_each_epoch_once() -> None:
    n, gb = 10, 4  # 2 batches per epoch, 2 images dropped
    e0 = [batch_indices(n, gb, seed=3, iteration=i) for i in range(2)]
    assert all(e == 0 for e, _ in e0)
    seen = e0[0][1] + e0[1][1]
    assert len(set(seen)) == 8
    assert batch_indices(n, gb, seed=3, iteration=2)[0] == 1
    assert batch_indices(n, gb, seed=3, iteration=1) == e0[1]  # pure function
    assert batch_indices(n, gb, seed=4, iteration=0) != e0[0]
    with pytest.raises(ValueError, match="fewer than one global batch"):
        batch_indices(3, 4, seed=0, iteration=0)


def test_ranks_split_each_global_batch_and_resume_mid_epoch() -> None:
    from mxr.engine.data import iterate_batches
    from mxr.engine.dist import DistInfo

    def run(rank: int, world: int, start: int, stop: int) -> list[tuple[int, list[int], int]]:
        it = iterate_batches(EpochIndices(10), start=start, stop=stop, batch_size=2,
                             info=DistInfo(rank, world), seed=5, num_workers=0)  # fmt: skip
        return [(i, [int(x) for x in ims], int(t[0]["epoch"])) for i, ims, t in it]

    r0, r1 = run(0, 2, 0, 5), run(1, 2, 0, 5)
    for (i, a, ep), (_, b, _) in zip(r0, r1, strict=True):
        assert (ep, a + b) == batch_indices(10, 4, seed=5, iteration=i)  # epoch and images
    assert [ep for _, _, ep in r0] == [0, 0, 1, 1, 2]
    assert run(0, 2, 3, 5) == r0[3:]  # starting mid-stream gives the same batches


def test_train_writes_metrics_checkpoint_config_and_eval(trained_run: TrainResult) -> None:
    out = trained_run.out_dir
    records = read_metrics(out / "metrics.jsonl")
    assert [r["iter"] for r in records] == [1, 2, 3, 4]
    for r in records:
        assert set(r) == {"iter", "lr", "loss", "time", *LOSS_TERMS}
        assert r["loss"] == pytest.approx(sum(r[k] for k in LOSS_TERMS))
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["iteration"] == 4
    assert {"model", "optimizer", "scheduler", "rng", "config"} <= set(ckpt)
    cfg = load_config(out / "config.yaml")
    assert cfg.model.num_classes == 31 and cfg.model.mask_classes  # filled from the dataset
    assert config_from_dict(ckpt["config"]) == cfg
    ev = json.loads((out / "eval.json").read_text())
    assert set(ev) == {"A", "B", "all"}
    for s in ev.values():
        assert set(s["segm"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
        assert set(s["bbox"]) == set(s["segm"])
        assert 0 <= s["mask_iou"]["mIoU"] <= 100
    model = model_from_checkpoint(out / "last.pt")
    assert not model.training


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def test_interrupted_and_resumed_run_is_bit_identical(shapesx_root: Path, tmp_path: Path) -> None:
    cfg = tiny_config(shapesx_root, ["train.iterations=6", "train.checkpoint_every=100"])
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest runs as a background job
    full = tmp_path / "full"
    train(cfg, full, progress=False, eval_split=None)

    part = tmp_path / "part"

    def interrupt(it: int, record: dict) -> None:
        if it == 3:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does: save, then stop

    with pytest.raises(KeyboardInterrupt):
        train(cfg, part, progress=False, eval_split=None, callback=interrupt)
    assert load_checkpoint(part / "last.pt")["iteration"] == 3
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler restored
    with (part / "metrics.jsonl").open("a") as f:  # a kill mid-write leaves a line cut short
        f.write('{"iter": 4, "lr": 0.0')
    summary = train(cfg, part, resume=True, progress=False, eval_split=None)
    assert summary.iteration == 6

    a, b = _weights(full / "last.pt"), _weights(part / "last.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from uninterrupted"
    ra, rb = read_metrics(full), read_metrics(part)
    assert [r["iter"] for r in rb] == list(range(1, 7))
    assert [r["loss"] for r in ra] == [r["loss"] for r in rb]


def test_sigterm_saves_and_exits_143(shapesx_root: Path, tmp_path: Path) -> None:
    cfg = tiny_config(shapesx_root, ["train.checkpoint_every=100"])

    def term(it: int, record: dict) -> None:
        if it == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(SystemExit) as e:
        train(cfg, tmp_path, progress=False, eval_split=None, callback=term)
    assert e.value.code == 143
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 1


def test_a_callback_stops_training_with_stoptraining_from_a_thread(
    shapesx_root: Path, tmp_path: Path
) -> None:
    # the training panel's Stop button: a callback (here in a background thread, where no signal
    # handler can be installed) raises StopTraining; the run stops at that logged iteration with
    # its checkpoint saved, no evaluation, and the same exception back to the caller
    import threading

    cfg = tiny_config(shapesx_root, ["train.iterations=6", "train.checkpoint_every=100"])
    before = signal.getsignal(signal.SIGINT)
    seen: list[int] = []
    outcome: dict = {}

    def stop_at_2(it: int, record: dict) -> None:
        seen.append(it)
        if it == 2:
            raise StopTraining("stop pressed")

    def job() -> None:
        try:
            train(cfg, tmp_path, progress=False, callback=stop_at_2)
        except StopTraining as e:
            outcome["error"] = e

    t = threading.Thread(target=job)
    t.start()
    t.join(timeout=300)
    assert not t.is_alive()
    assert str(outcome["error"]) == "stop pressed" and seen == [1, 2]
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 2
    assert [r["iter"] for r in read_metrics(tmp_path)] == [1, 2]
    assert not (tmp_path / "eval.json").exists()  # stopped: not evaluated
    assert signal.getsignal(signal.SIGINT) is before  # a thread installs no handler
    summary = train(cfg, tmp_path, resume=True, progress=False, eval_split=None)
    assert summary.iteration == 6  # the saved checkpoint continues


def test_stoptraining_at_the_last_iteration_finishes_the_run(
    shapesx_root: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(shapesx_root, ["train.iterations=2"])

    def stop(it: int, record: dict) -> None:
        raise StopTraining("too late")

    with pytest.raises(StopTraining):  # stopped at iteration 1 of 2
        train(cfg, tmp_path / "early", progress=False, eval_split=None, callback=stop)
    one = tiny_config(shapesx_root, ["train.iterations=1"])
    summary = train(one, tmp_path / "last", progress=False, eval_split=None, callback=stop)
    assert summary.iteration == 1  # nothing left to stop: the run simply finished


def test_non_finite_loss_stops_naming_iteration_and_term(
    shapesx_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mxr.engine.loop

    real_build = mxr.engine.loop.build_model

    def build_poisoned(model_cfg, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        model = real_build(model_cfg, *args, **kwargs)
        forward, calls = model.forward, [0]

        def poisoned(images, targets=None):  # noqa: ANN001, ANN202
            out = forward(images, targets)
            calls[0] += 1
            if calls[0] == 3:
                out["loss_mask"] = out["loss_mask"] * float("nan")
            return out

        model.forward = poisoned
        return model

    monkeypatch.setattr(mxr.engine.loop, "build_model", build_poisoned)
    cfg = tiny_config(shapesx_root, ["train.checkpoint_every=2"])
    with pytest.raises(NonFiniteLossError, match=r"iteration 3: loss_mask=nan"):
        train(cfg, tmp_path, progress=False, eval_split=None)
    ckpt = load_checkpoint(tmp_path / "last.pt")  # the last good one, intact
    assert ckpt["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_checkpoint_write_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "config": {}, "iteration": 1})
    with pytest.raises(Exception):  # noqa: B017 - any pickling failure
        save_checkpoint(path, {"model": {"w": torch.zeros(2)}, "bad": lambda: 0})
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_a_stop_while_writing_eval_json_leaves_the_old_file_whole(
    shapesx_root: Path, tmp_path: Path, monkeypatch
) -> None:  # noqa: ANN001
    """eval.json is the file a run writes last (the course's cache reads it as "finished")."""
    (tmp_path / "eval.json").write_text('{"old": 1}')
    stop_at_replace(monkeypatch, "eval.json")
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(shapesx_root, ["train.iterations=1"]), tmp_path, progress=False)
    assert json.loads((tmp_path / "eval.json").read_text()) == {"old": 1}
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_resume_rejects_a_different_model(
    trained_run: TrainResult, shapesx_root: Path, tmp_path: Path
) -> None:
    import shutil

    shutil.copy(trained_run.checkpoint, tmp_path / "last.pt")
    cfg = tiny_config(shapesx_root, ["model.mask_head=agnostic", "train.iterations=5"])
    with pytest.raises(ValueError, match="model.mask_head"):
        train(cfg, tmp_path, resume=True, progress=False, eval_split=None)


def test_cli_train_with_overrides(shapesx_root: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from mxr.cli import main

    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump({"model": {"mask_head": "agnostic", "mlp_fusion": False}}))
    sets = [*tiny_overrides(shapesx_root), "train.iterations=2"]
    rc = main(
        [
            "train",
            "--config",
            str(cfg_file),
            "--set",
            *sets,
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
            "--no-eval",
        ]
    )
    assert rc == 0
    saved = load_config(tmp_path / "o" / "config.yaml")
    assert saved.model.mask_head == "agnostic" and saved.train.iterations == 2
    capsys.readouterr()
    assert main(["train", "--set", "train.iteratoins=3", "--out", str(tmp_path / "x")]) == 2
    assert "train.iteratoins" in capsys.readouterr().err  # a user's mistake: one line, exit 2


def test_adamw_optimizer_is_built_and_a_bad_name_is_a_clear_error() -> None:
    from mxr.engine.loop import build_optimizer

    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(model, TrainConfig(optimizer="adamw", lr=1e-3, momentum=0.9))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.999)
    assert isinstance(build_optimizer(model, TrainConfig()), torch.optim.SGD)
    with pytest.raises(ValueError, match=r"train\.optimizer='adam'.*'adamw'"):
        TrainConfig(optimizer="adam")


def test_adamw_run_resumes_bit_identically(shapesx_root: Path, tmp_path: Path) -> None:
    sets = [
        "train.iterations=4",
        "train.optimizer=adamw",
        "train.lr=0.001",
        "train.checkpoint_every=2",
    ]
    cfg = tiny_config(shapesx_root, sets)
    train(cfg, tmp_path / "full", progress=False, eval_split=None)
    part = tmp_path / "part"

    def interrupt(it: int, record: dict) -> None:
        if it == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train(cfg, part, progress=False, eval_split=None, callback=interrupt)
    train(cfg, part, resume=True, progress=False, eval_split=None)
    a, b = _weights(tmp_path / "full" / "last.pt"), _weights(part / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed AdamW run differs"


def _threads_in_worker(_: int) -> int:
    import torch

    return torch.get_num_threads()


def test_in_processes_runs_each_item_in_workers_with_the_asked_thread_count() -> None:
    import math

    from mxr.engine.dist import in_processes

    assert dict(in_processes(math.sqrt, [1.0, 4.0, 9.0], jobs=2)) == {1.0: 1.0, 4.0: 2.0, 9.0: 3.0}
    assert {r for _, r in in_processes(_threads_in_worker, [0, 1], jobs=2, threads=1)} == {1}


def test_build_dataset_only_reads_and_prepare_data_generates(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """Loading a dataset never writes: a missing ShapesX root is a clear error from build_dataset;
    prepare_data (what train and `mxr eval` call first, rank 0 only) generates it when
    data.generate is true, and does nothing when it is false."""
    import dataclasses

    from mxr.config import DataConfig
    from mxr.engine.data import build_dataset, prepare_data

    cfg = DataConfig(root=str(tmp_path / "shapesx"), generate=True)
    with pytest.raises(
        FileNotFoundError, match="data.train_annotations: annotation file not found"
    ):
        build_dataset(cfg, "train")
    assert not (tmp_path / "shapesx").exists()
    prepare_data(dataclasses.replace(cfg, generate=False))
    assert not (tmp_path / "shapesx").exists()
    import mxr.data.shapesx

    asked: list[str] = []
    monkeypatch.setattr(mxr.data.shapesx, "ensure_shapesx", lambda root: asked.append(root))
    prepare_data(cfg)
    assert asked == [cfg.root]


def test_metrics_writer_averages_finite_steps_and_returns_a_callbacks_stop(tmp_path: Path) -> None:
    """One record per log_every iterations (and at the last): the mean of each term over the finite
    steps of the window, the skipped count; a StopTraining the callback raises is handed back."""
    from mxr.engine.dist import DistInfo
    from mxr.engine.loop import MetricsWriter

    class Bar:
        def set_postfix(self, **kw: str) -> None:
            self.shown = kw

    def callback(it: int, record: dict) -> None:
        if it == 5:
            raise StopTraining("enough")

    path = tmp_path / "metrics.jsonl"
    tc = TrainConfig(iterations=5, log_every=2)
    writer = MetricsWriter(path, tc, DistInfo(), Bar(), callback)
    steps = [({"a": 1.0, "b": 2.0}, False), ({"a": 3.0, "b": 4.0}, False),
             ({"a": float("nan"), "b": 0.0}, True), ({"a": 5.0, "b": 1.0}, False),
             ({"a": 7.0, "b": 1.0}, False)]  # fmt: skip
    stops = [
        writer.add(i + 1, 0.1, terms, skipped, float(i)) for i, (terms, skipped) in enumerate(steps)
    ]
    records = read_metrics(path)
    assert [r["iter"] for r in records] == [2, 4, 5]
    assert (
        records[0]["a"] == 2.0
        and records[0]["loss"] == 5.0
        and "skipped_nonfinite" not in records[0]
    )
    assert records[1]["a"] == 5.0 and records[1]["skipped_nonfinite"] == 1
    assert records[2]["b"] == 1.0
    assert stops[:4] == [None] * 4 and isinstance(stops[4], StopTraining)
