"""The widgets in a real browser: JupyterLab, headless Chromium, Playwright.

nbval talks to the kernel only, so it cannot see whether a slider in the page really moves the
hand. These tests start JupyterLab once on a free loopback port and open notebooks in Debian's
Chromium (never a browser downloaded by ``playwright install``):

* notebooks/01_mano.ipynb: run every cell, press the right-arrow key on the explorer's first
  slider, and check that the mesh vertices plotly holds in the page have changed;
* chapter 7's photo panel (``viz.compare.PhotoPanel``) in a one-cell notebook: drag a rectangle
  over the photo with the mouse and check that the box fields in the page take it.

They are skipped, with the reason printed, where Chromium or Playwright is missing.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("HANDLIB_CHROMIUM", "/usr/bin/chromium"))
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "01_mano.ipynb"
TIMEOUT_S = 300  # each test: about 90 s on an idle 2-core machine, several times that on a loaded one

# JavaScript run in the page. The explorer's output is the one that holds both sliders and a plot.
EXPLORER_MESH_X = """() => {
    const outputs = [...window.jupyterapp.shell.currentWidget.node.querySelectorAll('.jp-OutputArea-output')];
    const output = outputs.find(o => o.querySelector('.widget-slider') && o.querySelector('.js-plotly-plot'));
    if (!output) return null;
    const gd = output.querySelector('.js-plotly-plot');
    const mesh = (gd._fullData || []).find(trace => trace.type === 'mesh3d');
    return mesh ? Array.from(mesh.x) : null;
}"""
ALL_CELLS_RAN = """() => {
    const panel = window.jupyterapp.shell.currentWidget;
    const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
    const cells = panel.content.widgets.filter(cell => cell.model.type === 'code');
    return kernel && kernel.status === 'idle' && cells.every(cell => cell.model.executionCount !== null);
}"""
KERNEL_IDLE = """() => {
    const panel = window.jupyterapp && window.jupyterapp.shell && window.jupyterapp.shell.currentWidget;
    return !!(panel && panel.sessionContext && panel.sessionContext.session
              && panel.sessionContext.session.kernel && panel.sessionContext.session.kernel.status === 'idle'
              && panel.content && panel.content.widgets && panel.content.widgets.length > 0);
}"""


def _requirements() -> str | None:
    """Why the test cannot run here, or None."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium) to run the browser test"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install playwright; no browser download needed)"
    if not NOTEBOOK.exists():
        return f"{NOTEBOOK} not found"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quiet_settings(settings: Path):
    """JupyterLab settings that keep the page still: no "get Jupyter news?" toast over the output."""
    notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True, exist_ok=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))


def _start_jupyter_lab(root: Path, port: int, log) -> subprocess.Popen:
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               "--ServerApp.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
               "--LabApp.expose_app_in_browser=True", f"--ServerApp.root_dir={root}",
               f"--LabApp.workspaces_dir={root / '.workspaces'}", f"--LabApp.user_settings_dir={root / '.settings'}"]
    _quiet_settings(root / ".settings")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # JupyterLab refuses to run as root without it
    env = dict(os.environ, HANDLIB_PROFILE=os.environ.get("HANDLIB_PROFILE", "quick"),
               JUPYTER_CONFIG_DIR=str(root / ".jupyter"))
    # A process group of its own, so the kernels it starts are stopped with it.
    return subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _wait_until_up(server: subprocess.Popen, port: int, deadline: float):
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError("jupyter lab did not answer /api/status in time")


def _stop(server: subprocess.Popen):
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=5)


