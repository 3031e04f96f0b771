"""The ablation runner: rows × seeds at one budget -> JSON, markdown table and bar chart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_overrides

from mxr.ablate import aggregate, markdown_table, preset_configs, run_ablation


def test_aggregate_means_and_stds_over_seeds() -> None:
    e = [
        {"B": {"segm": {"AP": 10.0, "AP75": None}}},
        {"B": {"segm": {"AP": 20.0, "AP75": None}}},
    ]
    agg = aggregate(e)
    assert agg["B"]["segm"]["AP"] == 15.0
    assert agg["B"]["segm"]["AP_std"] == pytest.approx(7.071, abs=1e-3)  # sample std
    assert agg["B"]["segm"]["AP75"] is None
    assert aggregate(e[:1])["B"]["segm"]["AP_std"] == 0.0


def test_preset_rows_and_errors() -> None:
    rows = preset_configs("shapesx")
    assert list(rows)[0] == "agnostic" and "oracle" in rows
    with pytest.raises(ValueError, match="transfer_xyz"):
        preset_configs("shapesx", ["transfer_xyz"])
    with pytest.raises(ValueError, match="'coco2'"):
        preset_configs("coco2")


def test_one_seed_few_iteration_ablation(shapesx_root: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from mxr.__main__ import main

    out = tmp_path / "abl"
    sets = [*tiny_overrides(shapesx_root), "train.iterations=2"]
    argv = ["ablate", "--preset", "shapesx", "--seeds", "1", "--rows", "agnostic,transfer_mlp,oracle",
            "--split", "test", "--out", str(out), "--no-progress", "--set", *sets]  # fmt: skip
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert list(res["rows"]) == ["agnostic", "transfer_mlp", "oracle"]
    b = res["rows"]["transfer_mlp"]["B"]
    assert {"AP", "AP_std", "AP75", "AP75_std"} <= set(b["segm"]) and "AP" in b["bbox"]
    assert res["meta"]["split"] == "test" and set(res["wall_s"]) == set(res["rows"])
    table = (out / "results.md").read_text()
    assert table.startswith("| variant | box AP A") and "| oracle |" in table
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "oracle" / "seed0" / "eval.json").is_file()
    assert "| agnostic |" in capsys.readouterr().out

    # finished runs are reused, not retrained
    again = run_ablation("shapesx", seeds=1, rows=["agnostic"], split="test", out_dir=out,
                         overrides=sets, progress=False, log=lambda s: None)  # fmt: skip
    assert again["rows"]["agnostic"] == res["rows"]["agnostic"]
    assert markdown_table(again["rows"]).count("\n") == 2
