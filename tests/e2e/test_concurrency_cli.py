"""Two sweeps at once, a killed renderer, a killed driver's scratch files: through the installed CLI,
with real Ray and a real SQLite store (docs/guarantees.md)."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest
from ray_processes import busy_worker_of

from chemoscreen import store
from screening import tracking


def _runs(tmp_path: Path):
    client = store.open_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(store.SCREENING_EXPERIMENT)
    runs = store.search_all_runs(client, experiment.experiment_id)  # active runs only
    parents = [r for r in runs if tracking.PARENT_TAG not in r.data.tags]
    children = [r for r in runs if tracking.PARENT_TAG in r.data.tags]
    return client, parents, children


@pytest.mark.slow
def test_two_identical_sweeps_at_once_leave_one_finished_run_per_candidate(tmp_path, chemoscreen,
                                                                         chemoscreen_popen, small_sweep):
    """Before: 2 runs per candidate (330 for 165) and two parents. Now both exit 0 and converge."""
    args = ["sweep", *small_sweep, "--num-cpus", "1"]
    processes = [chemoscreen_popen(args, tmp_path) for _ in range(2)]  # a fresh store: the schema race too
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, out + err[-4000:]
    _, parents, children = _runs(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {c.data.tags[tracking.PARENT_TAG] for c in children} == {parents[0].info.run_id}
    finished = Counter(c.data.tags["candidate_id"] for c in children if c.info.status == "FINISHED")
    assert len(finished) == 10 and set(finished.values()) == {1}, finished
    with sqlite3.connect(f"file:{tmp_path / 'mlflow.db'}?mode=ro", uri=True) as conn:
        settled = conn.execute("SELECT count(*) FROM runs WHERE lifecycle_stage = 'deleted'").fetchone()[0]
    print(f"duplicate runs settled (deleted): {settled}")  # the work both drivers did twice
    # ranking, resume and rank see one row per candidate
    result = chemoscreen(["rank", "--out", "ranking.csv"], tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(tmp_path / "ranking.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 10 and len({r["candidate_id"] for r in rows}) == 10
    again = chemoscreen(args, tmp_path, timeout=300)
    assert again.returncode == 0 and "0 simulated, 10 already finished" in again.stdout, again.stdout


PNGS = {"composition.png", "stress.png", "voltage.png"}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds Ray's renderer process through /proc")
def test_killing_the_renderer_loses_no_plot_and_lost_plots_are_redone(tmp_path, chemoscreen,
                                                                     chemoscreen_popen, small_sweep):
    """Before: a killed renderer left 122 of 165 runs without PNGs, "0 failed", and resume skipped them."""
    args = ["sweep", *small_sweep, "--batch-size", "1"]
    process = chemoscreen_popen(args, tmp_path)
    killed = []
    deadline = time.monotonic() + 400
    try:
        while process.poll() is None and len(killed) < 2 and time.monotonic() < deadline:
            pid = busy_worker_of(process.pid, b"ray::Renderer.render")
            if pid is not None and pid not in killed:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.02)
        out, err = process.communicate(timeout=400)
    finally:
        if process.poll() is None:
            process.kill()
    assert killed, "no renderer was caught drawing; the test proved nothing"
    assert process.returncode == 0, out + err[-4000:]
    assert "0 failed" in out
    client, _, children = _runs(tmp_path)
    assert len(children) == 10
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags[tracking.ARTIFACTS_TAG] == "logged"
        assert {a.path for a in client.list_artifacts(child.info.run_id)} == PNGS

    # a FINISHED run whose PNGs are gone (as a renderer lost for good leaves it) is redone on resume
    lost = children[0]
    client.set_tag(lost.info.run_id, tracking.ARTIFACTS_TAG, tracking.ARTIFACTS_MISSING)
    again = chemoscreen(args, tmp_path, timeout=400)
    assert again.returncode == 0 and "1 simulated, 9 already finished" in again.stdout, again.stdout
    _, _, children = _runs(tmp_path)
    assert len(children) == 10 and {c.info.status for c in children} == {"FINISHED"}
    redone = client.get_run(lost.info.run_id)  # completed in place: still one run for the candidate
    assert redone.data.tags[tracking.ARTIFACTS_TAG] == "logged"
