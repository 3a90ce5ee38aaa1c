"""Two identical `chemoscreen sweep` commands at once against the PostgreSQL-backed tracking server: one
parent run and exactly one FINISHED child run per candidate survive (docs/guarantees.md)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import Counter

import pytest
from infra_servers import REPO_ROOT, TrackingServer

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

SMALL = ["--metals", "Fe,Mn,Co", "--step", "0.5", "--law", "vegard", "--num-cpus", "1", "--grid-points", "16",
         "--observations", "4", "--snapshots", "2", "--soc-step-max", "0.05", "--composition-tol", "0.1"]


def test_two_sweeps_at_once_keep_one_finished_run_per_candidate(tracking_env: TrackingServer, tmp_path):
    import mlflow

    experiment = f"infra-concurrent-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(tracking_env.client_env, OMP_NUM_THREADS="1", MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "screening.cli", "sweep", *SMALL, "--experiment", experiment]
    processes = [subprocess.Popen(command, cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT) for _ in range(2)]
    outputs = [p.communicate(timeout=700)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n".join(o[-3000:] for o in outputs)

    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list", max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1
    finished = Counter(r.data.tags["candidate_id"] for r in children if r.info.status == "FINISHED")
    assert len(finished) == 6 and set(finished.values()) == {1}, finished  # C(2 + 3 - 1, 2) = 6
    deleted = tracking_env.postgres.query(
        "mlflow", "SELECT count(*) FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
                  "WHERE e.name = %s AND r.lifecycle_stage = 'deleted'", (experiment,))
    print(f"duplicates settled (deleted runs): {deleted[0][0]}")
