"""docs/panel_screenshot.py stops with one clear line when a tool it needs is missing."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "panel_screenshot.py"


@pytest.fixture
def script():
    spec = importlib.util.spec_from_file_location("panel_screenshot", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_missing_chromium_is_one_line_naming_it(script, monkeypatch):
    monkeypatch.delenv("CHROMIUM", raising=False)
    monkeypatch.setattr(script.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit) as stop:
        script.chromium()
    assert str(stop.value).startswith("panel_screenshot: chromium not found")
    assert "\n" not in str(stop.value)


def test_chromium_named_by_the_environment_comes_first(script, monkeypatch):
    monkeypatch.setenv("CHROMIUM", "my-chrome")
    monkeypatch.setattr(script.shutil, "which", lambda name: f"/opt/{name}")
    assert script.chromium() == "/opt/my-chrome"


def test_a_missing_npm_is_one_line_naming_the_package(script, monkeypatch, tmp_path):
    monkeypatch.setattr(script.shutil, "which", lambda name: None)
    bundle = tmp_path / "html-manager-x" / "package" / "dist" / "embed.js"
    with pytest.raises(SystemExit) as stop:
        script.fetch_bundle(bundle)
    assert str(stop.value).startswith("panel_screenshot: npm not found")
    assert script.PACKAGE in str(stop.value)


def test_the_bundle_is_the_one_ipywidgets_embeds(script):
    _, dist = script.bundle_spec()
    assert dist.startswith("dist/") and dist.endswith(".js")
    path = script.bundle_path()
    assert path.parts[-len(Path(dist).parts) - 1 :] == ("package", *Path(dist).parts)
    assert path.parts[-len(Path(dist).parts) - 2].startswith("html-manager-")  # one per version
