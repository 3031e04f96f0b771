"""pyproject.toml and environment.yml describe the same environment."""

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*(.*)$", req)
    assert m, req
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    # Requirements with an environment marker (e.g. tomli on Python 3.10) do not apply to the conda
    # environment, which pins Python 3.11.
    return dict(_split(r) for r in reqs if ";" not in r)


def _environment() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return dict(_split(r) for r in pip)


def test_same_packages_and_pins():
    py, env = _pyproject(), _environment()
    assert set(py) == set(env), (
        f"only in pyproject: {sorted(set(py) - set(env))}; "
        f"only in environment.yml: {sorted(set(env) - set(py))}"
    )
    for name, spec in py.items():
        assert spec == env[name], f"{name}: pyproject {spec!r} vs environment.yml {env[name]!r}"


def test_torch_pair_is_pinned():
    py = _pyproject()
    assert py["torch"] == "==2.14.1"
    assert py["torchvision"] == "==0.29.1"


def test_environment_python_matches_requires_python():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pins = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert pins, "environment.yml names no python"
    version = pins[0].split("=")[-1]
    major, minor = map(int, version.split(".")[:2])
    assert (major, minor) >= (3, 10)
