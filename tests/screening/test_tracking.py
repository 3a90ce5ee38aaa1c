"""MLflow conventions on a real SQLite store: experiments, resumable parent runs, exactly-once children."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from mechanics.errors import InputError
from screening import tracking


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating the schema takes seconds); tests use distinct ids."""
    directory = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    client = tracking.open_store(uri)
    return uri, client, tracking.ensure_experiment(client, "screening-test", uri)


def test_probe_rejects_unreachable_or_unusable_stores(tmp_path):
    start = time.perf_counter()
    with pytest.raises(InputError, match="--tracking-uri"):
        tracking.probe_tracking_uri(f"http://127.0.0.1:{_free_port()}", timeout_s=2.0)
    with pytest.raises(InputError, match="--tracking-uri"):
        tracking.probe_tracking_uri(f"postgresql://u@127.0.0.1:{_free_port()}/db", timeout_s=2.0)
    # a refused loopback connection answers at once; the bound is the probe timeout plus slack
    assert time.perf_counter() - start < 5.0
    with pytest.raises(InputError, match="existing directory"):
        tracking.probe_tracking_uri(f"sqlite:///{tmp_path / 'missing' / 'mlflow.db'}")
    with pytest.raises(InputError, match="file stores"):
        tracking.probe_tracking_uri(str(tmp_path / "mlruns"))
    # a new database file in an existing directory is fine
    tracking.probe_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_sqlite_paths_and_artifact_location(tmp_path):
    assert tracking.sqlite_path("sqlite:///mlflow.db") == Path("mlflow.db")
    assert tracking.sqlite_path(f"sqlite:///{tmp_path}/x.db") == tmp_path / "x.db"
    assert tracking.sqlite_path("http://host:5000") is None
    assert tracking.artifact_location(f"sqlite:///{tmp_path}/x.db") == (tmp_path / "mlartifacts").as_uri()
    assert tracking.artifact_location("http://host:5000") is None


def test_experiment_is_created_once_with_artifacts_beside_the_database(store):
    uri, client, experiment_id = store
    assert tracking.ensure_experiment(client, "screening-test", uri) == experiment_id
    location = client.get_experiment(experiment_id).artifact_location
    assert location == (tracking.sqlite_path(uri).parent / "mlartifacts").as_uri()


def test_parent_run_is_reopened_by_sweep_id(store):
    _, client, experiment_id = store
    first, resumed = tracking.open_parent_run(client, experiment_id, "abc123", "sweep-abc123",
                                              {"model_uri": "vegard"}, {"settings.grid_points": 16})
    assert not resumed
    client.set_terminated(first, "KILLED")
    again, resumed = tracking.open_parent_run(client, experiment_id, "abc123", "sweep-abc123",
                                              {"model_uri": "vegard"}, {"settings.grid_points": 16})
    assert (again, resumed) == (first, True)
    assert client.get_run(first).info.status == "RUNNING"
    assert tracking.find_sweep(client, experiment_id) == first
    assert tracking.find_sweep(client, experiment_id, "abc123") == first
    with pytest.raises(InputError, match="--sweep-id"):
        tracking.find_sweep(client, experiment_id, "nope")


def test_leftover_child_is_completed_in_place(store, tmp_path):
    _, client, experiment_id = store
    parent, _ = tracking.open_parent_run(client, experiment_id, "s1", "sweep-s1", {}, {})
    # a driver that died right after creating the child left it RUNNING without metrics
    leftover = client.create_run(experiment_id, run_name="LiFePO4",
                                 tags={tracking.PARENT_TAG: parent, "candidate_id": "c1"}).info.run_id
    children = tracking.latest_by_candidate(tracking.child_runs(client, experiment_id, parent))
    assert children["c1"].status == "RUNNING"
    (tmp_path / "art").mkdir()
    (tmp_path / "art" / "voltage.png").write_bytes(b"\x89PNG")
    run_id = tracking.log_child_run(
        client, experiment_id, parent, run_name="LiFePO4", reuse_run_id=children["c1"].run_id,
        tags={"candidate_id": "c1", "formula": "LiFePO4"}, params={"x_Fe": 1.0},
        metrics={"peak_tensile_stress_MPa": 120.0}, status="FINISHED", artifact_dir=str(tmp_path / "art"))
    assert run_id == leftover
    runs = tracking.child_runs(client, experiment_id, parent)
    assert len(runs) == 1
    (child,) = runs
    assert child.status == "FINISHED" and child.tags["status"] == "FINISHED"
    assert child.metrics["peak_tensile_stress_MPa"] == 120.0
    assert [a.path for a in client.list_artifacts(run_id)] == ["voltage.png"]


def test_failed_child_records_the_reason_and_finished_wins(store):
    _, client, experiment_id = store
    parent, _ = tracking.open_parent_run(client, experiment_id, "s2", "sweep-s2", {}, {})
    failed = tracking.log_child_run(client, experiment_id, parent, run_name="X", reuse_run_id=None,
                                    tags={"candidate_id": "c2", "failure_reason": "blow-up"}, params={},
                                    metrics={}, status="FAILED")
    assert client.get_run(failed).info.status == "FAILED"
    finished = tracking.log_child_run(client, experiment_id, parent, run_name="X", reuse_run_id=failed,
                                      tags={"candidate_id": "c2"}, params={}, metrics={"score": 1.0},
                                      status="FINISHED")
    assert finished == failed
    chosen = tracking.latest_by_candidate(tracking.child_runs(client, experiment_id, parent))
    assert chosen["c2"].status == "FINISHED"


def test_model_resolution_pins_one_version_and_explains_a_missing_model(store):
    _, client, experiment_id = store
    with pytest.raises(InputError) as info:
        tracking.resolve_model(client, "models:/lfp-chemomech@champion")
    message = str(info.value)
    assert "--model" in message and "calibrate" in message and "--law vegard" in message
    run = client.create_run(experiment_id)
    client.create_registered_model("law-test")
    for _ in range(2):
        client.create_model_version("law-test", f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias("law-test", "champion", "1")
    assert tracking.resolve_model(client, "models:/law-test@champion") == "models:/law-test/1"
    assert tracking.resolve_model(client, "models:/law-test/latest") == "models:/law-test/2"
    assert tracking.resolve_model(client, "models:/law-test/2") == "models:/law-test/2"
    with pytest.raises(InputError, match="--model"):
        tracking.resolve_model(client, "models:/law-test/7")
    assert tracking.resolve_model(client, "runs:/abc/model") == "runs:/abc/model"
