"""The package installs, has a version, and its command line answers."""

import re
import subprocess
import sys

import mxr


def test_version_is_semver():
    assert re.fullmatch(r"\d+\.\d+\.\d+", mxr.__version__)


def test_public_api_names():
    for name in ("ModelConfig", "build_model", "Config", "load_config"):
        assert hasattr(mxr, name), name


def test_cli_help_lists_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "mxr", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "usage" in out.lower()
    assert "data" in out


def test_cli_version():
    out = subprocess.run(
        [sys.executable, "-m", "mxr", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert mxr.__version__ in out
