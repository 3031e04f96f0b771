"""Sharded evaluation: two CPU processes (gloo) each infer on their share of the images, rank 0
gathers and scores; the result is the single process's, to the last digit."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import TINY_MODEL

from mxr.cli import main
from mxr.config import load_config
from mxr.engine.checkpoint import model_from_checkpoint
from mxr.engine.data import build_dataset
from mxr.engine.dist import init_distributed
from mxr.engine.loop import TrainResult
from mxr.evaluation import predict, score_predictions

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is needed",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def one_thread() -> Iterator[None]:
    """Run as each worker runs (one torch thread): float sums, and so the last bits, depend on the
    thread count as they do on the batch (which the sharding keeps)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _model(checkpoint: str) -> torch.nn.Module:
    """The checkpoint's model keeping every detection (score threshold 0): many results to match."""
    model = model_from_checkpoint(checkpoint)
    model.roi_heads.score_thresh = 0.0
    return model


def _worker(rank: int, world: int, port: int, checkpoint: str, out: str) -> None:
    """One process of a 2-process job, set up as torchrun sets it up (environment variables)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )  # fmt: skip
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    cfg = load_config(Path(checkpoint).parent / "config.yaml")
    ds = build_dataset(cfg.data, "val")
    preds = predict(_model(checkpoint), ds, batch_size=3, progress=False, mask_iou=True, info=info)
    torch.distributed.destroy_process_group()
    scores = None if preds is None else score_predictions(preds, ds)
    Path(out, f"rank{rank}.pkl").write_bytes(pickle.dumps((preds, scores)))


def test_two_processes_predict_and_score_as_one_on_shapesx(
    trained_run: TrainResult, tmp_path: Path
) -> None:
    """Rank 0 gets every image's detections and true-box IoUs in the single process's order (rank
    1: None), and so the same eval dict; the val images split unevenly (batches of 3 of 4)."""
    mp.start_processes(
        _worker, args=(2, _free_port(), str(trained_run.checkpoint), str(tmp_path)), nprocs=2,
        start_method="spawn",
    )  # fmt: skip
    (preds, scores), (preds1, scores1) = (
        pickle.loads((tmp_path / f"rank{r}.pkl").read_bytes()) for r in (0, 1)
    )
    assert preds1 is None and scores1 is None
    cfg = load_config(trained_run.config)
    ds = build_dataset(cfg.data, "val")
    with one_thread():
        single = predict(_model(str(trained_run.checkpoint)), ds, batch_size=3, progress=False,
                         mask_iou=True)  # fmt: skip
    assert len(single.results) == 4 * 20 and len({r["image_id"] for r in single.results}) == 4
    assert preds == single  # boxes, scores, RLEs and IoUs exactly, in the same order
    assert scores == score_predictions(single, ds)


def _coco_subset(coco: Path, out: Path, n: int = 12) -> Path:
    """A data root holding the first ``n`` val images of the real COCO sample (a crowd among them),
    the images linked, the annotation file cut down; train is the sample's own."""
    data = json.loads((coco / "annotations" / "instances_val2017.json").read_text())
    data["images"] = sorted(data["images"], key=lambda im: im["id"])[:n]
    keep = {im["id"] for im in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    assert any(a["iscrowd"] for a in data["annotations"])
    (out / "annotations").mkdir(parents=True)
    (out / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    (out / "annotations" / "instances_train2017.json").symlink_to(
        coco / "annotations" / "instances_train2017.json"
    )
    for split in ("train2017", "val2017"):
        (out / split).symlink_to(coco / split)
    return out


@pytest.mark.slow  # a training step, then torchrun's three processes
def test_torchrun_eval_on_real_coco_equals_one_process(coco_sample: Path, tmp_path: Path) -> None:
    """`torchrun --nproc_per_node=2 -m mxr eval` on real COCO images (sizes differ: padding) prints
    one table and writes the eval.json one process writes."""
    from mxr.engine.loop import train

    root = _coco_subset(coco_sample, tmp_path / "coco")
    cfg = load_config(
        REPO / "configs" / "coco" / "voc2nonvoc_transfer_mlp.yaml",
        [*TINY_MODEL, "model.min_size=96", "model.max_size=128", "model.box_score_thresh=0.0",
         f"data.root={root}", "data.num_workers=0", "train.iterations=1", "train.batch_size=2",
         "train.warmup_iters=1", "train.device=cpu", "train.amp=false"],
    )  # fmt: skip
    checkpoint = str(train(cfg, tmp_path / "run", progress=False, eval_split=None).checkpoint)
    args = ["eval", "--checkpoint", checkpoint, "--no-progress", "--batch-size", "3"]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={_free_port()}", "-m", "mxr", *args, "--out", f"{tmp_path}/sharded.json",
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("| B | mask |") == 1 and proc.stderr.count("wrote ") == 1
    assert "val: 12 images" in proc.stdout
    with one_thread():
        assert main([*args, "--out", str(tmp_path / "single.json")]) == 0
    sharded = json.loads((tmp_path / "sharded.json").read_text())
    single = json.loads((tmp_path / "single.json").read_text())
    assert single["B"]["mask_iou"]["mIoU"] is not None
    assert sharded == single
