"""End to end in a real browser: JupyterLab + headless Chromium run notebook 04 and press Train.

nbval executes notebooks but cannot see widgets; this test checks what a learner sees. It starts
JupyterLab on a free local port (smoke budget, runs cached in a temporary folder so training really
happens), opens ``04_train_on_the_ab_split.ipynb`` in Debian's ``/usr/bin/chromium`` through Playwright
(no browser download), runs all cells, sets the panel to a new budget, presses **Train**, and checks
that the panel shows the loss plot (an image) and the per-split A/B table. The screenshot is kept as
``test-artifacts/browser_04.png``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOK = "04_train_on_the_ab_split.ipynb"
ARTIFACT = REPO / "test-artifacts" / "browser_04.png"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.is_file(),
        reason=f"{CHROMIUM} is absent (install Debian's chromium: apt-get install -y chromium)",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer {url} within {timeout_s:.0f} s")


@pytest.fixture
def lab(tmp_path: Path):
    """A JupyterLab server on 127.0.0.1 serving a copy of notebook 04; yields its base URL and token."""
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(REPO / "notebooks" / NOTEBOOK, root / NOTEBOOK)
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "MXR_BUDGET": "smoke",
        "MXR_RUNS": str(tmp_path / "runs"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter_config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter_runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab_settings"),
    }
    # The course data is set-up, not what this test checks: generate it first, so that the notebook
    # does not show the generator's progress bar (stderr) on a fresh clone.
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from mxr.course.runs import ensure_course_data; ensure_course_data()",
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    # no "get notified about news?" toast over the panel (and no news fetch)
    settings = tmp_path / "lab_settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    # no notebook windowing: every output is laid out, so visibility checks see what a learner sees
    nb_settings = tmp_path / "lab_settings" / "@jupyterlab" / "notebook-extension"
    nb_settings.mkdir(parents=True)
    (nb_settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    log = tmp_path / "lab.log"
    cmd = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
        cmd.append("--allow-root")
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/api/status?token={token}", 90, proc, log)
        yield base, token
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def test_notebook_04_train_button_shows_plot_and_table(lab: tuple[str, str]) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, token = lab
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
            ],
        )  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.set_default_timeout(60_000)
            page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}")
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
            # the kernel must be up before "run all"
            page.wait_for_function(
                "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                " return !!(w && w.sessionContext && w.sessionContext.session"
                " && w.sessionContext.session.kernel"
                " && w.sessionContext.session.kernel.status === 'idle'); }",
                timeout=120_000,
            )
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            # every code cell executed: no '[*]' / '[ ]' prompts left, kernel idle
            page.wait_for_function(
                "() => { const w = window.jupyterapp.shell.currentWidget;"
                " const cells = w.content.widgets.filter(c => c.model.type === 'code');"
                " return w.sessionContext.session.kernel.status === 'idle'"
                " && cells.every(c => c.model.executionCount !== null); }",
                timeout=480_000,
            )
            errors = page.locator(
                ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
            )
            assert (
                page.locator(
                    ".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']"
                ).count()
                == 0
            )

            panel = page.locator(".widget-vbox", has=page.locator("button", has_text="Train")).first
            expect(panel).to_be_visible()
            panel.scroll_into_view_if_needed()
            iterations = panel.locator(
                ".widget-inline-hbox", has=page.locator("label", has_text="iterations")
            ).locator("input")
            iterations.fill("3")  # a budget no run used yet: pressing Train really trains
            iterations.press("Enter")
            panel.locator("button", has_text="Train").click()
            # the status line before the press names the run from code
            expect(panel.get_by_text("(3 it), seed 0, trained in")).to_be_visible(timeout=300_000)

            plot = panel.locator(".widget-image img, img.widget-image").first
            expect(plot).to_be_visible()
            assert plot.evaluate("img => img.naturalWidth") > 100
            table = panel.locator("table.mxr-table").first
            expect(table).to_be_visible()
            text = table.inner_text()
            assert "mask AP75" in text and "Validation AP per class set" in text
            cells = [c.strip() for c in table.locator("td").all_inner_texts()]
            assert "A" in cells and "B" in cells
            comparison = panel.locator("table.mxr-table").nth(1)
            # the panel run, 4 controls, this one
            assert comparison.locator("tbody tr").count() == 6
            expect(comparison).to_be_visible()
            chart = panel.locator(".widget-image img, img.widget-image").nth(1)
            page.wait_for_function(
                "img => img.complete && img.naturalWidth > 100", arg=chart.element_handle()
            )
            # JupyterLab 4 lays out only the parts of a notebook near the viewport by default
            # (windowing); the lab above runs with windowingMode "none", so the chart below the
            # table gets its layout box (640x256) and must be visible, as a learner scrolling sees it
            chart.scroll_into_view_if_needed()
            assert chart.evaluate("img => img.offsetWidth * img.offsetHeight") > 0
            expect(chart).to_be_visible()

            panel.evaluate("el => el.scrollIntoView({block: 'start'})")
            page.screenshot(path=str(ARTIFACT), full_page=False)
            assert errors.count() == 0, errors.first.inner_text()
        finally:
            browser.close()
    assert ARTIFACT.is_file() and ARTIFACT.stat().st_size > 10_000