@pytest.fixture(scope="module")
def lab():
    """(open_notebook, work folder): JupyterLab on a loopback port and a headless Chromium, both
    stopped after the module. ``open_notebook(path)`` copies a notebook in, opens it in a new page,
    runs every cell and returns (page, milliseconds-left function)."""
    reason = _requirements()
    if reason:
        print(f"SKIPPED browser test: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="handlib-browser-"))
    root = work / "notebooks"
    root.mkdir()
    port = _free_port()
    log = open(work / "jupyter.log", "w")
    server = _start_jupyter_lab(root, port, log)
    try:
        _wait_until_up(server, port, time.monotonic() + TIMEOUT_S)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                                 args=["--no-sandbox", "--disable-gpu", "--no-first-run"])

            def open_notebook(notebook: Path):
                deadline = time.monotonic() + TIMEOUT_S
                left = lambda: max(1.0, deadline - time.monotonic()) * 1000  # noqa: E731  milliseconds
                if notebook.parent != root:
                    shutil.copy(notebook, root / notebook.name)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"http://127.0.0.1:{port}/lab/tree/{notebook.name}?reset")
                page.wait_for_function(KERNEL_IDLE, timeout=left(), polling=250)
                page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
                page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
                page.wait_for_function(ALL_CELLS_RAN, timeout=left(), polling=500)
                return page, left

            try:
                yield open_notebook, root
            finally:
                browser.close()
    finally:
        _stop(server)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def test_slider_moves_the_hand_in_the_browser(lab):
    open_notebook, _ = lab
    start = time.monotonic()
    page, left = open_notebook(NOTEBOOK)
    ran = time.monotonic() - start
    page.wait_for_function(f"() => ({EXPLORER_MESH_X})() !== null", timeout=left(), polling=250)
    before = page.evaluate(EXPLORER_MESH_X)

    handle = page.locator(".jp-OutputArea-output .widget-slider .noUi-handle").filter(visible=True).first
    handle.scroll_into_view_if_needed()
    handle.focus()
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    changed = ("(before) => { const x = (" + EXPLORER_MESH_X + ")(); "
               "return !!x && x.some((v, i) => Math.abs(v - before[i]) > 1e-6); }")
    page.wait_for_function(changed, arg=before, timeout=left(), polling=250)
    after = page.evaluate(EXPLORER_MESH_X)
    readout = handle.locator("xpath=ancestor::div[contains(@class,'widget-slider')]"
                             "//div[contains(@class,'widget-readout')]").first.inner_text()
    shot = Path(tempfile.gettempdir()) / "handlib-browser-test.png"
    page.locator(".jp-OutputArea-output .js-plotly-plot").last.scroll_into_view_if_needed()
    page.screenshot(path=str(shot))
    print(f"browser test: slider readout {readout}, {len(before)} vertices, "
          f"max |dx| {max(abs(a - b) for a, b in zip(after, before)):.5f} m, "
          f"notebook ran after {ran:.0f} s, {time.monotonic() - start:.0f} s in all, screenshot {shot}")
    page.close()
    assert len(after) == len(before) > 0
    assert max(abs(a - b) for a, b in zip(after, before)) > 1e-4
    assert float(readout) > 0  # the slider moved (from 0) in the page


PANEL_CELL = """from handlib.data.samples import SAMPLES_DIR
from handlib.viz import compare

panel = compare.PhotoPanel({}, path=SAMPLES_DIR / "panoptic" / "005880453_01_r.jpg")
panel.widget"""


def test_a_rectangle_dragged_over_the_photo_becomes_the_box(lab):
    open_notebook, root = lab
    notebook = root / "photo_panel.ipynb"
    notebook.write_text(json.dumps({"cells": [{"cell_type": "code", "metadata": {}, "execution_count": None,
                                                "outputs": [], "source": PANEL_CELL}],
                                    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                "language": "python"}},
                                    "nbformat": 4, "nbformat_minor": 5}))
    page, left = open_notebook(notebook)
    picker = page.locator(".jp-OutputArea-output .js-plotly-plot .nsewdrag").first
    picker.wait_for(timeout=left())
    picker.scroll_into_view_if_needed()
    fields = page.locator(".jp-OutputArea-output .widget-text input[type=number]")
    values = lambda: [int(v) for v in fields.evaluate_all("inputs => inputs.map(i => i.value)")]  # noqa: E731
    assert values() == [0, 0, 0, 0]
    box = picker.bounding_box()
    page.mouse.move(box["x"] + 0.4 * box["width"], box["y"] + 0.3 * box["height"])
    page.mouse.down()
    for step in range(1, 11):                     # to 60 %, 60 % of the picker: the photo is 1280 x 720
        page.mouse.move(box["x"] + (0.4 + 0.02 * step) * box["width"], box["y"] + (0.3 + 0.03 * step) * box["height"])
    page.mouse.up()
    page.wait_for_function("() => [...document.querySelectorAll('.jp-OutputArea-output .widget-text "
                           "input[type=number]')].some(i => i.value !== '0')", timeout=left(), polling=250)
    x0, y0, x1, y1 = values()
    page.close()
    print(f"browser test: dragged box {x0, y0, x1, y1} (photo pixels)")
    assert abs(x0 - 0.4 * 1280) < 40 and abs(x1 - 0.6 * 1280) < 40
    assert abs(y0 - 0.3 * 720) < 40 and abs(y1 - 0.6 * 720) < 40
