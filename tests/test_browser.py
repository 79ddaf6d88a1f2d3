"""JupyterLab in a real browser, as `make lab` opens it: every notebook runs top to bottom from the Run
menu without a traceback, its widgets render, and moving a slider redraws the widget's figure.

Needs Debian's chromium (`.ci/run` installs it) driven by Playwright; Playwright's own browser download
does not work here.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from notebook_tools import NOTEBOOKS, REPO

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
RUN_TIMEOUT_MS = int(os.environ.get("LECTURELIB_BROWSER_TIMEOUT", "240")) * 1000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a copy of notebooks/, with the venv's Python (the `make lab` set-up)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(REPO / "notebooks", root / "notebooks")
    settings = root / "user-settings" / "@jupyterlab"
    for extension, name, value in [("notebook-extension", "tracker", '{"windowingMode": "none"}'),
                                   ("apputils-extension", "notification", '{"fetchNews": "false"}')]:
        (settings / extension).mkdir(parents=True, exist_ok=True)
        (settings / extension / f"{name}.jupyterlab-settings").write_text(value)
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root / 'notebooks'}",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(root / "lab.log", "w")
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(root / "user-settings")}
    server = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("JupyterLab did not start:\n" + (root / "lab.log").read_text()[-3000:])
            time.sleep(0.5)
    yield url, token
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


@pytest.fixture(scope="module")
def browser(lab):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _run_all(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()


def _widget_images(page) -> list[str]:
    return page.eval_on_selector_all(".widget-output img, .jupyter-widgets-output-area img",
                                     "imgs => imgs.map(i => i.src)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.parent.name for p in NOTEBOOKS])
def test_notebook_runs_in_jupyterlab_and_its_widgets_react(lab, browser, path, tmp_path):
    url, token = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        relative = path.relative_to(REPO / "notebooks").as_posix()
        # A workspace of its own, reset: no tabs restored from an earlier test.
        page.goto(f"{url}/lab/workspaces/{path.stem}/tree/{relative}?token={token}&reset")
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
        # The kernel has started and connected ("Python 3 (ipykernel) | Idle" in the status bar).
        page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for(timeout=90_000)
        _run_all(page)

        code_cells = sum(c.cell_type == "code" and bool(c.source.strip())
                         for c in nbformat.read(path, as_version=4).cells)
        started = time.monotonic()
        while True:    # every non-empty code cell has its execution count, and none is busy
            page.wait_for_timeout(1000)
            prompts = [p.strip() for p in page.eval_on_selector_all(
                ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt", "ps => ps.map(p => p.textContent)")]
            numbered = [p for p in prompts if p[1:-2].isdigit()]
            if len(numbered) >= code_cells and "[*]:" not in prompts:
                break
            if (time.monotonic() - started) * 1000 > RUN_TIMEOUT_MS:
                page.screenshot(path=str(tmp_path / "still-running.png"))
                raise AssertionError(f"still running after {RUN_TIMEOUT_MS / 1000:.0f} s (screenshot in {tmp_path}): "
                                     f"{prompts}")

        text = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").inner_text()
        assert "Traceback (most recent call last)" not in text
        assert "CheckFailed" not in text

        sliders = page.locator(".widget-slider .noUi-handle, .widget-slider input[type='range']")
        assert sliders.count() >= 1, "no slider rendered: the widgets are not displayed"
        before = _widget_images(page)
        assert before, "the widgets drew no figure"
        handle = sliders.first
        handle.scroll_into_view_if_needed()
        handle.focus()
        page.keyboard.press("ArrowRight")
        deadline = time.monotonic() + 30
        while _widget_images(page) == before:
            assert time.monotonic() < deadline, "moving the first slider did not redraw the widget's figure"
            page.wait_for_timeout(250)
    finally:
        page.close()
