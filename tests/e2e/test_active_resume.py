"""An active-learning sweep through the installed CLI, killed mid-sweep (SIGKILL, no cleanup) and run again
with the same command: it continues from the logged runs, simulates no finished candidate again, tags
every child with its iteration, and each iteration's batch is the one the strategy proposes from the
runs of the iterations before it (proposals reproducible from --proposal-seed)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from test_failures_cli import _descendants, _finished_children

import candidates
from chemoscreen import store
from screening import active, tracking
from screening.objectives import ObjectiveSpec
from screening.strategies import StrategySettings

SMALL_SETTINGS = ["--grid-points", "16", "--observations", "4", "--snapshots", "2", "--soc-step-max", "0.05",
                  "--composition-tol", "0.1"]
# 11 Fe/Mn compositions (all inside the 4.5 V window); 7 simulations in batches of 2: iterations 0-2 are
# the random initial design (2·2 + 1 = 5 points for 2 coordinates), iteration 3 is chosen by the GP
STRATEGY = StrategySettings("bayes", budget=7, proposal_batch=2, proposal_seed=3)
ARGS = ["sweep", "--metals", "Fe,Mn", "--step", "0.1", "--law", "vegard", "--num-cpus", "2",
        "--batch-size", "1", "--no-artifacts", *SMALL_SETTINGS, "--strategy", STRATEGY.strategy,
        "--budget", str(STRATEGY.budget),
        "--proposal-batch", str(STRATEGY.proposal_batch), "--proposal-seed", str(STRATEGY.proposal_seed)]


def _kill_tree(process) -> None:
    tree = _descendants(process.pid)
    process.kill()
    process.communicate(timeout=60)
    for pid in tree:  # the local Ray the driver had started
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the driver's processes through /proc")
def test_killed_active_sweep_resumes_without_duplicates(tmp_path, chemoscreen, chemoscreen_popen):
    process = chemoscreen_popen(ARGS, tmp_path)
    deadline = time.monotonic() + 240
    try:
        while process.poll() is None and _finished_children(tmp_path / "mlflow.db") < 3:
            assert time.monotonic() < deadline, "the sweep logged nothing within 4 minutes"
            time.sleep(0.1)
        assert process.poll() is None, "the sweep ended before it could be killed"
    finally:
        _kill_tree(process)
    done_before = _finished_children(tmp_path / "mlflow.db")
    assert 3 <= done_before < STRATEGY.budget

    result = chemoscreen(ARGS, tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{STRATEGY.budget - done_before} simulated, {done_before} already finished" in result.stdout

    client = store.open_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(store.SCREENING_EXPERIMENT)
    runs = store.search_all_runs(client, experiment.experiment_id)
    parents = [r for r in runs if tracking.PARENT_TAG not in r.data.tags]
    children = [r for r in runs if tracking.PARENT_TAG in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {r.info.status for r in children} == {"FINISHED"}
    counts = Counter(r.data.tags["composition_id"] for r in children)
    assert len(counts) == STRATEGY.budget and set(counts.values()) == {1}  # no candidate simulated twice
    assert Counter(r.data.tags[active.ITERATION_TAG] for r in children) == {"0": 2, "1": 2, "2": 2, "3": 1}

    # the trace: one point per iteration, none logged twice by the resumed driver, and its PNG
    parent = parents[0].info.run_id
    history = client.get_metric_history(parent, active.HYPERVOLUME_METRIC)
    steps = [m.step for m in history]
    assert sorted(steps) == [2, 4, 6, 7]
    values = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert all(b >= a for a, b in zip(values, values[1:]))  # adding points never shrinks the front
    assert [a.path for a in client.list_artifacts(parent, "active")] == [active.TRACE_ARTIFACT]

    # each iteration's batch is what the strategy proposes from the runs of the iterations before it
    pool = active.build_pool(candidates.olivine_space(("Fe", "Mn"), step=0.1), ObjectiveSpec())
    obs = active.read_observations(tracking.child_runs(client, experiment.experiment_id, parent), pool)
    for k in range(4):
        before = obs.before(k)
        values = np.array([obs.values[i] for i in before]).reshape(len(before), len(pool.simulated))
        scale = active.observed_scale(pool, obs) if k else None
        proposed = active.next_batch(STRATEGY, pool, before, values, scale, k,
                                     size=STRATEGY.budget - len(before))
        assert sorted(proposed) == sorted(i for i, it in obs.iteration.items() if it == k), k
