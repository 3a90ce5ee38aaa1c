"""The MLflow tracking server of infra/mlflow on a real PostgreSQL backend store, on 127.0.0.1: it binds
loopback only, refuses requests without credentials, keeps every run of many concurrent writers (one
experiment, no duplicates) and refuses artifact paths that leave its artifact root."""

from __future__ import annotations

import base64
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from infra_servers import LOOPBACK, TrackingServer, http_status, listening_addresses

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]


def _basic_auth(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_servers_listen_on_loopback_only(tracking_server: TrackingServer):
    assert listening_addresses(tracking_server.port) == {LOOPBACK}
    assert listening_addresses(tracking_server.postgres.port) == {LOOPBACK}


def test_requests_without_valid_credentials_are_refused(tracking_server: TrackingServer):
    url = f"{tracking_server.uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert http_status(url)[0] == 401
    assert http_status(url, _basic_auth(tracking_server.username, "wrong-password"))[0] == 401
    status, body = http_status(url, _basic_auth(tracking_server.username, tracking_server.password))
    assert status == 200, body


def test_runs_are_stored_in_postgresql(tracking_env: TrackingServer):
    import mlflow

    name = f"infra-store-{uuid.uuid4().hex[:8]}"
    mlflow.set_experiment(name)
    with mlflow.start_run() as run:
        mlflow.log_metric("peak_tensile_stress_MPa", 123.5)
        mlflow.log_text("hello", "notes/hello.txt")
    rows = tracking_env.postgres.query(
        "mlflow",
        "SELECT r.status, m.value FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
        "JOIN latest_metrics m ON m.run_uuid = r.run_uuid WHERE e.name = %s AND r.run_uuid = %s",
        (name, run.info.run_id))
    assert rows == [("FINISHED", 123.5)]
    # --serve-artifacts: the client uploads through the server, which writes below its artifact root.
    stored = list(tracking_env.artifacts_dir.rglob("hello.txt"))
    assert len(stored) == 1 and stored[0].read_text() == "hello"


WRITER = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    import mlflow
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException

    experiment, worker, writers, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    barrier = Path(sys.argv[5])

    def meet(stage):
        (barrier / f"{stage}-{worker}").touch()
        while len(list(barrier.glob(f"{stage}-*"))) < writers:
            time.sleep(0.005)

    client = mlflow.MlflowClient()
    meet("ready")
    # Get-or-create with every writer past the "get" before any "create": the race, made certain.
    found = client.get_experiment_by_name(experiment)
    meet("looked")
    outcome = "found"
    if found is None:
        try:
            client.create_experiment(experiment)
            outcome = "created"
        except MlflowException as exc:
            outcome = exc.error_code
    print("OUTCOME", outcome)
    experiment_id = mlflow.set_experiment(experiment).experiment_id
    for index in range(runs):
        run = client.create_run(experiment_id, run_name=f"w{worker}-r{index}")
        now = int(time.time() * 1000)
        client.log_batch(run.info.run_id,
                         metrics=[Metric("score", worker + index / 10, now, 0)],
                         params=[Param("worker", str(worker)), Param("index", str(index))],
                         tags=[RunTag("candidate_id", f"{worker}-{index}")])
        client.set_terminated(run.info.run_id, "FINISHED")
''')


def test_concurrent_writers_create_one_experiment_and_lose_no_run(tracking_env: TrackingServer,
                                                                  tmp_path: Path):
    import mlflow

    writers, runs_each = 8, 3
    experiment = f"infra-race-{uuid.uuid4().hex[:8]}"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [subprocess.Popen([sys.executable, str(script), experiment, str(w), str(writers), str(runs_each),
                               str(barrier)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for w in range(writers)]
    try:
        outputs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0] * writers, "\n".join(outputs)
    # Exactly one create succeeded; the server refused the others with the code clients recover from.
    outcomes = sorted(line.split()[1] for out in outputs for line in out.splitlines()
                      if line.startswith("OUTCOME"))
    assert outcomes == ["RESOURCE_ALREADY_EXISTS"] * (writers - 1) + ["created"]

    experiments = tracking_env.postgres.query(
        "mlflow", "SELECT experiment_id FROM experiments WHERE name = %s", (experiment,))
    assert len(experiments) == 1
    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list", max_results=1000)
    keys = sorted(run.data.tags["candidate_id"] for run in runs)
    assert keys == sorted(f"{w}-{i}" for w in range(writers) for i in range(runs_each))
    assert {run.info.status for run in runs} == {"FINISHED"}
    stored = tracking_env.postgres.query("mlflow", "SELECT count(*) FROM runs WHERE experiment_id = %s",
                                         (experiments[0][0],))
    assert stored == [(writers * runs_each,)]


@pytest.mark.parametrize("path", [
    "../escaped.txt",
    "%2e%2e/escaped.txt",
    "0/..%2f..%2fescaped.txt",
    "0/a/../../../escaped.txt",
    "%2Ftmp%2Fescaped.txt",
])
def test_artifact_paths_outside_the_artifact_root_are_refused(tracking_server: TrackingServer, path: str):
    root = tracking_server.artifacts_dir
    secret = root.parent / "outside.txt"
    secret.write_text("not for clients")
    before = set(root.parent.rglob("*"))
    auth = _basic_auth(tracking_server.username, tracking_server.password)
    base = f"{tracking_server.uri}/api/2.0/mlflow-artifacts/artifacts/"
    upload_status, _ = http_status(base + path, auth, method="PUT", data=b"payload")
    download_status, body = http_status(base + path.replace("escaped.txt", "outside.txt"), auth)
    assert upload_status == 400
    assert download_status in (400, 404) and b"not for clients" not in body
    assert set(root.parent.rglob("*")) == before
    assert not Path("/tmp/escaped.txt").exists()


def test_client_refuses_artifact_path_with_parent_segments(tracking_env: TrackingServer):
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_experiment(f"infra-paths-{uuid.uuid4().hex[:8]}")
    before = set(tracking_env.artifacts_dir.parent.rglob("*"))
    with mlflow.start_run(), pytest.raises(MlflowException, match=r"(?i)invalid"):
        mlflow.log_text("payload", "../../escaped.txt")
    escaped = [p for p in set(tracking_env.artifacts_dir.parent.rglob("*")) - before
               if tracking_env.artifacts_dir not in p.parents]
    assert escaped == []


def test_team_members_read_each_others_runs_but_write_only_their_own(tracking_env: TrackingServer,
                                                                     monkeypatch: pytest.MonkeyPatch):
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    admin = AuthServiceClient(tracking_env.uri)  # as the admin: tracking_env's credentials
    suffix = uuid.uuid4().hex[:8]
    users = {name: f"pw-{uuid.uuid4().hex}" for name in (f"alice-{suffix}", f"bob-{suffix}")}
    for name, password in users.items():
        admin.create_user(name, password)
    alice, bob = users

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", alice)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", users[alice])
    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment(f"infra-team-{suffix}")
    run_id = client.create_run(experiment_id).info.run_id
    client.log_metric(run_id, "score", 0.5)

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", bob)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", users[bob])
    assert client.get_run(run_id).data.metrics == {"score": 0.5}  # default permission: READ
    with pytest.raises(MlflowException, match="Permission denied"):
        client.log_metric(run_id, "score", 1.0)
    assert client.get_run(run_id).data.metrics == {"score": 0.5}
