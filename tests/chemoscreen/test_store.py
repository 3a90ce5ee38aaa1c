"""chemoscreen.store on a real SQLite store: names, URIs, probes, experiments and safe filter values."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from chemoscreen import store
from mechanics.errors import InputError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_names_of_architecture_4_4():
    assert (store.CALIBRATION_EXPERIMENT, store.SCREENING_EXPERIMENT) == (
        "chemoscreen-calibration", "chemoscreen-screening")
    assert store.DEFAULT_MODEL_URI == "models:/lfp-chemomech@champion"
    assert store.DEFAULT_TRACKING_URI == "sqlite:///mlflow.db"


def test_tracking_uri_resolution_and_absolute_sqlite_paths(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert store.resolve_tracking_uri() == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert store.resolve_tracking_uri() == "http://mlflow.example:5000"
    assert store.resolve_tracking_uri("sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.chdir(tmp_path)
    assert store.absolute_tracking_uri("sqlite:///rel.db") == f"sqlite:///{tmp_path.resolve() / 'rel.db'}"
    assert store.absolute_tracking_uri(f"sqlite:///{tmp_path}/a.db") == f"sqlite:///{tmp_path}/a.db"
    assert store.absolute_tracking_uri("http://host:5000") == "http://host:5000"


def test_probe_rejects_unreachable_or_unusable_stores(tmp_path):
    start = time.perf_counter()
    with pytest.raises(InputError, match="--tracking-uri"):
        store.probe_tracking_uri(f"http://127.0.0.1:{_free_port()}", timeout_s=2.0)
    with pytest.raises(InputError, match="--tracking-uri"):
        store.probe_tracking_uri(f"postgresql://u@127.0.0.1:{_free_port()}/db", timeout_s=2.0)
    # a refused loopback connection answers at once; the bound is the probe timeout plus slack
    assert time.perf_counter() - start < 5.0
    with pytest.raises(InputError, match="existing directory"):
        store.probe_tracking_uri(f"sqlite:///{tmp_path / 'missing' / 'mlflow.db'}")
    with pytest.raises(InputError, match="file stores"):
        store.probe_tracking_uri(str(tmp_path / "mlruns"))
    # a new database file in an existing directory is fine, and probing creates nothing
    store.probe_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert not (tmp_path / "mlflow.db").exists()


def test_sqlite_paths_and_artifact_location(tmp_path):
    assert store.sqlite_path("sqlite:///mlflow.db") == Path("mlflow.db")
    assert store.sqlite_path(f"sqlite:///{tmp_path}/x.db") == tmp_path / "x.db"
    assert store.sqlite_path("http://host:5000") is None
    assert store.artifact_location(f"sqlite:///{tmp_path}/x.db") == (tmp_path / "mlartifacts").as_uri()
    assert store.artifact_location("http://host:5000") is None


def test_experiment_is_created_once_with_artifacts_beside_the_database(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = store.open_store(uri)
    experiment_id = store.ensure_experiment(client, "store-test", uri)
    assert store.ensure_experiment(client, "store-test", uri) == experiment_id
    assert client.get_experiment(experiment_id).artifact_location == (tmp_path / "mlartifacts").as_uri()
    for i in range(3):
        client.create_run(experiment_id, tags={"k": f"v{i}"})
    assert len(store.search_all_runs(client, experiment_id)) == 3
    assert len(store.search_all_runs(client, experiment_id, f"tags.k = {store.filter_value('v1', 'k')}")) == 1
    client.delete_experiment(experiment_id)
    with pytest.raises(InputError, match="--experiment"):
        store.ensure_experiment(client, "store-test", uri)


def test_experiments_open_as_model_training_in_the_ui(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = store.open_store(uri)
    created = store.ensure_experiment(client, "kind-new", uri)
    assert client.get_experiment(created).tags[store.EXPERIMENT_KIND_TAG] == "custom_model_development"
    # one an older chemoscreen made without the tag gets it; a kind set on purpose stays
    old = client.create_experiment("kind-old")
    assert store.EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    assert store.ensure_experiment(client, "kind-old", uri) == old
    assert client.get_experiment(old).tags[store.EXPERIMENT_KIND_TAG] == "custom_model_development"
    chosen = client.create_experiment("kind-chosen", tags={store.EXPERIMENT_KIND_TAG: "genai_development"})
    store.ensure_experiment(client, "kind-chosen", uri)
    assert client.get_experiment(chosen).tags[store.EXPERIMENT_KIND_TAG] == "genai_development"


@pytest.mark.parametrize("value", ["a'b", "x' OR tags.k != '", "back\\slash", "new\nline"])
def test_filter_values_that_a_literal_cannot_carry_are_refused(value):
    with pytest.raises(InputError, match="--model"):
        store.filter_value(value, "--model")


def test_filter_value_quotes_plain_values():
    assert store.filter_value("lfp-chemomech", "--model") == "'lfp-chemomech'"
    assert store.filter_value(3, "n") == "'3'"


@pytest.mark.parametrize("value", ["0123456789ab ", "0123456789AB", "0123456789a", "0123456789abc",
                                   "'; DROP", None, 123456789012])
def test_hex_ids_are_checked(value):
    with pytest.raises(InputError, match="--sweep-id"):
        store.hex_id(value, "--sweep-id", store.SWEEP_ID_DIGITS)


def test_hex_id_accepts_the_ids_the_project_writes():
    from screening.ids import candidate_id, sweep_id

    cid = candidate_id({"Fe": 1.0}, {"grid_points": 16}, "vegard")
    assert store.hex_id(cid, "candidate_id", store.CANDIDATE_ID_DIGITS) == cid
    sid = sweep_id([cid], {"grid_points": 16}, "vegard")
    assert store.hex_id(sid, "--sweep-id", store.SWEEP_ID_DIGITS) == sid
