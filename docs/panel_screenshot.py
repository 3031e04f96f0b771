"""A picture of notebook 04's training panel after its run, for readers who open the notebook on the
web (GitHub, nbviewer), where widgets do not render: ``notebooks/figures/panel.png``.

    MXR_BUDGET=full python docs/panel_screenshot.py [OUT.png]

It builds the panel and calls ``panel.run(...)`` with the settings of notebook 04's cell 9 (the
course's ``transfer_embed_mlp`` run: reloaded in seconds when ``make run`` has cached it, otherwise
trained, about 2 minutes for the mask branch and 11 for a fresh detector on 2 cores). Then it
exports the panel's widget tree with ``ipywidgets.embed.embed_minimal_html`` into a page that loads
the standalone bundle of ``@jupyter-widgets/html-manager`` (``dist/embed.js``, the file ipywidgets
itself embeds, at the version it names), styled with JupyterLab's light theme, and takes a
screenshot of that page with headless Chromium: the loss plot, the per-split table, the comparison
and its chart, as JupyterLab shows them. The bundle is fetched once with ``npm pack`` into
``~/.cache/mxr/`` (``$XDG_CACHE_HOME``); the course never needs it.

Needs ``chromium`` (``$CHROMIUM`` overrides) and, the first time, ``npm`` with the npm registry.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import NoReturn

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "notebooks" / "figures" / "panel.png"
#: notebook 04, cell 9: what the panel shows there after a finished run
RUN = {
    "mask_head": "transfer",
    "transfer_input": "embed",
    "structure": "2-layer LeakyReLU",
    "stop_grad": True,
    "mlp_fusion": True,
    "seed": 0,
}
WIDTH = 1000  # the page's width: a notebook's output area in a common JupyterLab window
MAX_BYTES = 150_000
PACKAGE = "@jupyter-widgets/html-manager"
LAB_THEME = Path("share/jupyter/lab/themes/@jupyterlab/theme-light-extension/index.css")
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<title>{title}</title>
<style>{theme}</style>
<style>
body {{
  margin: 0; padding: 12px; background: #fff;
  font-family: var(--jp-ui-font-family); font-size: var(--jp-ui-font-size1);
  color: var(--jp-ui-font-color1);
}}
</style>
</head>
<body>
{snippet}
</body>
</html>
"""


def fail(message: str) -> NoReturn:
    sys.exit(f"panel_screenshot: {message}")


def chromium() -> str:
    """The Chromium executable: ``$CHROMIUM``, else the first of the usual names on the PATH."""
    names = [os.environ["CHROMIUM"]] if os.environ.get("CHROMIUM") else []
    names += ["chromium", "chromium-browser", "google-chrome"]
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    fail("chromium not found (install it, e.g. apt-get install chromium, or set CHROMIUM)")


def bundle_spec() -> tuple[str, str]:
    """The html-manager version range and dist file ipywidgets embeds without require.js."""
    from ipywidgets.embed import DEFAULT_EMBED_SCRIPT_URL

    m = re.search(r"html-manager@([^/]+)/(dist/[\w.-]+\.js)$", DEFAULT_EMBED_SCRIPT_URL)
    if m is None:
        fail(f"cannot read the html-manager version in {DEFAULT_EMBED_SCRIPT_URL!r}")
    return m.group(1), m.group(2)


def bundle_path() -> Path:
    """Where the unpacked npm package keeps the standalone bundle (it may not be there yet)."""
    spec, dist = bundle_spec()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = "html-manager-" + re.sub(r"[^\w.-]", "_", spec)
    return cache / "mxr" / folder / "package" / dist


