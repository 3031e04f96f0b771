"""The ablation runner: rows × seeds at one budget -> JSON, markdown table and bar chart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_overrides

from mxr.ablate import aggregate, load_preset, preset_configs, results_table, run_ablation


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
    preset = load_preset("shapesx")
    rows = preset_configs(preset)
    assert list(rows)[0] == "agnostic" and "oracle" in rows
    assert preset.protocol("agnostic") == "stage-wise"
    assert preset.protocol("transfer_mlp_e2e") == "end to end"
    assert rows["transfer_mlp_e2e"] == rows["transfer_mlp"]  # <config>_e2e: the same config file
    with pytest.raises(ValueError, match="transfer_xyz"):
        preset_configs(preset, ["transfer_xyz"])
    with pytest.raises(ValueError, match="preset 'coco2' is not valid; expected one of shapesx"):
        load_preset("coco2")


@pytest.fixture(scope="module")
def cli_ablation(shapesx_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``mxr ablate`` run once (3 rows, 1 seed, 2 iterations, sequential) for the tests below:
    its status, output folder, ``--set`` values, stdout and ``results.json`` as first written."""
    import contextlib
    import io

    from mxr.cli import main

    out = tmp_path_factory.mktemp("ablate") / "abl"
    sets = [*tiny_overrides(shapesx_root), "train.iterations=2"]
    argv = ["ablate", "--preset", "shapesx", "--seeds", "1", "--rows", "agnostic,transfer_mlp,oracle,transfer_mlp_e2e",
            "--split", "test", "--out", str(out), "--no-progress", "--set", *sets]  # fmt: skip
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(argv)
    res = json.loads((out / "results.json").read_text())
    return {"status": status, "out": out, "sets": sets, "stdout": stdout.getvalue(), "res": res}


def test_one_seed_few_iteration_ablation(cli_ablation: dict, shapesx_root) -> None:  # noqa: ANN001
    out, res, sets = cli_ablation["out"], cli_ablation["res"], cli_ablation["sets"]
    assert cli_ablation["status"] == 0
    assert list(res["rows"]) == ["agnostic", "transfer_mlp", "oracle", "transfer_mlp_e2e"]
    assert res["meta"]["protocol"] == {"agnostic": "stage-wise", "transfer_mlp": "stage-wise",
                                       "oracle": "stage-wise", "transfer_mlp_e2e": "end to end"}  # fmt: skip
    b = res["rows"]["transfer_mlp"]["B"]
    assert {"AP", "AP_std", "AP75", "AP75_std"} <= set(b["segm"]) and "AP" in b["bbox"]
    assert res["meta"]["split"] == "test" and set(res["wall_s"]) == set(res["rows"])
    table = (out / "results.md").read_text()
    assert (
        table.startswith("| variant | protocol | box AP A") and "| oracle | stage-wise |" in table
    )
    assert "| transfer_mlp_e2e | end to end |" in table
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "oracle" / "seed0" / "eval.json").is_file()
    result = json.loads((out / "oracle" / "seed0" / "result.json").read_text())
    assert len(result["run_key"]) == 64  # what a rerun compares to reuse it
    assert "| agnostic | stage-wise |" in cli_ablation["stdout"]

    # finished runs are reused, not retrained
    lines: list[str] = []
    again = run_ablation("shapesx", seeds=1, rows=["agnostic"], split="test", out_dir=out,
                         overrides=sets, progress=False, log=lines.append)  # fmt: skip
    assert any("reusing" in line for line in lines)
    assert again["rows"]["agnostic"] == res["rows"]["agnostic"]
    assert results_table(again["rows"]).count("\n") == 2
    # a result.json cut short (a stop mid-write) is run again, from the finished checkpoint
    done = out / "agnostic" / "seed0" / "result.json"
    done.write_text(done.read_text()[:50])
    lines.clear()
    again = run_ablation("shapesx", seeds=1, rows=["agnostic"], split="test", out_dir=out,
                         overrides=sets, progress=False, log=lines.append)  # fmt: skip
    assert not any(line.startswith("[agnostic seed 0] reusing") for line in lines)
    assert any(line.startswith("[detector seed 0] reusing") for line in lines)
    assert again["rows"]["agnostic"] == res["rows"]["agnostic"]  # the same weights, re-scored
    assert json.loads(done.read_text())["eval"]


