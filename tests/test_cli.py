"""The command line: every subcommand registered; a user's mistake is one line and exit status 2,
naming the file or field (the traceback only under ``--debug``); a bug keeps its traceback."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import mxr.__main__
from mxr import cli
from mxr.engine.checkpoint import load_checkpoint


class NotATensor:
    """A custom class: a checkpoint holding one is refused by ``weights_only`` loading."""


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``mxr.cli.main(argv)`` -> (exit status, stdout, stderr)."""
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_error_line(err: str, command: str, *names: str) -> str:
    """``err`` is exactly one line ``mxr <command>: error: ...`` naming every one of ``names``."""
    assert err.endswith("\n") and err.count("\n") == 1, err
    line = err.rstrip("\n")
    assert line.startswith(f"mxr {command}: error: "), line
    assert "Traceback" not in line and "weights_only=False" not in line, line
    for name in names:
        assert name in line, (name, line)
    return line


# --------------------------------------------------------------------------------------------------
# the parser
# --------------------------------------------------------------------------------------------------
def test_every_subcommand_is_registered() -> None:
    from mxr import ablate

    parser = cli.build_parser()
    for argv, handler in (
        (["data", "shapesx", "--out", "x"], cli._run_shapesx),
        (["data", "check", "a.json"], cli._run_check),
        (["train", "--out", "x"], cli._run_train),
        (["eval", "--checkpoint", "x.pt"], cli._run_eval),
        (["ablate"], ablate._run_cli),
    ):
        assert parser.parse_args(argv).func is handler, argv
    assert mxr.__main__.main is cli.main and mxr.__main__.build_parser is cli.build_parser


def test_debug_is_accepted_before_and_after_the_subcommand() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["--debug", "train", "--out", "x"]).debug is True
    assert parser.parse_args(["train", "--out", "x", "--debug"]).debug is True
    assert parser.parse_args(["data", "check", "a.json", "--debug"]).debug is True
    assert parser.parse_args(["train", "--out", "x"]).debug is False


# --------------------------------------------------------------------------------------------------
# config mistakes
# --------------------------------------------------------------------------------------------------
def test_missing_config_file_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, out, err = run_cli(
        capsys, "train", "--config", "nope.yaml", "--out", str(tmp_path / "run")
    )
    assert status == 2 and out == ""
    line = assert_one_error_line(err, "train", "nope.yaml")
    assert line == "mxr train: error: config file not found: nope.yaml"
    assert not (tmp_path / "run").exists()  # nothing was started


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("train.iterations=-3", ("train.iterations", "-3", "positive integer")),
        ("train.lr=fast", ("train.lr", "fast")),
        ("model.mask_head=agnostc", ("model.mask_head", "agnostc", "agnostic")),
    ],
)
def test_invalid_set_value_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, override: str, names: tuple[str, ...]
) -> None:
    status, _, err = run_cli(capsys, "train", "--set", override, "--out", str(tmp_path))
    assert status == 2
    assert_one_error_line(err, "train", *names)


def test_unknown_set_key_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = run_cli(capsys, "train", "--set", "train.iteratons=3", "--out", str(tmp_path))
    assert status == 2
    assert_one_error_line(err, "train", "train.iteratons", "iterations")  # valid keys listed


def test_bad_key_in_a_config_file_names_file_and_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  iteratons: 3\n")
    status, _, err = run_cli(capsys, "train", "--config", str(bad), "--out", str(tmp_path / "r"))
    assert status == 2
    assert_one_error_line(err, "train", "bad.yaml", "train.iteratons")


