"""Multi-process training (DDP, gloo on CPU): ranks agree, match one process with the same batch,
and evaluate sharded at the end."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import tiny_config, tiny_overrides

import mxr.engine.loop
from mxr.config import Config, load_config
from mxr.engine.checkpoint import load_checkpoint
from mxr.engine.loop import train
from mxr.files import read_metrics

_real_build_model = mxr.engine.loop.build_model

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is needed",
)

# Every anchor and every proposal is sampled, so the RoIs a process sees do not depend on the RNG.
FULL_SAMPLING = ["model.rpn_batch_size_per_image=100000", "model.box_batch_size_per_image=100000"]


def _build_with_frozen_bn(model_cfg, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
    """The model with every BatchNorm frozen (statistics as built): batch statistics are
    per-process under DDP on CPU (SyncBatchNorm needs CUDA), which would hide what this test checks
    (sharding, gradient averaging, schedule)."""
    from torchvision.ops import FrozenBatchNorm2d

    model = _real_build_model(model_cfg, *args, **kwargs)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.BatchNorm2d):
                frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
                frozen.weight.copy_(child.weight.detach())
                frozen.bias.copy_(child.bias.detach())
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
                setattr(module, name, frozen)
    return model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg: Config, out: str) -> None:
    """One process of the job, set up the way torchrun sets it up (environment variables)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )  # fmt: skip
    torch.set_num_threads(1)
    mxr.engine.loop.build_model = _build_with_frozen_bn
    summary = train(cfg, out, progress=False, eval_split=None)
    torch.save(summary.model.state_dict(), Path(out) / f"rank{rank}.pt")


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """L2 distance between two models' weights."""
    return float(torch.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in a if a[k].is_floating_point())))


def test_two_processes_agree_and_match_one_process(
    shapesx_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mxr.engine.loop, "build_model", _build_with_frozen_bn)
    steps = ["train.iterations=3", "train.warmup_iters=0", "train.checkpoint_every=100"]
    cfg2 = tiny_config(shapesx_root, [*FULL_SAMPLING, *steps, "train.batch_size=2"])
    out = tmp_path / "ddp"
    mp.start_processes(
        _worker, args=(2, _free_port(), cfg2, str(out)), nprocs=2, start_method="spawn"
    )

    r0, r1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    assert r0.keys() == r1.keys()
    assert all(torch.equal(r0[k], r1[k]) for k in r0), "ranks diverged"
    assert sorted(p.name for p in out.iterdir()) == [
        "config.yaml", "last.pt", "metrics.jsonl", "rank0.pt", "rank1.pt", "split.json",
    ]  # fmt: skip
    assert load_checkpoint(out / "last.pt")["world_size"] == 2
    assert len(read_metrics(out)) == 3  # one writer

    # One process, the same global batch of 4 images per step.
    single = train(
        tiny_config(shapesx_root, [*FULL_SAMPLING, *steps, "train.batch_size=4"]),
        tmp_path / "single", progress=False, eval_split=None,
    )  # fmt: skip
    s = single.model.state_dict()
    # The weights before the first step: built from the run's saved config (construction is seeded
    # by model.init_seed), not trained for a step at lr=0 as a fourth run.
    init = _build_with_frozen_bn(load_config(out / "config.yaml").model).state_dict()
    other = train(  # a control: the same job on other images (another sampling seed)
        tiny_config(shapesx_root, [*FULL_SAMPLING, *steps, "train.batch_size=4", "train.seed=1"]),
        tmp_path / "other", progress=False, eval_split=None,
    ).model.state_dict()  # fmt: skip
    update, gap, control = _distance(s, init), _distance(s, r0), _distance(s, other)
    print(
        f"|update| {update:.4g}  |DDP - single| {gap:.4g}  |other batches - single| {control:.4g}"
    )
    # The gap (per-process loss normalisation, float sums) is far below what other images give.
    assert gap < 0.01 * update and gap < 0.25 * control


def test_torchrun_command_line(shapesx_root: Path, tmp_path: Path) -> None:
    """`torchrun --nproc_per_node=2 -m mxr train ...` runs, and only rank 0 writes."""
    out = tmp_path / "o"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={_free_port()}", "-m", "mxr", "train", "--out", str(out), "--no-progress",
        "--set", *tiny_overrides(shapesx_root), "train.iterations=2", "train.batch_size=1",
        "model.mask_head=agnostic",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert load_checkpoint(out / "last.pt")["iteration"] == 2
    assert [r["iter"] for r in read_metrics(out)] == [1, 2]
    assert "| B | mask |" in proc.stdout and proc.stdout.count("| B | mask |") == 1


