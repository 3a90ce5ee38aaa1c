"""Failure paths through the command line: bad input fails fast with exit 2, a killed actor loses nothing."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections import Counter
from pathlib import Path

import pytest
from ray_processes import busy_worker_of, parent_pid

from chemoscreen import store
from screening import tracking


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--metals", "Fe,Xx"], "metals"),
        (["--step", "0.3"], "step"),
        (["--tracking-uri", "http://127.0.0.1:{port}"], "--tracking-uri"),
        (["--address", "127.0.0.1:{port}"], "--address"),
        (["--tracking-uri", "foo://host/x"], "--tracking-uri"),
        (["--step", "0.001"], "--step"),
    ],
    ids=["unknown-metal", "bad-step", "unreachable-tracking-server", "unreachable-ray", "unknown-scheme",
         "space-too-large"],
)
def test_bad_input_fails_fast_with_exit_2(tmp_path, chemoscreen, args, field):
    port = _closed_port()
    args = [a.format(port=port) for a in args]
    start = time.perf_counter()
    result = chemoscreen(["sweep", "--law", "vegard", "--step", "0.5", *args], tmp_path, timeout=120)
    elapsed = time.perf_counter() - start
    assert result.returncode == 2, result.stdout + result.stderr
    assert field in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr  # one line
    # nothing simulated and nothing logged: the store is not even created
    assert not (tmp_path / "mlflow.db").exists()
    assert "simulate" not in result.stderr
    # imports take a few seconds on a busy 2-core machine; a refused probe adds no wait
    assert elapsed < 60


def test_missing_model_explains_how_to_get_one(tmp_path, chemoscreen):
    result = chemoscreen(["sweep", "--step", "0.5"], tmp_path, timeout=120)
    assert result.returncode == 2
    for hint in ("--model", "chemoscreen calibrate", "--law vegard"):
        assert hint in result.stderr


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds Ray actor processes through /proc")
def test_killing_an_actor_mid_sweep_keeps_one_run_per_candidate(tmp_path, chemoscreen_popen, small_sweep):
    process = chemoscreen_popen(["sweep", *small_sweep, "--batch-size", "2"], tmp_path)
    killed = None
    deadline = time.monotonic() + 240
    try:
        while process.poll() is None and killed is None and time.monotonic() < deadline:
            pid = busy_worker_of(process.pid, b"ray::SimulatorActor.run_batch")
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed = pid
            time.sleep(0.05)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert killed is not None, "no actor was caught inside run_batch; the test proved nothing"
    assert process.returncode == 0, stdout + stderr
    client = store.open_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(store.SCREENING_EXPERIMENT)
    children = [r for r in store.search_all_runs(client, experiment.experiment_id)
                if tracking.PARENT_TAG in r.data.tags]
    counts = Counter(r.data.tags["candidate_id"] for r in children)
    assert len(counts) == 10 and set(counts.values()) == {1}
    assert {r.info.status for r in children} == {"FINISHED"}


def _descendants(root: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            pid = ancestor = int(entry.name)
            while ancestor > 1:
                ancestor = parent_pid(ancestor)
                if ancestor == root:
                    found.append(pid)
                    break
    return found


def _finished_children(db: Path) -> int:
    """FINISHED child runs in the store, read directly (the driver holds the store open)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            row = conn.execute(
                "SELECT count(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                "WHERE t.key = 'candidate_id' AND r.status = 'FINISHED'").fetchone()
            return int(row[0])
    except sqlite3.Error:
        return 0


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the driver's processes through /proc")
def test_killed_driver_is_recovered_by_rerunning_the_same_command(tmp_path, chemoscreen, chemoscreen_popen,
                                                                   small_sweep):
    args = ["sweep", *small_sweep, "--batch-size", "2"]
    process = chemoscreen_popen(args, tmp_path)
    deadline = time.monotonic() + 240
    while process.poll() is None and _finished_children(tmp_path / "mlflow.db") < 2:
        assert time.monotonic() < deadline, "the sweep logged nothing within 4 minutes"
        time.sleep(0.1)
    assert process.poll() is None, "the sweep ended before it could be killed"
    tree = _descendants(process.pid)
    process.kill()  # SIGKILL: no cleanup in the driver at all
    process.communicate(timeout=60)
    for pid in tree:  # the local Ray instance the driver had started
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    done_before = _finished_children(tmp_path / "mlflow.db")
    assert 2 <= done_before < 10

    result = chemoscreen(args, tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{10 - done_before} simulated, {done_before} already finished" in result.stdout
    client = store.open_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(store.SCREENING_EXPERIMENT)
    runs = store.search_all_runs(client, experiment.experiment_id)
    parents = [r for r in runs if tracking.PARENT_TAG not in r.data.tags]
    children = [r for r in runs if tracking.PARENT_TAG in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    counts = Counter(r.data.tags["candidate_id"] for r in children)
    assert len(counts) == 10 and set(counts.values()) == {1}
    assert {r.info.status for r in children} == {"FINISHED"}