def test_stagewise_rows_share_their_seeds_frozen_detector(cli_ablation: dict) -> None:
    import torch

    from mxr.engine.checkpoint import load_checkpoint

    out, res = cli_ablation["out"], cli_ablation["res"]
    detector = out / "detector" / "seed0" / "last.pt"
    det = load_checkpoint(detector)
    assert res["meta"]["detector"]["box_AP"]["B"] == [
        json.loads((out / "detector" / "seed0" / "result.json").read_text())["eval"]["B"]["bbox"][
            "AP"
        ]
    ]
    prefixes = ("backbone.", "rpn.", "roi_heads.box_head.", "roi_heads.box_predictor.")
    for row in ("agnostic", "transfer_mlp", "oracle"):
        ckpt = load_checkpoint(out / row / "seed0" / "last.pt")
        assert ckpt["init_from"]["path"] == str(detector)
        assert ckpt["config"]["train"]["trainable"] == "mask"
        weights = {k: v for k, v in ckpt["model"].items() if k.startswith(prefixes)}
        assert weights and all(torch.equal(v, det["model"][k]) for k, v in weights.items())
        # one shared detector: every stage-wise row of the seed has its box AP
        assert res["rows"][row]["B"]["bbox"]["AP"] == res["meta"]["detector"]["box_AP"]["B"][0]
    e2e = load_checkpoint(out / "transfer_mlp_e2e" / "seed0" / "last.pt")
    assert e2e["init_from"] is None and e2e["config"]["train"]["trainable"] == "all"
    assert "transfer_mlp" in res["paired"] and "transfer_mlp_e2e" not in res["paired"]


def test_an_edited_config_is_trained_again_not_reused(shapesx_root: Path, tmp_path: Path) -> None:
    import shutil

    configs = tmp_path / "configs"
    shutil.copytree(Path(__file__).parents[1] / "configs" / "shapesx", configs)
    kw = dict(seeds=1, rows=["agnostic"], split="val", out_dir=tmp_path / "abl", config_dir=configs,
              overrides=[*tiny_overrides(shapesx_root), "train.iterations=1"], progress=False)  # fmt: skip
    run_ablation("shapesx", log=lambda s: None, **kw)
    lines: list[str] = []
    run_ablation("shapesx", log=lines.append, **kw)
    assert any("reusing" in line for line in lines)
    path = configs / "agnostic.yaml"
    path.write_text(path.read_text().replace("flip_prob: 0.5", "flip_prob: 0.0"))
    lines.clear()
    run_ablation("shapesx", log=lines.append, **kw)
    assert not any(line.startswith("[agnostic seed 0] reusing") for line in lines)


def test_parallel_jobs_match_the_sequential_runs(cli_ablation: dict, tmp_path: Path) -> None:
    """Two rows trained side by side give the numbers of the sequential CLI run (same seeds)."""
    kw = dict(seeds=1, rows=["agnostic", "oracle"], split="test", overrides=cli_ablation["sets"],
              progress=False)  # fmt: skip
    lines: list[str] = []
    run_ablation("shapesx", out_dir=tmp_path / "par", jobs=2, log=lines.append, **kw)
    assert any("2 at a time" in line for line in lines)
    assert not any("reusing" in line for line in lines)  # really trained here (detector too)
    par = json.loads((tmp_path / "par" / "results.json").read_text())
    seq = cli_ablation["res"]["rows"]
    assert par["rows"] == {row: seq[row] for row in ("agnostic", "oracle")}  # whichever process
    assert list(par["rows"]) == ["agnostic", "oracle"]  # table order, not finishing order
    with pytest.raises(ValueError, match="jobs=0"):
        run_ablation("shapesx", out_dir=tmp_path / "bad", jobs=0, **kw)


