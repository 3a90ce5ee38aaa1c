"""Sweep conventions on a real SQLite store: resumable parent runs, exactly-once children, safe filters.

The store itself (names, URIs, probes, experiments) is tested in ``tests/chemoscreen/test_store.py``.
"""

from __future__ import annotations

import pytest

from chemoscreen import store as chemoscreen_store
from mechanics.errors import InputError
from screening import tracking

# sweep ids as screening.ids.sweep_id writes them: 12 hex digits
SWEEP_A, SWEEP_B, SWEEP_C, ABSENT = "abc123abc123", "5ee000000001", "5ee000000002", "ffffffffffff"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating the schema takes seconds); tests use distinct ids."""
    directory = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    client = chemoscreen_store.open_store(uri)
    return uri, client, chemoscreen_store.ensure_experiment(client, "screening-test", uri)


def test_experiment_is_created_once_with_artifacts_beside_the_database(store):
    uri, client, experiment_id = store
    assert chemoscreen_store.ensure_experiment(client, "screening-test", uri) == experiment_id
    location = client.get_experiment(experiment_id).artifact_location
    assert location == (chemoscreen_store.sqlite_path(uri).parent / "mlartifacts").as_uri()


def test_parent_run_is_reopened_by_sweep_id(store):
    _, client, experiment_id = store
    first, resumed = tracking.open_parent_run(client, experiment_id, SWEEP_A, f"sweep-{SWEEP_A}",
                                              {"model_uri": "vegard"}, {"settings.grid_points": 16})
    assert not resumed
    client.set_terminated(first, "KILLED")
    again, resumed = tracking.open_parent_run(client, experiment_id, SWEEP_A, f"sweep-{SWEEP_A}",
                                              {"model_uri": "vegard"}, {"settings.grid_points": 16})
    assert (again, resumed) == (first, True)
    assert client.get_run(first).info.status == "RUNNING"
    assert tracking.find_sweep(client, experiment_id) == first
    assert tracking.find_sweep(client, experiment_id, SWEEP_A) == first
    with pytest.raises(InputError, match="--sweep-id"):
        tracking.find_sweep(client, experiment_id, ABSENT)


INJECTION = f"{SWEEP_A}' OR tags.sweep_id LIKE '%"


@pytest.mark.parametrize("sweep_id", ["nope", "abc123", INJECTION, SWEEP_A.upper()])
def test_a_sweep_id_that_is_not_one_never_reaches_the_filter(store, sweep_id):
    _, client, experiment_id = store
    with pytest.raises(InputError, match="--sweep-id") as info:
        tracking.find_sweep(client, experiment_id, sweep_id)
    assert "hex digits" in str(info.value)
    with pytest.raises(InputError, match="sweep_id"):
        tracking.open_parent_run(client, experiment_id, sweep_id, "sweep-x", {}, {})
    with pytest.raises(InputError, match="parent_run_id"):
        tracking.child_runs(client, experiment_id, "run' OR tags.x = '1")


def test_leftover_child_is_completed_in_place(store, tmp_path):
    _, client, experiment_id = store
    parent, _ = tracking.open_parent_run(client, experiment_id, SWEEP_B, f"sweep-{SWEEP_B}", {}, {})
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
    parent, _ = tracking.open_parent_run(client, experiment_id, SWEEP_C, f"sweep-{SWEEP_C}", {}, {})
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
    with pytest.raises(InputError, match="--model"):  # a quote cannot enter the registry filter
        tracking.resolve_model(client, "models:/law-test' OR name LIKE '%/latest")
    # a runs:/ URI must name a run of this store that holds the path; a plain path is no model URI
    for uri in ("runs:/abc/model", f"runs:/{'0' * 32}/model", f"runs:/{run.info.run_id}/model",
                "/tmp/model.pth", "model.pth", "models:/"):
        with pytest.raises(InputError, match="--model"):
            tracking.resolve_model(client, uri)
    client.log_text(run.info.run_id, "{}", "model/manifest.json")
    uri = f"runs:/{run.info.run_id}/model"
    assert tracking.resolve_model(client, uri) == uri


def _child(client, experiment_id, parent, candidate, status="FINISHED", **tags):
    run = client.create_run(experiment_id, tags={tracking.PARENT_TAG: parent, "candidate_id": candidate,
                                                 **tags})
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def test_two_parents_of_one_sweep_converge_on_the_oldest(store):
    """Two parents of one sweep id (two drivers created both): the next open keeps the oldest only."""
    _, client, experiment_id = store
    sweep = "5ee000000003"
    older, younger = (client.create_run(experiment_id, tags={"sweep_id": sweep}).info.run_id for _ in "ab")
    chosen, resumed = tracking.open_parent_run(client, experiment_id, sweep, "s", {}, {})
    assert (chosen, resumed) == (older, True)
    assert client.get_run(younger).info.lifecycle_stage == "deleted"
    assert client.get_run(younger).data.tags[tracking.DUPLICATE_TAG] == older
    assert tracking.find_sweep(client, experiment_id, sweep) == older


def test_a_parent_created_concurrently_is_deleted_for_the_oldest(store, monkeypatch):
    """open_parent_run's second search sees an older parent: it deletes the one it made."""
    _, client, experiment_id = store
    sweep = "5ee000000004"
    older = client.create_run(experiment_id, tags={"sweep_id": sweep}).info.run_id
    real_search = tracking.store.search_all_runs
    calls = []

    def first_search_misses_it(client_, experiment_id_, filter_string=""):
        calls.append(filter_string)
        found = real_search(client_, experiment_id_, filter_string)
        return [] if len(calls) == 1 else found  # the other driver's create lands after our first search

    monkeypatch.setattr(tracking.store, "search_all_runs", first_search_misses_it)
    chosen, resumed = tracking.open_parent_run(client, experiment_id, sweep, "s", {}, {})
    monkeypatch.undo()
    assert (chosen, resumed) == (older, True)
    active = chemoscreen_store.search_all_runs(client, experiment_id, tracking.sweep_filter(sweep))
    assert [r.info.run_id for r in active] == [older]


