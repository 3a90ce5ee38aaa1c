"""A two-node Ray cluster on this host with token authentication: the job API stays on 127.0.0.1 and
refuses clients without the token, and `ray job submit --working-dir` runs a job across both nodes whose
runs land in the PostgreSQL-backed MLflow server."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from infra_servers import LOOPBACK, RayCluster, TrackingServer, listening_addresses

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]


def test_job_api_listens_on_loopback_and_requires_the_token(ray_cluster: RayCluster):
    assert listening_addresses(ray_cluster.dashboard_port) == {LOOPBACK}
    assert ray_cluster.rest("/api/jobs/")[0] == 200
    assert ray_cluster.rest("/api/jobs/", token="")[0] == 401
    assert ray_cluster.rest("/api/jobs/", token="0" * 64)[0] in (401, 403)


def test_clients_with_a_wrong_token_are_refused(ray_cluster: RayCluster, tmp_path: Path):
    (tmp_path / "hello.py").write_text("print('must not run')\n")
    jobs_before = ray_cluster.rest("/api/jobs/")[1]
    submitted = ray_cluster.cli("job", "submit", "--address", ray_cluster.dashboard_url,
                                "--working-dir", str(tmp_path), "--", "python", "hello.py",
                                token="f" * 64, timeout_s=120)
    assert submitted.returncode != 0
    assert "authentication" in (submitted.stdout + submitted.stderr).lower()
    status, body = ray_cluster.rest("/api/jobs/")
    assert status == 200 and json.loads(body) == json.loads(jobs_before)

    # The GCS itself (a gRPC port Ray binds on every interface) refuses a driver with a wrong token.
    env = {**ray_cluster.env, "RAY_AUTH_TOKEN": "f" * 64}
    env.pop("CHEMOSCREEN_TEST_SERVER")
    driver = subprocess.run(
        [sys.executable, "-c", f"import ray; ray.init(address='{ray_cluster.gcs_address}')"],
        env=env, capture_output=True, text=True, timeout=120)
    assert driver.returncode != 0
    assert "authentication" in (driver.stdout + driver.stderr).lower()


JOB = textwrap.dedent('''
    """Tasks spread over every node; the driver logs one MLflow run per task."""
    import sys
    import mlflow
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ray.init()  # RAY_ADDRESS, set by the job server, names this cluster
    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]

    @ray.remote(num_cpus=1)
    def where(index):
        return index, ray.get_runtime_context().get_node_id()

    pin = [NodeAffinitySchedulingStrategy(node, soft=False) for node in nodes]
    refs = [where.options(scheduling_strategy=pin[i % len(pin)]).remote(i) for i in range(int(sys.argv[2]))]
    mlflow.set_experiment(sys.argv[1])  # MLFLOW_TRACKING_* from the job's runtime environment
    for index, node in ray.get(refs):
        with mlflow.start_run(run_name=f"task-{index}"):
            mlflow.set_tags({"node_id": node, "task": str(index)})
    print("nodes", len(nodes))
''')


def test_submitted_job_uses_both_nodes_and_logs_to_the_tracking_server(ray_cluster: RayCluster,
                                                                       tracking_env: TrackingServer,
                                                                       tmp_path: Path):
    import mlflow

    tasks = 6
    experiment = f"infra-job-{uuid.uuid4().hex[:8]}"
    (tmp_path / "job.py").write_text(JOB)
    runtime_env = {"env_vars": {**tracking_env.client_env, "OMP_NUM_THREADS": "1"}}
    submitted = ray_cluster.cli("job", "submit", "--address", ray_cluster.dashboard_url,
                                "--working-dir", str(tmp_path), "--runtime-env-json", json.dumps(runtime_env),
                                "--", "python", "job.py", experiment, str(tasks))
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "nodes 2" in submitted.stdout

    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list")
    assert sorted(int(r.data.tags["task"]) for r in runs) == list(range(tasks))
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags["node_id"] for r in runs}) == 2
    stored = tracking_env.postgres.query(
        "mlflow", "SELECT count(*) FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
        "WHERE e.name = %s AND r.status = 'FINISHED'", (experiment,))
    assert stored == [(tasks,)]