#: headline's metric, transfer row and gap target as configs/ablations/shapesx.yaml sets them
TM = ("AP75", "transfer_mlp", 0.5)
NC = ("mIoU", "transfer_randn")


def _fake_per_seed(agn, agn_mlp, tr, orc) -> dict:  # noqa: ANN001
    rows = ("agnostic", "agnostic_mlp", "transfer_mlp", "oracle")
    return {row: {"AP75": v} for row, v in zip(rows, (agn, agn_mlp, tr, orc), strict=True)}


def test_headline_targets_are_computed_from_paired_seeds() -> None:
    from mxr.ablate import headline, headline_text

    h = headline(_fake_per_seed([10, 12], [11, 13], [16, 18], [20, 22]), *TM)
    assert h["oracle_minus_agnostic"] == 10.0 and h["gap_closed"] == 0.6
    assert h["gap_closed_target_met"] and h["gain_over_control"] == 5.0
    assert h["gain_std"] == 0.0 and h["gain_target_met"]  # a constant gain: 5 > 3 x 0
    h2 = headline(_fake_per_seed([10, 12], [11, 13], [13, 16], [20, 22]), *TM)
    assert h2["gap_closed"] == pytest.approx(0.35) and not h2["gap_closed_target_met"]
    assert h2["gain_std"] == pytest.approx(0.707, abs=1e-3) and h2["gain_target_met"]  # 2.5 > 2.12
    assert "not met" in headline_text(h2) and "0.35" in headline_text(h2)
    assert headline({"agnostic": {"AP75": [1.0]}}, *TM) is None
    worse = headline(_fake_per_seed([10], [10], [10], [8]), *TM)
    assert worse["gain_std"] is None and not worse["gap_closed_target_met"]
    assert "oracle does not beat agnostic" in headline_text(worse)


def test_publish_keeps_the_prose_and_replaces_the_table(tmp_path: Path) -> None:
    from mxr.ablate import publish

    src = tmp_path / "abl"
    src.mkdir()
    rows = {"agnostic": {"B": {"segm": {"AP": 1.0, "AP_std": 0.0, "AP75": 2.0, "AP75_std": 0.5}}}}
    (src / "results.json").write_text(json.dumps({"rows": rows, "wall_s": {"agnostic": 3.0}}))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "results.md").write_text(
        "# R\n\nintro\n<!-- results:begin -->\nold\n<!-- results:end -->\nafter\n"
    )
    md = publish(src, docs).read_text()
    assert md.startswith("# R\n\nintro\n") and md.endswith("after\n") and "old" not in md
    assert "| agnostic |" in md and "2.0 ± 0.5" in md
    assert json.loads((docs / "results.json").read_text())["rows"] == rows
    assert (docs / "results.png").read_bytes()[:4] == b"\x89PNG"
    (docs / "results.md").write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        publish(src, docs)
    with pytest.raises(FileNotFoundError, match="results.json"):
        publish(tmp_path / "nothing", docs)


def test_embed_targets_use_their_own_row_and_gap_target() -> None:
    from mxr.ablate import headline, headline_text

    per_seed = _fake_per_seed([10, 12], [11, 13], [12, 13], [20, 22])
    per_seed["transfer_embed_mlp"] = {"AP75": [18, 19]}
    h = headline(per_seed, "AP75", "transfer_embed_mlp", 0.7)
    assert h["transfer"] == "transfer_embed_mlp" and h["gap_closed"] == pytest.approx(0.75)
    assert h["gap_closed_target_met"] and h["wins_every_seed"] and h["gain_per_seed"] == [7, 6]
    assert "transfer(embed)+MLP 18.50" in headline_text(h) and "target >= 0.7" in headline_text(h)
    per_seed["transfer_embed_mlp"] = {"AP75": [17, 12]}  # one seed below the control
    h = headline(per_seed, "AP75", "transfer_embed_mlp", 0.7)
    assert not h["wins_every_seed"] and not h["gap_closed_target_met"]
    assert headline(_fake_per_seed([1], [1], [1], [2]), "AP75", "transfer_embed_mlp", 0.7) is None


