"""`chemoscreen sweep` submitted with `ray job submit --working-dir` to a two-node cluster: the second node
is killed while it is simulating (SIGKILL to all of its processes, as when a machine is lost), and the
sweep still ends with exactly one FINISHED run per candidate in the PostgreSQL-backed tracking server."""

from __future__ import annotations

import json
import signal
import time
import urllib.parse
import uuid

import pytest
from infra_servers import REPO_ROOT, RayCluster, TrackingServer, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

METALS, STEP = ("Fe", "Mn"), 0.25
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def _running_tasks(cluster: RayCluster) -> list[dict]:
    query = urllib.parse.urlencode({"detail": "1", "limit": "1000", "filter_keys": "state",
                                    "filter_predicates": "=", "filter_values": "RUNNING"})
    status, body = cluster.rest(f"/api/v0/tasks?{query}")
    return json.loads(body)["data"]["result"]["result"] if status == 200 else []


def _job(cluster: RayCluster, submission_id: str) -> dict:
    status, body = cluster.rest(f"/api/jobs/{submission_id}")
    assert status == 200, body
    return json.loads(body)


def _job_logs(cluster: RayCluster, submission_id: str) -> str:
    status, body = cluster.rest(f"/api/jobs/{submission_id}/logs")
    return json.loads(body).get("logs", "")[-6000:] if status == 200 else body.decode(errors="replace")


def test_sweep_keeps_one_finished_run_per_candidate_when_a_node_dies(ray_cluster: RayCluster,
                                                                      tracking_env: TrackingServer):
    import mlflow

    import candidates

    space = candidates.olivine_space(metals=METALS, step=STEP)
    experiment = submission_id = f"infra-sweep-{uuid.uuid4().hex[:8]}"
    worker_node = next(n["raylet"]["nodeId"] for n in ray_cluster.alive_nodes()
                       if not n["raylet"]["isHeadNode"])
    runtime_env = {"env_vars": {**tracking_env.client_env, "OMP_NUM_THREADS": "1"}}
    # One candidate per actor call, so that the second node is still busy when it is stopped.
    submitted = ray_cluster.cli(
        "job", "submit", "--address", ray_cluster.dashboard_url, "--working-dir", str(REPO_ROOT),
        "--runtime-env-json", json.dumps(runtime_env), "--submission-id", submission_id, "--no-wait", "--",
        "chemoscreen", "sweep", "--law", "vegard", "--metals", ",".join(METALS), "--step", str(STEP),
        "--tracking-uri", tracking_env.uri, "--experiment", experiment, "--batch-size", "1",
        "--no-artifacts")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr

    # Kill the second node as soon as it is running a batch of the sweep.
    deadline = time.monotonic() + 300
    while not any(t["node_id"] == worker_node and t["name"].endswith("run_batch")
                  for t in _running_tasks(ray_cluster)):
        job = _job(ray_cluster, submission_id)
        assert job["status"] not in TERMINAL, (
            f"the sweep ended ({job['status']}) before the second node ran a batch\n"
            + _job_logs(ray_cluster, submission_id))
        assert time.monotonic() < deadline, "the second node never ran a batch"
        time.sleep(0.2)
    ray_cluster.worker.stop(signal.SIGKILL)
    wait_until(lambda: len(ray_cluster.alive_nodes()) == 1, "the cluster to drop the dead node", 120)

    deadline = time.monotonic() + 420
    while (job := _job(ray_cluster, submission_id))["status"] not in TERMINAL:
        assert time.monotonic() < deadline, (
            "the sweep did not finish after the node died\n" + _job_logs(ray_cluster, submission_id))
        time.sleep(1)
    assert job["status"] == "SUCCEEDED", _job_logs(ray_cluster, submission_id)

    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list", max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.data.tags["formula"] for r in children) == sorted(c.formula for c in space)
    assert len({r.data.tags["candidate_id"] for r in children}) == len(space)
    assert {r.info.status for r in children} == {"FINISHED"}
    stored = tracking_env.postgres.query(
        "mlflow", "SELECT r.status, count(*) FROM runs r JOIN experiments e "
        "ON e.experiment_id = r.experiment_id WHERE e.name = %s GROUP BY r.status", (experiment,))
    assert stored == [("FINISHED", len(space) + 1)]