def fetch_bundle(path: Path) -> None:
    """``npm pack`` the html-manager and unpack it where :func:`bundle_path` looks."""
    npm = shutil.which("npm")
    if npm is None:
        fail(f"npm not found: it fetches {PACKAGE} once (install Node.js and npm)")
    spec, _ = bundle_spec()
    home = path.parents[2]  # .../html-manager-<spec>/package/dist/embed.js
    home.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home.parent) as tmp:
        done = subprocess.run(
            [npm, "pack", f"{PACKAGE}@{spec}", "--json", "--pack-destination", tmp],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
            fail(f"npm pack {PACKAGE}@{spec} failed: {tail}")
        packed = json.loads(done.stdout)[0]
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(Path(tmp) / packed["filename"]) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(unpacked, filter="data")
            else:  # Python without extraction filters: refuse any path leaving the folder
                for member in tar.getmembers():
                    if member.name.startswith(("/", "..")) or "/../" in member.name:
                        fail(f"unsafe path {member.name!r} in {packed['filename']}")
                tar.extractall(unpacked)
        if not (unpacked / path.relative_to(home)).is_file():
            fail(f"{packed['id']} has no {path.relative_to(home)}")
        shutil.rmtree(home, ignore_errors=True)
        unpacked.rename(home)
    print(f"fetched {packed['id']} into {home}")


def lab_theme() -> str:
    """JupyterLab's light-theme variables (font, colours), winning over the bundle's defaults."""
    css = Path(sys.prefix) / LAB_THEME
    if not css.is_file():
        print(f"note: {css} is absent (JupyterLab not installed): html-manager's default look")
        return ""
    return css.read_text(encoding="utf-8").replace(":root", "html:root")


def panel_page(path: Path, bundle: Path) -> str:
    """Run the panel as notebook 04 does and write its page to ``path``; the run's label."""
    import matplotlib

    matplotlib.use("Agg")
    from ipywidgets.embed import embed_minimal_html

    from mxr.course.runs import budget_mode, ensure_course_data
    from mxr.course.widgets import training_panel

    ensure_course_data()
    panel = training_panel()
    log = panel.run(**RUN)
    how = "reloaded" if log.cached else f"trained in {log.seconds:.0f} s"
    print(f"panel run ({budget_mode()} budget): {log.label}, {how}")
    template = PAGE.replace("{theme}", lab_theme().replace("{", "{{").replace("}", "}}"))
    embed_minimal_html(
        path,
        views=[panel.widget],
        title="mxr training panel",
        template=template,
        embed_url=bundle.as_uri(),
    )
    return log.label


def screenshot(browser: str, page: Path, raw: Path, profile: Path) -> None:
    """Chromium's screenshot of ``page``, tall enough for the whole panel (cropped later)."""
    cmd = [
        browser,
        "--headless",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--allow-file-access-from-files",  # the bundle's icon font, next to embed.js
        "--force-device-scale-factor=1",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},2000",
        "--virtual-time-budget=20000",  # let the bundle render every view before the shot
        f"--screenshot={raw}",
        page.as_uri(),
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # Chromium's sandbox refuses root
        cmd.insert(1, "--no-sandbox")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        fail(f"{browser} took over 180 s for the screenshot")
    if done.returncode != 0 or not raw.is_file():
        tail = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        fail(f"{browser} wrote no screenshot (exit {done.returncode}): {tail}")


def crop_and_save(raw: Path, out: Path) -> tuple[int, int]:
    """The panel's part of the screenshot (white margins off), as a 256-colour PNG; its size."""
    from PIL import Image, ImageChops

    image = Image.open(raw).convert("RGB")
    box = ImageChops.difference(image, Image.new("RGB", image.size, "white")).getbbox()
    if box is None or box[2] - box[0] < 600 or box[3] - box[1] < 600:
        fail(f"the widgets did not render (content box {box} in {raw.name}): see the page's log")
    pad = 10
    left, top = max(box[0] - pad, 0), max(box[1] - pad, 0)
    right, bottom = min(box[2] + pad, image.width), min(box[3] + pad, image.height)
    if bottom == image.height:
        fail("the panel is taller than the screenshot: raise its height in screenshot()")
    panel = image.crop((left, top, right, bottom))
    out.parent.mkdir(parents=True, exist_ok=True)
    panel.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return panel.size


def main(out: Path = OUT) -> None:
    t0 = time.perf_counter()
    os.environ.setdefault("MXR_BUDGET", "full")  # the learners' budget, also under CI
    browser = chromium()
    bundle = bundle_path()
    if not bundle.is_file():
        fetch_bundle(bundle)
    with tempfile.TemporaryDirectory(prefix="mxr-panel-") as tmp:
        page, raw = Path(tmp) / "panel.html", Path(tmp) / "raw.png"
        label = panel_page(page, bundle)
        screenshot(browser, page, raw, Path(tmp) / "profile")
        width, height = crop_and_save(raw, out)
    size = out.stat().st_size
    print(
        f"wrote {out} ({width}x{height} px, {size / 1000:.0f} kB): the panel after {label}, "
        f"in {time.perf_counter() - t0:.0f} s"
    )
    if size > MAX_BYTES:
        fail(f"{out} is {size} bytes, over {MAX_BYTES}: lower WIDTH or the colours")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else OUT)