def test_ablate_reports_a_bad_set_key_the_same_way(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, _, err = run_cli(
        capsys, "ablate", "--set", "model.nope=1", "--out", str(tmp_path), "--no-progress"
    )
    assert status == 2
    assert_one_error_line(err, "ablate", "model.nope")


# --------------------------------------------------------------------------------------------------
# checkpoints that are not mxr checkpoints
# --------------------------------------------------------------------------------------------------
def _small_checkpoint(path: Path) -> Path:
    torch.save(
        {"model": {"w": torch.arange(2000.0)}, "config": {"model": {}}, "iteration": 3}, path
    )
    return path


def _garbage(path: Path) -> Path:
    path.write_bytes(b"this is not a checkpoint\n" * 40)
    return path


def _markdown(path: Path) -> Path:  # torch's unpickler reads "#" as an opcode of its own
    path.write_text("# mxr\n\nA Jupyter-first course.\n" * 10)
    return path


def _truncated(path: Path) -> Path:
    data = _small_checkpoint(path).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _pickled_object(path: Path) -> Path:
    torch.save({"model": {}, "config": {}, "iteration": 1, "extra": NotATensor()}, path)
    return path


def _plain_pickle(path: Path) -> Path:  # pickle protocol 5: torch would warn about the protocol
    path.write_bytes(pickle.dumps({"model": {}}, protocol=5))
    return path


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _no_keys(path: Path) -> Path:
    torch.save({"weights": torch.zeros(3)}, path)
    return path


def _a_list(path: Path) -> Path:
    torch.save([torch.zeros(3)], path)
    return path


BAD_CHECKPOINTS = {
    "garbage": (_garbage, "not a file written by torch.save"),
    "markdown": (_markdown, "not a file written by torch.save"),
    "truncated": (_truncated, "truncated or corrupt"),
    "pickled_object": (_pickled_object, "pickled objects"),
    "plain_pickle": (_plain_pickle, "pickled objects"),
    "empty": (_empty, "empty"),
    "no_keys": (_no_keys, "lacks model, config, iteration"),
    "a_list": (_a_list, "holds a list"),
}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_load_checkpoint_refuses_with_one_short_reason(tmp_path: Path, case: str) -> None:
    make, reason = BAD_CHECKPOINTS[case]
    path = make(tmp_path / "last.pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError) as info:
            load_checkpoint(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: not an mxr checkpoint (") and reason in msg, msg
    assert "\n" not in msg and "weights_only=False" not in msg and len(msg) < 300, msg
    assert not caught, [str(w.message) for w in caught]


def test_pickled_object_checkpoint_names_the_class(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"NotATensor.*weights_only loading refuses"):
        load_checkpoint(_pickled_object(tmp_path / "last.pt"))


def test_a_real_checkpoint_still_loads(tmp_path: Path) -> None:
    ckpt = load_checkpoint(_small_checkpoint(tmp_path / "last.pt"))
    assert ckpt["iteration"] == 3 and torch.equal(ckpt["model"]["w"], torch.arange(2000.0))


@pytest.mark.parametrize("case", ["garbage", "truncated", "pickled_object"])
def test_eval_of_a_bad_checkpoint_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str
) -> None:
    make, reason = BAD_CHECKPOINTS[case]
    path = make(tmp_path / "last.pt")
    status, out, err = run_cli(capsys, "eval", "--checkpoint", str(path))
    assert status == 2 and out == ""
    assert_one_error_line(err, "eval", str(path), "not an mxr checkpoint", reason)


def test_eval_of_a_missing_checkpoint_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, _, err = run_cli(capsys, "eval", "--checkpoint", str(tmp_path / "nope.pt"))
    assert status == 2
    assert_one_error_line(err, "eval", "nope.pt", "not found")


# --------------------------------------------------------------------------------------------------
# --debug, bugs, and the real process
# --------------------------------------------------------------------------------------------------
def test_debug_shows_the_traceback_then_the_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = _truncated(tmp_path / "last.pt")
    status, _, err = run_cli(capsys, "eval", "--checkpoint", str(path), "--debug")
    assert status == 2
    lines = err.rstrip("\n").splitlines()
    assert lines[0] == "Traceback (most recent call last):" and len(lines) > 5
    assert "load_checkpoint" in err  # the frames are there
    assert lines[-1].startswith("mxr eval: error: ") and "truncated or corrupt" in lines[-1]


def test_a_bug_keeps_its_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An exception that is not a user error propagates (the traceback), it is not one line."""
    import mxr.engine.loop

    def broken_train(*args: object, **kwargs: object) -> dict:
        raise RuntimeError("a bug in the training loop")

    monkeypatch.setattr(mxr.engine.loop, "train", broken_train)
    with pytest.raises(RuntimeError, match="a bug in the training loop"):
        cli.main(["train", "--set", "train.iterations=1", "--out", str(tmp_path)])
    assert "error:" not in capsys.readouterr().err


def test_error_line_joins_a_multiline_message_and_names_an_os_error_file() -> None:
    assert cli.error_line(ValueError("first\n  second")) == "first second"
    try:
        open("/nonexistent-dir/x.yaml")  # noqa: SIM115
    except OSError as err:
        assert cli.error_line(err) == "No such file or directory: /nonexistent-dir/x.yaml"


def test_python_m_mxr_exits_2_with_one_stderr_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mxr", "train", "--config", "nope.yaml", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr == "mxr train: error: config file not found: nope.yaml\n"
    assert proc.stdout == ""


def test_an_internal_value_error_keeps_its_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Only the user-error type is one line: a ValueError raised inside mxr or torch is a bug, and
    reaches the caller with its traceback instead of exit status 2."""
    import mxr.engine.loop

    def broken_train(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise ValueError("an internal shape mismatch")

    monkeypatch.setattr(mxr.engine.loop, "train", broken_train)
    with pytest.raises(ValueError, match="an internal shape mismatch"):
        cli.main(["train", "--out", str(tmp_path / "run"), "--no-progress"])
    # the same command with a user's mistake is still one line
    status, _, err = run_cli(capsys, "train", "--config", "nope.yaml", "--out", str(tmp_path))
    assert status == 2
    assert_one_error_line(err, "train", "nope.yaml")
