"""``screening.run_sweep`` on a local Ray and a SQLite store: user metrics, a failing candidate, resume."""

from __future__ import annotations

import pytest

import candidates
import screening
from mechanics.screen import ScreeningSettings
from screening import tracking

SETTINGS = ScreeningSettings(grid_points=8, observations=2, snapshots=1, soc_step_max=0.05,
                             composition_tol=0.1)


def curve_points(result):
    """A user metric; LiMnPO4 stands in for a candidate whose user analysis breaks."""
    if result.metrics["voltage_V"] > 3.9:  # only the Mn-rich end member plateaus this high
        raise RuntimeError("analysis not defined above 3.9 V")
    return {"curve_points": len(result.voltage_curve)}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('api') / 'mlflow.db'}"


def _sweep(store):
    space = candidates.olivine_space(metals=("Fe", "Mn"), step=0.5)
    return screening.run_sweep(space, law="vegard", settings=SETTINGS, metric_fn=curve_points,
                               tracking_uri=store, num_cpus=2, artifacts=False)


@pytest.fixture(scope="module")
def first(store):
    return _sweep(store).set_index("formula")


def test_failing_candidate_is_recorded_and_the_sweep_goes_on(first):
    table = first
    assert len(table) == 3
    assert table.loc["LiMnPO4", "status"] == "FAILED"
    assert "RuntimeError: analysis not defined above 3.9 V" in table.loc["LiMnPO4", "failure_reason"]
    finished = table[table["status"] == "FINISHED"]
    assert len(finished) == 2 and (finished["curve_points"] > 1).all()
    assert finished["pareto_rank"].notna().all() and table["pareto_rank"].isna().sum() == 1


@pytest.mark.slow
def test_rerun_retries_the_failed_candidate_in_its_own_run(store, first):
    again = _sweep(store).set_index("formula")
    assert again.loc["LiMnPO4", "run_id"] == first.loc["LiMnPO4", "run_id"]
    finished = first[first["status"] == "FINISHED"]
    assert (again.loc[finished.index, "run_id"] == finished["run_id"]).all()
    client = tracking.open_store(store)
    experiment = client.get_experiment_by_name(tracking.SCREENING_EXPERIMENT)
    runs = tracking.search_all_runs(client, experiment.experiment_id, f"tags.{tracking.PARENT_TAG} LIKE '%'")
    assert len(runs) == 3
    failed = client.get_run(first.loc["LiMnPO4", "run_id"])
    assert failed.info.status == "FAILED" and failed.data.tags["status"] == "FAILED"
