"""The Workbench in a real JupyterLab page, driven by a headless Chromium.

The test starts JupyterLab on 127.0.0.1, opens a notebook that shows a Workbench, runs it, clicks
Run, waits for the ELBO plot and the step counter to change, clicks Pause and checks that the
counter stays frozen, clicks Resume and sees it move again, and saves a screenshot under
``test-output/browser/``. It needs Debian's ``chromium`` (installed here with apt-get when the
test runs as root) and the ``playwright`` package (the ``test`` extra); it never downloads a
browser of its own. Without them it is skipped, unless ``VIBENCH_REQUIRE_BROWSER=1`` (as in CI)
makes that a failure.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

CHROMIUM = "/usr/bin/chromium"
OUTPUT = pathlib.Path(__file__).resolve().parent.parent / "test-output" / "browser"
REQUIRED = os.environ.get("VIBENCH_REQUIRE_BROWSER") == "1"

NOTEBOOK_CELLS = [
    "import vibench as vb\n"
    "model = vb.models.eight_schools()\n"
    "config = vb.Config(guide='meanfield', init='prior', schedule='constant', num_steps=100_000_000, chunk_size=200)\n"
    "wb = vb.Workbench(model, config, refresh_hz=5)\n"
    "wb",
]


def _unavailable(reason: str):
    if REQUIRED:
        pytest.fail(f"browser test required (VIBENCH_REQUIRE_BROWSER=1) but {reason}")
    pytest.skip(reason)


def _install_chromium() -> None:
    if os.path.exists(CHROMIUM):
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        _unavailable(f"{CHROMIUM} is missing; install Debian's chromium (apt-get install chromium) as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            _unavailable(f"{' '.join(command)} failed: {done.stderr[-2000:]}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on loopback with its own config, data and runtime folders."""
    _install_chromium()
    pytest.importorskip("jupyterlab")
    root = tmp_path / "lab"
    root.mkdir()
    notebook = {
        "cells": [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [],
                   "source": source} for i, source in enumerate(NOTEBOOK_CELLS)],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    (root / "workbench.ipynb").write_text(json.dumps(notebook))
    env = dict(os.environ)
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR",
                 "JUPYTERLAB_WORKSPACES_DIR"):
        env[name] = str(tmp_path / name.lower())
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    port, token = _free_port(), "vibench-test"
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--allow-root",
         f"--IdentityProvider.token={token}", "--ServerApp.password=", "--LabApp.expose_app_in_browser=True",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         f"--ServerApp.root_dir={root}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=root,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    output = server.stdout.read().decode(errors="replace") if server.poll() is not None else ""
                    pytest.fail(f"JupyterLab did not start: {output[-3000:]}")
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/lab/tree/workbench.ipynb?reset&token={token}", tmp_path
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.mark.slow
def test_workbench_runs_pauses_and_resumes_in_jupyterlab(lab):
    playwright = pytest.importorskip("playwright.sync_api")
    url, tmp_path = lab
    OUTPUT.mkdir(parents=True, exist_ok=True)
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM, args=args,
                                                       viewport={"width": 1400, "height": 1000})
        page = browser.new_page()
        try:
            page.goto(url)
            page.wait_for_selector(".jp-Notebook", timeout=120_000)
            page.wait_for_function(
                "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
                " return k && k.status === 'idle'; }", timeout=120_000)
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
            page.wait_for_selector(".vibench-workbench", timeout=180_000)

            step = page.locator(".vibench-workbench .vibench-step")
            trace = page.locator(".vibench-workbench .vibench-trace img, .vibench-workbench img.vibench-trace").first
            before_plot = trace.get_attribute("src")
            page.locator(".vibench-workbench button.jupyter-button", has_text="Run").click()

            def steps() -> int:
                return int(step.inner_text().strip() or 0)

            _wait(lambda: steps() > 0, 180, "the step counter to move after Run")
            _wait(lambda: trace.get_attribute("src") != before_plot, 60, "the ELBO plot to change")
            page.screenshot(path=str(OUTPUT / "workbench-running.png"))

            page.locator(".vibench-workbench button.jupyter-button", has_text="Pause").click()
            _wait(lambda: page.locator(".vibench-workbench button.jupyter-button", has_text="Resume").count() == 1, 60,
                  "the Pause button to read Resume")
            time.sleep(0.5)  # the last chunk's numbers reach the page
            frozen = steps()
            time.sleep(1.5)
            assert steps() == frozen, "the step counter moved while paused"

            page.locator(".vibench-workbench button.jupyter-button", has_text="Resume").click()
            _wait(lambda: steps() > frozen, 60, "the step counter to move again after Resume")
            page.screenshot(path=str(OUTPUT / "workbench.png"))
            page.locator(".vibench-workbench button.jupyter-button", has_text="Stop").click()
            _wait(lambda: "stopped" in page.locator(".vibench-workbench .vibench-status").inner_text(), 60,
                  "the status to say stopped")
        finally:
            browser.close()


def _wait(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
