"""benchmarks/gpu_check.sh: without a GPU it says so, runs its tiny CPU version and exits 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def _run(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_CPU_SIZE": "64", **env}
    return subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=full,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.skipif(
    torch.cuda.is_available(), reason="a GPU is present: the script runs the GPU check"
)
def test_cpu_fallback_runs_and_exits_cleanly(coco_sample: Path, tmp_path: Path) -> None:
    proc = _run(tmp_path, {"MXR_COCO_SAMPLE": str(coco_sample), "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "no CUDA GPU found: running the CPU fallback" in out
    assert "losses finite over 2 logged iterations" in out
    assert "CPU fallback passed" in out
    speed = json.loads((tmp_path / "out" / "speed_cpu.json").read_text())
    assert speed["device"] == "cpu" and speed["size"] == [64, 64]
    assert set(speed["variants"]) == {"stock MaskRCNN", "transfer (no MLP)"}
    assert all(v["train_s"] > 0 and v["infer_s"] > 0 for v in speed["variants"].values())
    assert (tmp_path / "out" / "train_cpu" / "last.pt").is_file()
    _check_stagewise_fallback(tmp_path / "out", out)


def _check_stagewise_fallback(out_dir: Path, stdout: str) -> None:
    """Step 5 on the CPU: stage 1, stage 2 and the GloVe row on that detector, each from its
    stage-wise config; the detector left as it was; torchrun's evaluation equal to mxr eval's."""
    from mxr.engine.checkpoint import load_checkpoint
    from mxr.engine.stagewise import file_sha256

    assert stdout.count("losses finite over 2 logged iterations") == 4  # train_cpu + 3 stage-wise
    assert stdout.count("stage 2 left the detector's") == 2
    assert "torchrun --nproc_per_node=1 mxr eval = mxr eval:" in stdout
    assert "largest difference 0 (allowed 0)" in stdout
    detector_path = out_dir / "sw_detector" / "last.pt"
    detector = load_checkpoint(detector_path)
    assert detector["config"]["train"]["trainable"] == "all"
    assert detector["config"]["model"]["mask_head"] == "agnostic"
    sha = file_sha256(detector_path)
    for run, transfer_input in (("sw_transfer", "cls+box"), ("sw_glove", "embed")):
        ckpt = load_checkpoint(out_dir / run / "last.pt")
        assert ckpt["iteration"] == 2
        assert ckpt["config"]["train"]["trainable"] == "mask"
        assert ckpt["config"]["model"]["transfer_input"] == transfer_input
        assert ckpt["init_from"]["sha256"] == sha
    evals = [
        json.loads((out_dir / f"sw_eval_{k}.json").read_text()) for k in ("torchrun", "single")
    ]
    assert evals[0] == evals[1] and set(evals[0]) == {"A", "B", "all"}


def test_missing_sample_is_one_clear_line(tmp_path: Path) -> None:
    proc = _run(tmp_path, {"MXR_COCO_SAMPLE": str(tmp_path / "nowhere")})
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "gpu_check: no COCO sample at nowhere/ (set MXR_COCO_SAMPLE); nothing checked"
    )