def test_settling_keeps_one_done_run_per_candidate_and_spares_unfinished_ones(store):
    _, client, experiment_id = store
    parent, _ = tracking.open_parent_run(client, experiment_id, "5ee000000005", "s", {}, {})
    done = sorted(_child(client, experiment_id, parent, "c1", artifacts="logged") for _ in range(3))
    lost = _child(client, experiment_id, parent, "c2", artifacts=tracking.ARTIFACTS_MISSING)
    ok2 = _child(client, experiment_id, parent, "c2", artifacts="logged")
    failed = _child(client, experiment_id, parent, "c3", status="FAILED")
    running = client.create_run(experiment_id, tags={tracking.PARENT_TAG: parent,
                                                     "candidate_id": "c3"}).info.run_id
    # two drivers settling one after the other agree, and nothing is deleted twice
    assert tracking.settle_duplicates(client, experiment_id, parent) == 2
    assert tracking.settle_duplicates(client, experiment_id, parent) == 0
    alive = {c.run_id for c in tracking.child_runs(client, experiment_id, parent)}
    assert alive == {done[0], lost, ok2, failed, running}
    for loser in done[1:]:
        assert client.get_run(loser).info.lifecycle_stage == "deleted"
        assert client.get_run(loser).data.tags[tracking.DUPLICATE_TAG] == done[0]
    chosen = tracking.latest_by_candidate(tracking.child_runs(client, experiment_id, parent))
    assert chosen["c1"].run_id == done[0] and chosen["c2"].run_id == ok2
    assert not chosen["c3"].done


def test_a_finished_run_whose_artifacts_were_lost_is_work_to_redo(store):
    _, client, experiment_id = store
    parent, _ = tracking.open_parent_run(client, experiment_id, "5ee000000006", "s", {}, {})
    lost = _child(client, experiment_id, parent, "c1", artifacts=tracking.ARTIFACTS_MISSING)
    legacy = _child(client, experiment_id, parent, "c2")  # written before the artifacts tag existed
    chosen = tracking.latest_by_candidate(tracking.child_runs(client, experiment_id, parent))
    assert chosen["c1"].run_id == lost and not chosen["c1"].done
    assert chosen["c2"].run_id == legacy and chosen["c2"].done


def test_children_under_a_parent_another_driver_deleted_are_moved_to_the_winner(store):
    """Driver A's create reached the store first but carries the later start time: A saw only its own
    parent and logged under it; driver B saw both, kept its older one and deleted A's. Converging moves
    A's children to B's parent and keeps one done run per candidate."""
    _, client, experiment_id = store
    sweep = "5ee000000007"
    parent_a = client.create_run(experiment_id, start_time=2_000, tags={"sweep_id": sweep}).info.run_id
    parent_b = client.create_run(experiment_id, start_time=1_000, tags={"sweep_id": sweep}).info.run_id
    a1 = _child(client, experiment_id, parent_a, "c1", artifacts="logged")
    a2 = _child(client, experiment_id, parent_a, "c2", artifacts="logged")
    b1 = _child(client, experiment_id, parent_b, "c1", artifacts="logged")
    assert tracking.open_parent_run(client, experiment_id, sweep, "s", {}, {}) == (parent_b, True)
    assert client.get_run(parent_a).info.lifecycle_stage == "deleted"
    a3 = _child(client, experiment_id, parent_a, "c3", artifacts="logged")  # A goes on logging under it
    assert tracking.converge_sweep(client, experiment_id, sweep) == parent_b
    chosen = tracking.latest_by_candidate(tracking.child_runs(client, experiment_id, parent_b))
    assert sorted(chosen) == ["c1", "c2", "c3"]
    assert chosen["c1"].run_id == min(a1, b1) and chosen["c2"].run_id == a2 and chosen["c3"].run_id == a3
    assert len(tracking.child_runs(client, experiment_id, parent_b)) == 3  # the other c1 run was deleted
    assert tracking.converge_sweep(client, experiment_id, sweep) == parent_b  # a second driver agrees
    assert len(tracking.child_runs(client, experiment_id, parent_b)) == 3


def test_runs_of_a_parent_a_user_deleted_are_not_adopted(store):
    _, client, experiment_id = store
    sweep = "5ee000000008"
    old = client.create_run(experiment_id, start_time=1_000, tags={"sweep_id": sweep}).info.run_id
    _child(client, experiment_id, old, "c1", artifacts="logged")
    client.delete_run(old)  # deleted in the UI to redo the sweep
    new, resumed = tracking.open_parent_run(client, experiment_id, sweep, "s", {}, {})
    assert not resumed and tracking.converge_sweep(client, experiment_id, sweep) == new
    assert tracking.child_runs(client, experiment_id, new) == []
