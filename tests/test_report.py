"""mxr.report: the one home of cells, tables and evaluation-dict getters."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import stop_at_replace

from mxr.files import atomic_path, read_json_file, read_json_or_none, write_text_atomic
from mxr.report import cell, cell_pm, eval_metric, markdown_table, mask_ap, mask_miou

RESULT = {
    "A": {"segm": {"AP": 41.25, "AP50": None}, "mask_iou": {"mIoU": 70.04}},
    "B": {"segm": {"AP": 12.0}},
}


def test_cells_round_to_one_decimal_and_show_a_dash_for_missing() -> None:
    assert [cell(41.25), cell(0), cell(None)] == ["41.2", "0.0", "—"]
    assert [cell_pm(3.14159, 0.05), cell_pm(None, 1.0)] == ["3.1 ± 0.1", "—"]


def test_markdown_table_aligns_columns_from_right_from() -> None:
    rows = [["x", "1.0", "2.0"]]
    assert (
        markdown_table(["a", "b", "c"], rows) == "| a | b | c |\n|---|---|---|\n| x | 1.0 | 2.0 |"
    )
    assert markdown_table(["a", "b", "c"], rows, right_from=1).splitlines()[1] == "|---|---:|---:|"


@pytest.mark.parametrize(
    ("split", "metric", "expected"),
    [("A", "AP", 41.25), ("A", "AP50", None), ("A", "mIoU", 70.04), ("B", "mIoU", None),
     ("all", "AP", None)],
)  # fmt: skip
def test_eval_metric_reads_segm_stats_and_miou(split: str, metric: str, expected) -> None:  # noqa: ANN001
    assert eval_metric(RESULT, split, metric) == expected


def test_getters_before_evaluation_are_none() -> None:
    assert mask_ap(None, "A") is None and mask_miou(None, "B") is None
    assert mask_ap(RESULT, "B") == 12.0 and mask_miou(RESULT, "A") == 70.04


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        (None, FileNotFoundError, r"f\.json: results file not found$"),
        ("{", ValueError, r"f\.json: malformed JSON \(.*\); expected an object$"),
        ('"x"', ValueError, r"f\.json: top level is str; expected an object$"),
        (b"\xff", ValueError, r"f\.json: malformed JSON"),
    ],
)
def test_read_json_file_says_in_one_line_what_is_wrong_with_which_file(
    tmp_path, text, error, message
) -> None:
    path = tmp_path / "f.json"
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    with pytest.raises(error, match=message) as e:
        read_json_file(path, "an object", "results file")
    assert "\n" not in str(e.value)


def test_read_json_file_returns_the_object(tmp_path) -> None:
    (tmp_path / "f.json").write_text('{"a": [1, 2]}')
    assert read_json_file(tmp_path / "f.json", "an object") == {"a": [1, 2]}


def test_read_json_or_none_is_none_for_a_missing_or_cut_short_file(tmp_path) -> None:
    path = tmp_path / "eval.json"
    assert read_json_or_none(path) is None
    path.write_text('{"A": {"segm"')
    assert read_json_or_none(path) is None
    path.write_text('{"A": 1}')
    assert read_json_or_none(path) == {"A": 1}


def test_atomic_path_replaces_only_when_the_block_finishes(tmp_path) -> None:
    path = tmp_path / "sub" / "eval.json"
    write_text_atomic(path, "old")  # makes the folder
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt  # a stop mid-write
    assert path.read_text() == "old"
    assert [p.name for p in path.parent.iterdir()] == ["eval.json"]  # no temp file left
    write_text_atomic(path, "new")
    assert path.read_text() == "new"


@pytest.mark.parametrize("what", ["config", "embedding", "checkpoint"])
def test_files_a_stop_could_cut_short_are_written_atomically(tmp_path, monkeypatch, what) -> None:  # noqa: ANN001
    import torch

    from mxr.config import Config, save_config
    from mxr.data.embedding import write_embedding_json
    from mxr.engine.checkpoint import save_checkpoint

    path = (
        tmp_path / {"config": "config.yaml", "embedding": "e.json", "checkpoint": "last.pt"}[what]
    )
    write = {
        "config": lambda: save_config(Config(), path),
        "embedding": lambda: write_embedding_json({"cat": [1.0, 2.0]}, path),
        "checkpoint": lambda: save_checkpoint(path, {"w": torch.ones(1)}),
    }[what]
    path.write_text("old")
    stop_at_replace(monkeypatch, path.name)
    with pytest.raises(KeyboardInterrupt):
        write()
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == [path.name]
    monkeypatch.undo()
    write()
    assert path.read_bytes() != b"old"


def test_read_metrics_skips_a_last_line_cut_short_with_a_warning(tmp_path: Path) -> None:
    from mxr.files import read_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iter": 1, "loss": 2.0}\n{"iter": 2, "loss": 1.5}\n{"iter": 3, "lo')
    with pytest.warns(UserWarning, match=r"metrics\.jsonl: line 3 is cut short"):
        rows = read_metrics(tmp_path)
    assert [r["iter"] for r in rows] == [1, 2]
    path.write_text('{"iter": 1, "lo\n{"iter": 2, "loss": 1.5}\n')  # not the last line: an error
    with pytest.raises(ValueError, match=r"metrics\.jsonl: line 1 is not valid JSON"):
        read_metrics(path)