def _b_only_worker(rank: int, world: int, port: int, cfg: Config, out: str) -> None:
    """A process whose training batches hold no set-A instance on rank 1 (boxes of set B only), and
    whose final evaluation records, per rank, whether the process group is up when it infers and
    when rank 0 scores, and which rank writes eval.json."""
    import json

    import mxr.engine.loop
    import mxr.evaluation
    from mxr.data.coco import CocoInstances

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )  # fmt: skip
    torch.set_num_threads(1)
    real_getitem = CocoInstances.__getitem__

    def b_only(self, index):  # noqa: ANN001, ANN202
        image, t = real_getitem(self, index)
        if not self.train:  # the evaluation sees the true val targets
            return image, t
        in_a = torch.isin(t["labels"], torch.tensor(self.a_labels))
        labels = torch.where(in_a, self.b_labels[0], t["labels"])  # every instance now in set B
        t = {**t, "labels": labels, "masks": t["masks"][:0], "has_mask": torch.zeros_like(in_a)}
        return image, t

    if rank == 1:
        CocoInstances.__getitem__ = b_only

    def log(event: str) -> None:
        with (Path(out) / f"events{rank}.jsonl").open("a") as f:
            f.write(json.dumps([event, torch.distributed.is_initialized()]) + "\n")

    real_predict, real_score = mxr.evaluation.predict, mxr.evaluation.score_predictions
    real_write = mxr.engine.loop.write_text_atomic

    def predict(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        log("predict")
        return real_predict(*args, **kwargs)

    def score_predictions(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        log("score")
        return real_score(*args, **kwargs)

    def write_text_atomic(path, text):  # noqa: ANN001, ANN202
        log(f"write {Path(path).name}")
        return real_write(path, text)

    mxr.evaluation.predict, mxr.evaluation.score_predictions = predict, score_predictions
    mxr.engine.loop.write_text_atomic = write_text_atomic
    summary = train(cfg, out, progress=False, eval_split="val")  # BatchNorm of its own per rank
    torch.save(summary.model.state_dict(), Path(out) / f"rank{rank}.pt")


def test_b_only_rank_trains_and_final_evaluation_is_sharded(
    shapesx_root: Path, tmp_path: Path
) -> None:
    """DDP without ``find_unused_parameters``: a rank that sees no mask RoI still gives every mask
    parameter a (zero) gradient, so 3 steps complete and the ranks agree. The final evaluation runs
    on every rank while the group is up; rank 0 alone scores it (COCOeval, once the group is gone)
    and writes eval.json, equal to one process evaluating the saved checkpoint (each rank's
    BatchNorm statistics differ after the last step: rank 0's, the saved ones, are sent to all)."""
    import json

    from mxr.engine.checkpoint import model_from_checkpoint
    from mxr.engine.data import build_dataset
    from mxr.evaluation import evaluate

    steps = ["train.iterations=3", "train.warmup_iters=0", "train.checkpoint_every=100"]
    cfg = tiny_config(shapesx_root, [*steps, "train.batch_size=2"])
    out = tmp_path / "ddp_b"
    mp.start_processes(
        _b_only_worker, args=(2, _free_port(), cfg, str(out)), nprocs=2, start_method="spawn"
    )
    r0, r1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    assert all(torch.equal(r0[k], r1[k]) for k in r0), "ranks diverged"
    assert len(read_metrics(out)) == 3

    def events(rank: int) -> list[list]:
        lines = (out / f"events{rank}.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if "write" not in line or "eval" in line]

    assert events(0) == [["predict", True], ["score", False], ["write eval.json", False]]
    assert events(1) == [["predict", True]]  # rank 1 infers on its share, scores and writes nothing
    # The sharded evaluation is the single-process evaluation of the checkpoint, to the last digit.
    model = model_from_checkpoint(out / "last.pt")
    ds = build_dataset(cfg.data, "val", seed=cfg.train.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank ran: the last bits of float sums depend on it
    try:
        single = evaluate(model, ds, batch_size=8, progress=False, mask_iou=True)
    finally:
        torch.set_num_threads(threads)
    assert json.loads((out / "eval.json").read_text()) == single
