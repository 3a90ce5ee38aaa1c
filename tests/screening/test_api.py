"""``screening.sweep`` / ``screening.run_sweep`` on a local Ray and a SQLite store: options checked and the
store and Ray probed before any work, user metrics, a failing candidate, the child-run tags, resume."""

from __future__ import annotations

import math
import socket

import pytest

import candidates
import screening
from chemoscreen import store
from mechanics.errors import InputError
from screening import tracking

SETTINGS = screening.ScreeningSettings(grid_points=8, observations=2, snapshots=1, soc_step_max=0.05,
                                       composition_tol=0.1)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"refine": -1}, "--refine"), ({"refine": 1.5}, "--refine"), ({"num_cpus": 0}, "--num-cpus"),
        ({"num_cpus": True}, "--num-cpus"), ({"actors": 0}, "--actors"), ({"batch_size": -3}, "--batch-size"),
        ({"gpus_per_actor": 0}, "--gpus-per-actor"), ({"gpus_per_actor": math.nan}, "--gpus-per-actor"),
        ({"experiment": " "}, "--experiment"), ({"tracking_uri": ""}, "--tracking-uri"),
        ({"address": 6379}, "--address"), ({"artifacts": "no"}, "--no-artifacts"),
        ({"cpus_per_actor": 0}, "cpus_per_actor"), ({"max_retries": -1}, "max_retries"),
        ({"simulator": "mechanics.screen"}, "simulator"),
    ],
)
def test_sweep_options_are_checked_when_built(kwargs, field):
    with pytest.raises(InputError) as info:
        screening.SweepOptions(**kwargs)
    assert info.value.field == field


def test_the_package_exports_the_one_sweep_path_and_its_settings():
    import mechanics.screen
    import screening.api
    import screening.driver

    # the driver module is imported by now, and screening.sweep is still the function
    assert screening.sweep is screening.api.sweep and callable(screening.sweep)
    assert screening.SweepOptions is screening.driver.SweepOptions
    assert screening.ScreeningSettings is mechanics.screen.ScreeningSettings


def test_the_defaults_are_valid_options():
    options = screening.SweepOptions()
    assert options.experiment == store.SCREENING_EXPERIMENT and options.refine == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"options": {"address": "127.0.0.1:{port}"}}, "--address"),
        ({"options": {"tracking_uri": "sqlite:///{tmp}/missing/mlflow.db"}}, "--tracking-uri"),
        ({"options": {"tracking_uri": "http://127.0.0.1:{port}"}}, "--tracking-uri"),
        ({"law": 42}, "law"),
        ({"source": "dft"}, "--source"),
        ({"space": []}, "space"),
    ],
    ids=["unreachable-ray", "missing-store-folder", "unreachable-server", "bad-law", "bad-source", "empty"],
)
def test_bad_input_is_refused_before_the_store_is_created(tmp_path, change, field):
    port = _closed_port()
    options = {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}
    options.update({k: v.format(port=port, tmp=tmp_path) for k, v in change.get("options", {}).items()})
    space = change.get("space", candidates.olivine_space(metals=("Fe", "Mn"), step=0.5))
    with pytest.raises(InputError) as info:
        screening.sweep(space, change.get("law", "vegard"), SETTINGS,
                        source=change.get("source", "literature"), options=screening.SweepOptions(**options))
    assert info.value.field == field
    assert list(tmp_path.iterdir()) == []  # no store, no artifacts


def curve_points(result):
    """A user metric; LiMnPO4 stands in for a candidate whose user analysis breaks."""
    if result.metrics["voltage_V"] > 3.9:  # only the Mn-rich end member plateaus this high
        raise RuntimeError("analysis not defined above 3.9 V")
    return {"curve_points": len(result.voltage_curve)}


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('api') / 'mlflow.db'}"


def _sweep(store_uri):
    space = candidates.olivine_space(metals=("Fe", "Mn"), step=0.5)
    return screening.run_sweep(space, law="vegard", settings=SETTINGS, metric_fn=curve_points,
                               tracking_uri=store_uri, num_cpus=2, artifacts=False)


@pytest.fixture(scope="module")
def first(store_uri):
    return _sweep(store_uri).set_index("formula")


def test_failing_candidate_is_recorded_and_the_sweep_goes_on(first):
    table = first
    assert len(table) == 3
    assert table.loc["LiMnPO4", "status"] == "FAILED"
    assert "RuntimeError: analysis not defined above 3.9 V" in table.loc["LiMnPO4", "failure_reason"]
    finished = table[table["status"] == "FINISHED"]
    assert len(finished) == 2 and (finished["curve_points"] > 1).all()
    assert finished["pareto_rank"].notna().all() and table["pareto_rank"].isna().sum() == 1


def test_child_runs_carry_the_composition_id_apart_from_the_simulation_key(store_uri, first):
    client = store.open_store(store_uri)
    for formula, row in first.iterrows():
        run = client.get_run(row["run_id"])
        fractions = {key[2:]: float(value) for key, value in run.data.params.items() if key.startswith("x_")}
        assert run.data.tags["composition_id"] == candidates.composition_id(fractions), formula
        assert run.data.params["composition_id"] == run.data.tags["composition_id"]
        assert run.data.tags["candidate_id"] == row["candidate_id"] != run.data.tags["composition_id"]
        assert "candidate_label" not in run.data.tags and "candidate_label" not in run.data.params


@pytest.mark.slow
def test_rerun_retries_the_failed_candidate_in_its_own_run(store_uri, first):
    again = _sweep(store_uri).set_index("formula")
    assert again.loc["LiMnPO4", "run_id"] == first.loc["LiMnPO4", "run_id"]
    finished = first[first["status"] == "FINISHED"]
    assert (again.loc[finished.index, "run_id"] == finished["run_id"]).all()
    client = store.open_store(store_uri)
    experiment = client.get_experiment_by_name(store.SCREENING_EXPERIMENT)
    runs = store.search_all_runs(client, experiment.experiment_id, f"tags.{tracking.PARENT_TAG} LIKE '%'")
    assert len(runs) == 3
    failed = client.get_run(first.loc["LiMnPO4", "run_id"])
    assert failed.info.status == "FAILED" and failed.data.tags["status"] == "FAILED"
