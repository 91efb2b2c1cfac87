"""A real browser: JupyterLab runs 02_wake.ipynb, then the explorer's Step N button is clicked.

Needs Debian's Chromium at /usr/bin/chromium (``make test`` tries to install it) and the
Python playwright package; nothing is installed at run time. The server binds 127.0.0.1 on
a free port, without a token, in a temporary folder, and is stopped in any case. The
screenshot goes to reports/screenshots/02_wake_browser.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "reports" / "screenshots" / "02_wake_browser.png"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

# the first explorer's figure: [last step plotted, points in the bits trace]
LIVE_TRACE = """() => {
  const plot = document.querySelector('.js-plotly-plot');
  if (!plot || !plot.data || !plot.data[0].x) return null;
  const x = plot.data[0].x;
  return [Number(x[x.length - 1]), x.length];
}"""


# the notebook's kernel as JupyterLab's own session sees it (window.jupyterapp is exposed
# by --LabApp.expose_app_in_browser)
KERNEL_CONNECTED = """() => {
  const kernel = window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel;
  return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], object], timeout: float, what: str,
               diagnose: Callable[[], str] = str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{diagnose()}")


def diagnosis(page: object, server_log: Path) -> str:
    """What the page and the server showed when a wait timed out: the cells' prompts, the
    kernel's status, the last outputs and the end of the server's log."""
    prompts = page.locator(".jp-InputPrompt").all_text_contents()
    kernel = page.evaluate("""() => {
      const kernel = window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel;
      return kernel ? [kernel.connectionStatus, kernel.status] : null;
    }""")
    outputs = page.locator(".jp-OutputArea-output").all_text_contents()
    return (f"\nprompts: {[p.strip() for p in prompts if p.strip()]}"
            f"\nkernel (connection, status): {kernel}"
            f"\nlast outputs: {[o[-300:] for o in outputs[-3:]]}"
            f"\nserver log:\n{server_log.read_text()[-3000:]}")


def api(base: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{base}{path}", method="GET" if body is None else "POST",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def start_kernel(base: str, notebook: str) -> None:
    """Open the notebook's session (and kernel) through the REST API, so that the page
    connects to it instead of racing to start a kernel of its own."""
    session = api(base, "/api/sessions", {"path": notebook, "name": notebook,
                                           "type": "notebook", "kernel": {"name": "python3"}})
    assert api(base, f"/api/kernels/{session['kernel']['id']}")["name"] == "python3"


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[str]:
    """A JupyterLab server on a free port over a folder holding a copy of 02_wake.ipynb."""
    pytest.importorskip("jupyterlab")
    shutil.copy(ROOT / "notebooks" / "02_wake.ipynb", tmp_path)
    settings = tmp_path / ".lab-settings"
    news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / ".lab-workspaces"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / ".runtime")}
    port = free_port()
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
               f"--port={port}", "--IdentityProvider.token=", "--ServerApp.password=",
               f"--ServerApp.root_dir={tmp_path}", "--ServerApp.disable_check_xsrf=True",
               "--LabApp.expose_app_in_browser=True"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if server.poll() is not None:
            raise AssertionError(f"JupyterLab exited: {(tmp_path / 'server.log').read_text()}")
        try:
            with urllib.request.urlopen(f"{base}/api/status", timeout=2):
                return True
        except OSError:
            return False

    try:
        wait_until(up, 90, "JupyterLab to start")
        start_kernel(base, "02_wake.ipynb")
        yield base
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the server and the kernels it started
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)
        log.close()


def test_step_n_in_a_real_browser_grows_the_live_figure(jupyterlab: str, tmp_path: Path) -> None:
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing (make test tries `apt-get install chromium`): "
                    "the real-browser test of the stream explorer did not run")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.set_default_timeout(90_000)
        try:
            page.goto(f"{jupyterlab}/lab/tree/02_wake.ipynb")
            page.wait_for_selector(".jp-Notebook")

            def choose_kernel() -> None:
                # JupyterLab may still ask which kernel to use while its session connects
                select = page.locator(".jp-Dialog button:has-text('Select')")
                if select.count():
                    select.first.click()

            def kernel_ready() -> bool:
                # the page's own connection to the kernel (the status bar may say Idle
                # while the websocket still connects, and Run All is then lost)
                choose_kernel()
                return page.evaluate(KERNEL_CONNECTED)

            def failed_cell() -> None:
                errors = page.locator(".jp-OutputArea-output[data-mime-type*='stderr']",
                                      has_text="Traceback (most recent call last)")
                assert errors.count() == 0, ("a cell of 02_wake.ipynb failed in the browser:\n"
                                             + errors.first.text_content()[-3000:])

            def executed() -> int:
                # cells the kernel has run: "[3]" prompts ("[*]" is only queued)
                prompts = page.locator(".jp-InputPrompt").all_text_contents()
                return sum(bool(re.search(r"\[\d+\]", prompt)) for prompt in prompts)

            def run_all() -> None:
                page.keyboard.press("Escape")
                page.click(".lm-MenuBar-itemLabel:text-is('Run')", timeout=10_000)
                page.click(".lm-Menu-itemLabel:text-is('Run All Cells')", timeout=10_000)

            clicked = [0.0]

            def explorer_shown() -> bool:
                # Run All is lost while the session still connects: click again whenever the
                # kernel sits idle with no cell run or queued (never while cells run)
                choose_kernel()
                failed_cell()
                if page.locator(".sharp-steps").count():
                    return True
                queued = page.locator(".jp-InputPrompt:has-text('[*]')").count()
                if (kernel_ready() and not queued and not executed()
                        and time.monotonic() - clicked[0] > 20):
                    run_all()
                    clicked[0] = time.monotonic()
                return False

            wait_until(kernel_ready, 120, "the notebook's kernel")
            wait_until(explorer_shown, 420, "the explorer of cell 8 (Run > Run All Cells)",
                       diagnose=lambda: diagnosis(page, tmp_path / "server.log"))

            def finished() -> bool:
                failed_cell()
                running = page.locator(".jp-InputPrompt:has-text('[*]')").count()
                return running == 0 and kernel_ready()

            wait_until(finished, 420, "Run All Cells to finish",
                       diagnose=lambda: diagnosis(page, tmp_path / "server.log"))
            readout = page.locator(".sharp-steps").first
            before_steps = int(readout.text_content().replace(",", ""))
            before = wait_until(lambda: page.evaluate(LIVE_TRACE), 60, "the live figure")
            assert before[0] == before_steps > 0, (before, before_steps)

            def grown() -> list[int] | None:
                trace = page.evaluate(LIVE_TRACE)
                return trace if trace and trace[0] > before[0] else None

            page.locator(".jupyter-widgets button:text-is('Step N')").first.click()
            after = wait_until(grown, 120, "the figure to grow after Step N")
            after_steps = int(readout.text_content().replace(",", ""))
            assert after[0] == after_steps == before_steps + 500, (before, after, after_steps)
            assert after[1] >= before[1]

            step_n = page.locator(".jupyter-widgets button:text-is('Step N')").first
            step_n.evaluate("button => button.scrollIntoView({block: 'start'})")
            page.mouse.wheel(0, -60)
            page.wait_for_timeout(1_000)
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
        except Exception:
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT.with_name("02_wake_browser-failure.png")))
            raise
        finally:
            browser.close()
