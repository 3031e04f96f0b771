"""The package installs, has a version, its public names work together, and its command line
answers (in process here; tests/test_cli.py runs ``python -m mxr`` as a real process)."""

import re

import pytest

import mxr
from mxr.cli import main


def test_version_is_semver():
    assert re.fullmatch(r"\d+\.\d+\.\d+", mxr.__version__)


def test_a_config_builds_its_model():
    from mxr.config import Config, DataConfig, ModelConfig, TrainConfig, load_config
    from mxr.model.build import build_model

    cfg = load_config(
        None,
        ["model.num_classes=3", "model.mask_classes=[1]", "model.min_size=64", "model.max_size=64"],
    )
    assert isinstance(cfg, Config)
    assert isinstance(cfg.model, ModelConfig) and isinstance(cfg.train, TrainConfig)
    assert isinstance(cfg.data, DataConfig)
    model = build_model(cfg.model)
    assert model.roi_heads.box_predictor.cls_score.out_features == 3
    assert model.config.mask_classes == (1,)


def test_cli_help_lists_subcommands(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith("usage: mxr")
    for command in ("data", "train", "eval", "ablate", "--debug"):
        assert command in out, command
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    out = capsys.readouterr().out
    assert "shapesx" in out and "check" in out


def test_cli_version(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"mxr {mxr.__version__}"
