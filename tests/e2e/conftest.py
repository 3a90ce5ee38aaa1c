"""Helpers for end-to-end runs of the ``chemoscreen`` command in a temporary working directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# the smallest simulation that still runs the whole protocol: 16² cells, a few observations, coarse
# adaptive steps (about 110 steps per candidate instead of about 1000)
SMALL_SETTINGS = ["--grid-points", "16", "--observations", "4", "--snapshots", "2", "--soc-step-max", "0.05",
                  "--composition-tol", "0.1"]
SMALL_SWEEP = ["--metals", "Fe,Mn,Co,Ni", "--step", "0.5", "--law", "vegard", "--num-cpus", "2",
               *SMALL_SETTINGS]


def chemoscreen_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m screening.cli``."""
    script = Path(sys.executable).with_name("chemoscreen")
    if script.exists():
        return [str(script)]
    found = shutil.which("chemoscreen")
    return [found] if found else [sys.executable, "-m", "screening.cli"]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    return env


def run_cli(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*chemoscreen_command(), *args], cwd=cwd, env=clean_env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def chemoscreen():
    """``chemoscreen(args, cwd)`` runs the command line in a subprocess and returns the CompletedProcess."""
    return run_cli


@pytest.fixture(scope="session")
def small_sweep() -> list[str]:
    """Arguments of a small sweep: 10 candidates on a 16² grid with Vegard's law, local Ray on 2 CPUs."""
    return list(SMALL_SWEEP)


@pytest.fixture(scope="session")
def chemoscreen_popen():
    """``chemoscreen_popen(args, cwd)`` starts the command line without waiting (pipes for output)."""

    def start(args: list[str], cwd: Path) -> subprocess.Popen:
        return subprocess.Popen([*chemoscreen_command(), *args], cwd=cwd, env=clean_env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    return start


@pytest.fixture(scope="session")
def e2e_env() -> dict[str, str]:
    """The environment of end-to-end subprocesses: no inherited Ray or MLflow target, one thread each."""
    return clean_env()