def test_negative_control_compares_randn_with_agnostic_within_its_std() -> None:
    from mxr.ablate import negative_control, negative_control_text

    ok = negative_control(
        {"agnostic": {"mIoU": [70, 70]}, "transfer_randn": {"mIoU": [71, 69]}}, *NC
    )
    assert (
        ok["excess_over_agnostic"] == 0.0
        and ok["target_met"]
        and "met" in negative_control_text(ok)
    )
    bad = negative_control(
        {"agnostic": {"mIoU": [70, 70]}, "transfer_randn": {"mIoU": [75, 76]}}, *NC
    )
    assert bad["excess_over_agnostic"] == 5.5 and not bad["target_met"]
    assert negative_control({"agnostic": {"mIoU": [70]}}, *NC) is None


def test_merge_from_keeps_published_rows_in_preset_order(
    cli_ablation: dict, tmp_path: Path
) -> None:
    """Merged into the CLI run's published rows (agnostic, transfer_mlp, oracle: not retrained)."""
    first = cli_ablation["res"]  # as first written (a later test rewrites the file)
    published = tmp_path / "published.json"
    published.write_text(json.dumps(first))
    kw = dict(seeds=1, split="test", overrides=cli_ablation["sets"], progress=False,
              log=lambda s: None)  # fmt: skip
    merged = run_ablation("shapesx", rows=["agnostic_mlp"], out_dir=tmp_path / "b",
                          merge_from=published, **kw)  # fmt: skip
    rows = ["agnostic", "agnostic_mlp", "transfer_mlp", "oracle", "transfer_mlp_e2e"]
    assert list(merged["rows"]) == rows
    assert merged["meta"]["protocol"] == {**first["meta"]["protocol"], "agnostic_mlp": "stage-wise"}
    assert merged["rows"]["oracle"] == first["rows"]["oracle"]
    assert merged["per_seed"]["B"]["agnostic"] == first["per_seed"]["B"]["agnostic"]
    assert merged["meta"]["merged"]["rows"] == [
        "agnostic",
        "transfer_mlp",
        "oracle",
        "transfer_mlp_e2e",
    ]
    assert "kept from the earlier published run" in (tmp_path / "b" / "results.md").read_text()
    assert not (tmp_path / "b" / "oracle").exists()  # a merged row is not trained again
    with pytest.raises(ValueError, match="split='test', seeds=1"):
        run_ablation("shapesx", rows=["agnostic_mlp"], out_dir=tmp_path / "b",
                     merge_from=published, **{**kw, "split": "val"})  # fmt: skip
    with pytest.raises(FileNotFoundError, match="nope.json"):
        run_ablation("shapesx", rows=["agnostic_mlp"], out_dir=tmp_path / "b",
                     merge_from=tmp_path / "nope.json", **kw)  # fmt: skip
    (tmp_path / "cut.json").write_text(json.dumps(first)[:100])  # a file cut short
    with pytest.raises(ValueError, match=r"cut\.json: malformed JSON .*written by mxr ablate"):
        run_ablation("shapesx", rows=["agnostic_mlp"], out_dir=tmp_path / "b",
                     merge_from=tmp_path / "cut.json", **kw)  # fmt: skip


def test_paired_difference_pairs_seeds_by_index() -> None:
    from mxr.ablate import paired_difference

    per_seed = {"x": {"mIoU": [3.0, 5.0, 4.0]}, "y": {"mIoU": [1.0, 4.0, 4.0]}}
    d = paired_difference(per_seed, "x", "y")
    assert d["per_seed"] == [2.0, 1.0, 0.0]
    assert d["mean"] == 1.0 and d["std"] == 1.0
    assert paired_difference(per_seed, "x", "missing") is None
    assert paired_difference({"x": {"mIoU": [2.0]}, "y": {"mIoU": [1.0]}}, "x", "y")["std"] is None
