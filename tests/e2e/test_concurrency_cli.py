"""Two sweeps at once, a killed renderer, a killed driver's scratch files: through the installed CLI,
with real Ray and a real SQLite store (docs/guarantees.md)."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

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
    # ranking, resume and rank see one row per candidate
    result = chemoscreen(["rank", "--out", "ranking.csv"], tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(tmp_path / "ranking.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 10 and len({r["candidate_id"] for r in rows}) == 10
    again = chemoscreen(args, tmp_path, timeout=300)
    assert again.returncode == 0 and "0 simulated, 10 already finished" in again.stdout, again.stdout
