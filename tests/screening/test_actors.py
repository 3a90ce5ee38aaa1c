"""The actor's packaging of simulator results, on real (tiny) simulations without Ray."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import candidates
from mechanics.screen import ScreeningSettings, simulate_candidates
from screening.actors import MAX_SNAPSHOT_PIXELS, SimulatorActor, _thin, package_result

TINY = ScreeningSettings(grid_points=8, observations=2, snapshots=1, soc_step_max=0.05, composition_tol=0.1)


@pytest.fixture(scope="module")
def params():
    space = candidates.olivine_space(metals=("Fe", "Mn"), step=0.5)
    return [candidates.properties(c).params for c in space]


@pytest.fixture(scope="module")
def results(params):
    return simulate_candidates(params, TINY, None, "cpu")


def test_finished_result_keeps_metrics_and_fields(results):
    packed = package_result("c0", results[0], None, 0.5)
    assert packed.status == "FINISHED" and packed.reason == ""
    assert packed.metrics["peak_tensile_stress_MPa"] == results[0].metrics["peak_tensile_stress_MPa"]
    assert all(math.isfinite(v) for v in packed.metrics.values())
    assert packed.voltage_curve.shape[1] == 2
    assert packed.snapshots["composition"].shape == results[0].snapshots["composition"].shape


def test_user_metric_is_added_and_its_failure_fails_only_that_candidate(results):
    packed = package_result("c0", results[0], lambda r: {"n_curve_points": len(r.voltage_curve)}, 0.0)
    assert packed.metrics["n_curve_points"] == len(results[0].voltage_curve)

    def broken(result):
        raise ZeroDivisionError("user bug")

    failed = package_result("c1", results[1], broken, 0.0)
    assert failed.status == "FAILED" and "ZeroDivisionError: user bug" in failed.reason


def test_non_finite_ranking_metric_marks_failed(results):
    metrics = {**results[0].metrics, "peak_tensile_stress_MPa": math.nan}
    blown = dataclasses.replace(results[0], metrics=metrics)
    packed = package_result("c0", blown, None, 0.0)
    assert packed.status == "FAILED" and "peak_tensile_stress_MPa" in packed.reason


def test_simulator_failures_come_back_as_failed_candidates(params):
    actor = SimulatorActor(num_threads=1)
    out = actor.run_batch([("a", params[0]), ("b", params[1])], dataclasses.replace(TINY, max_steps=3))
    assert [r.candidate_id for r in out] == ["a", "b"]
    assert {r.status for r in out} == {"FAILED"}
    assert all("max_steps" in r.reason for r in out)


def test_snapshots_are_thinned_for_transport():
    field = np.arange(3 * 300 * 300, dtype=float).reshape(3, 300, 300)
    thin = _thin(field)
    assert thin.shape[0] == 3 and max(thin.shape[1:]) <= MAX_SNAPSHOT_PIXELS
    assert thin[0, 0, 0] == field[0, 0, 0]
