"""A real store, a real ``mlflow server`` and Debian's headless Chromium for the browser tests.

The store is made the way a user makes one: ``chemoscreen synth`` + ``chemoscreen calibrate`` (registers
``lfp-chemomech`` with alias ``champion``), then a small ``chemoscreen sweep`` with that model. The MLflow
server starts on a free loopback port while the sweep runs. Chromium is the system's (``apt-get install
chromium``), driven by Playwright through ``executable_path``: nothing is downloaded at run time, and a
missing browser fails these tests (they run only under ``-m browser``).

Screenshots go to ``$CHEMOSCREEN_BROWSER_ARTIFACTS`` when set (CI keeps them), else to a pytest temporary
folder; the path is printed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

# the smallest sweep that runs the whole protocol (tests/e2e/conftest.py SMALL_SETTINGS), on the four
# end members (4 candidates: enough for a Pareto front and an order, and the fixture stays near a minute)
SMALL_SETTINGS = ["--grid-points", "16", "--observations", "4", "--snapshots", "2", "--soc-step-max", "0.05",
                  "--composition-tol", "0.1"]
SWEEP = ["--metals", "Fe,Mn,Co,Ni", "--step", "1", "--num-cpus", "2", *SMALL_SETTINGS]
SERVER_START_S = 180.0
CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium_executable() -> str:
    """The system Chromium; fails (never skips) with how to install it."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("Chromium is missing: install Debian's package (`apt-get install -y chromium`); "
                "the browser tests drive it headless through Playwright", pytrace=False)


def _command(name: str) -> list[str]:
    script = Path(sys.executable).with_name(name)
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "screening.cli" if name == "chemoscreen" else name]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    return env


def _run(args: list[str], cwd: Path, timeout: float) -> str:
    done = subprocess.run([*_command("chemoscreen"), *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"chemoscreen {args[0]}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class UIStore:
    """The store the browser looks at and what the tests compare the pages with."""

    folder: Path
    tracking_uri: str
    ui_url: str
    experiment_id: str
    parent_run_id: str
    sweep_id: str
    ranking_url: str
    report_path: Path
    ranking: object  # pandas.DataFrame: the sweep's ranking as the driver wrote it


@pytest.fixture(scope="session")
def ui_store(tmp_path_factory) -> UIStore:
    from chemoscreen import store
    from screening import tracking
    from screening.present import ranking_url, sweep_view_key
    from screening.report import report_artifact
    from screening.results import rank_sweep

    folder = tmp_path_factory.mktemp("ui-store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    _run(["synth", "--out", "lfp.npz", "--size", "32", "--seed", "0", "--law", "bowed"], folder, 300)
    _run(["calibrate", "lfp.npz", "--out", "calibration", "--tracking-uri", uri, "--n-knots", "5",
          "--bootstrap", "4"], folder, 600)

    port = _free_port()
    log = open(folder / "server.log", "w")  # noqa: SIM115 (closed when the server has stopped)
    server = subprocess.Popen(
        [*_command("mlflow"), "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"], cwd=folder, env=_env(), stdout=subprocess.DEVNULL,
        stderr=log, start_new_session=True)
    try:
        printed = _run(["sweep", *SWEEP, "--tracking-uri", uri], folder, 900)
        ui_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                with urllib.request.urlopen(ui_url + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, (folder / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"mlflow server not up in {SERVER_START_S:g} s"
            time.sleep(1.0)

        client = store.open_store(uri)
        experiment_id = client.get_experiment_by_name(store.SCREENING_EXPERIMENT).experiment_id
        parent = tracking.find_sweep(client, experiment_id)
        sweep_id = client.get_run(parent).data.tags["sweep_id"]
        # the command printed its deep link for the default UI address; the test's server has another port
        key = sweep_view_key(sweep_id)
        assert re.search(rf"ranking in the MLflow UI: \S+viewStateShareKey={key}", printed)
        # the sweep logged its report with links to the default UI address; this one points at the server
        assert Path(report_artifact(client, parent)).is_file()
        _run(["report", "--tracking-uri", uri, "--ui-url", ui_url, "--out", "report.html"], folder, 300)
        yield UIStore(folder=folder, tracking_uri=uri, ui_url=ui_url, experiment_id=experiment_id,
                      parent_run_id=parent, sweep_id=sweep_id,
                      ranking_url=ranking_url(ui_url, experiment_id, parent, sweep_view_key(sweep_id)),
                      report_path=folder / "report.html",
                      ranking=rank_sweep(client, uri, experiment_id, parent, log_children=False))
    finally:
        if server.poll() is None:  # the server and its uvicorn workers: its own process group
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    chosen = os.environ.get("CHEMOSCREEN_BROWSER_ARTIFACTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"browser screenshots in {folder}")
    return folder


@pytest.fixture(scope="session")
def browser():
    executable = chromium_executable()
    try:
        from playwright.sync_api import sync_playwright
    except ModuleNotFoundError:
        pytest.fail("Playwright for Python is missing: pip install 'chemoscreen[dev]' (no browser download "
                    "needed: the tests use the system Chromium)", pytrace=False)
    with sync_playwright() as playwright:
        # --no-sandbox: CI containers run as root, where Chromium's own sandbox cannot start
        launched = playwright.chromium.launch(executable_path=executable, headless=True,
                                              args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    opened = context.new_page()
    opened.set_default_timeout(90_000)  # the UI's first load on a busy 2-core machine
    yield opened
    context.close()
