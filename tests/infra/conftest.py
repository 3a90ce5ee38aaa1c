"""Fixtures for the `cluster` tests: real servers on 127.0.0.1, started and stopped with infra_servers."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from infra_servers import (
    INFRA,
    LOOPBACK,
    Postgres,
    RayCluster,
    TrackingServer,
    base_env,
    free_port,
    http_status,
    postgres_bin_dir,
    start_group,
    stop_process_group,
    two_node_ray_cluster,
    wait_until,
)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL server on 127.0.0.1 with the databases `mlflow` and `mlflow_auth`."""
    pytest.importorskip("psycopg2", reason="psycopg2-binary is in the `cluster` extra")
    bin_dir = postgres_bin_dir()
    # PostgreSQL refuses to run as root: run it as `postgres` then, in a directory that user owns.
    as_root = os.geteuid() == 0
    run_as: list[str] = ["runuser", "-u", "postgres", "--"] if as_root else []
    root = Path(tempfile.mkdtemp(prefix="cs-pg-"))
    password = secrets.token_urlsafe(24)
    (root / "pwfile").write_text(password + "\n")
    if as_root:
        shutil.chown(root, "postgres")
        shutil.chown(root / "pwfile", "postgres")
    data, log = root / "data", root / "server.log"
    pg = Postgres(port=free_port(), user="chemoscreen", password=password)
    options = (f"-c listen_addresses={LOOPBACK} -p {pg.port} -k {root} "
               "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
    pg_ctl = [*run_as, str(bin_dir / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run([*run_as, str(bin_dir / "initdb"), "-D", str(data), "-U", pg.user,
                        f"--pwfile={root / 'pwfile'}", "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True, timeout=120)
        (root / "pwfile").unlink()
        subprocess.run([*pg_ctl, "-l", str(log), "-o", options, "-w", "-t", "60", "start"],
                       check=True, capture_output=True, timeout=90)
        with contextlib.closing(pg.connect("postgres")) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("CREATE DATABASE mlflow")
                cur.execute("CREATE DATABASE mlflow_auth")
        yield pg
    finally:
        if (data / "postmaster.pid").exists():
            stopped = subprocess.run([*pg_ctl, "-m", "fast", "-w", "-t", "30", "stop"], capture_output=True,
                                     timeout=60)
            if stopped.returncode != 0:
                subprocess.run([*pg_ctl, "-m", "immediate", "-w", "-t", "30", "stop"], capture_output=True,
                               timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def tracking_server(postgres: Postgres) -> Iterator[TrackingServer]:
    """infra/mlflow/start-server.sh on 127.0.0.1: basic auth, PostgreSQL store, artifacts in a temp dir."""
    root = Path(tempfile.mkdtemp(prefix="cs-mlflow-"))
    artifacts = root / "artifacts"
    artifacts.mkdir()
    port = free_port()
    marker_value = secrets.token_hex(8)
    server = TrackingServer(uri=f"http://{LOOPBACK}:{port}", username="admin",
                            password=secrets.token_urlsafe(18), port=port, artifacts_dir=artifacts,
                            postgres=postgres, log=root / "server.log")
    env = base_env(marker_value)
    env.update({
        "MLFLOW_BACKEND_STORE_URI": postgres.uri("mlflow"),
        "MLFLOW_AUTH_DATABASE_URI": postgres.uri("mlflow_auth"),
        "MLFLOW_AUTH_ADMIN_USERNAME": server.username,
        "MLFLOW_AUTH_ADMIN_PASSWORD": server.password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
        "MLFLOW_ARTIFACTS_DESTINATION": str(artifacts),
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "2",
        # The GenAI job runner starts seven Huey consumers; chemoscreen does not use it.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "TMPDIR": str(root),
    })
    proc = start_group(["sh", str(INFRA / "mlflow" / "start-server.sh")], env, server.log, cwd=root)
    try:
        wait_until(lambda: http_status(f"{server.uri}/health")[0] == 200, "MLflow tracking server",
                   proc=proc, log=server.log)
        yield server
    finally:
        stop_process_group(proc, marker_value)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def tracking_env(tracking_server: TrackingServer, monkeypatch: pytest.MonkeyPatch) -> TrackingServer:
    """Point this test process's MLflow client at the tracking server, as the admin user."""
    for name, value in tracking_server.client_env.items():
        monkeypatch.setenv(name, value)
    return tracking_server


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    """A fresh two-node cluster per test module (a module may stop its worker node)."""
    with two_node_ray_cluster() as cluster:
        yield cluster
