"""The active-learning loop's pieces: the pool's closed-form objectives against the sweep's own values,
the voltage window, observations read back from child runs, the hypervolume trace, reproducible
proposals, and bad command-line input."""

from __future__ import annotations

import numpy as np
import pytest

import candidates
from candidates.cost import static_objectives
from screening import active
from screening.api import descriptors_of
from screening.objectives import ObjectiveSpec
from screening.strategies import StrategySettings
from screening.tracking import ChildRun


def test_exact_descriptors_equal_the_descriptors_the_sweep_logs():
    # the same mixing functions without the coherency analysis: equal to rounding
    space = candidates.explicit_space([{"Fe": 1.0}, {"Fe": 0.35, "Mn": 0.4, "Co": 0.15, "Ni": 0.1},
                                       {"Mn": 0.9, "Mg": 0.1}])
    for candidate in space:
        logged = descriptors_of(candidates.properties(candidate))
        cheap = active.exact_descriptors(candidate)
        for name, value in cheap.items():
            assert value == pytest.approx(logged[name], rel=1e-12), (candidate.formula, name)


def test_the_pool_holds_the_compositions_inside_the_voltage_window_with_their_exact_objectives():
    spec = ObjectiveSpec()
    space = candidates.olivine_space(("Fe", "Mn", "Co", "Ni"), step=0.25)
    pool = active.build_pool(space, spec)
    kept = {c.id for c in pool.candidates}
    for candidate in space:
        usable = static_objectives(candidate.fractions, spec.max_voltage_V).usable_fraction
        assert (candidate.id in kept) == (usable >= 0.5 - 1e-9), candidate.formula
    assert pool.simulated == ("peak_tensile_stress_MPa",)
    assert pool.exact_names == ("usable_specific_energy_Wh_kg", "abs_volume_change_pct", "cost_USD_per_kWh",
                                "supply_risk_hhi")
    lfp = pool.ids[candidates.composition_id({"Fe": 1.0})]
    static = static_objectives({"Fe": 1.0}, spec.max_voltage_V)
    assert pool.exact[lfp, 0] == pytest.approx(static.usable_specific_energy_Wh_kg)
    assert pool.exact[lfp, 2] == pytest.approx(-static.cost_USD_per_kWh)  # oriented: lower cost is better
    assert pool.coordinates.shape == (len(pool.candidates), 4)
    np.testing.assert_allclose(pool.coordinates.sum(axis=1), 1.0)
    with pytest.raises(Exception, match="--max-voltage"):
        active.build_pool(candidates.olivine_space(("Co", "Ni"), step=0.5), spec)


def _child(pool, index, iteration, stress=None, status="FINISHED"):
    metrics = {} if stress is None else {"peak_tensile_stress_MPa": stress}
    tags = {"composition_id": pool.candidates[index].id, active.ITERATION_TAG: str(iteration),
            "artifacts": "off"}
    return ChildRun(f"run{index:04d}", f"cand{index}", status, metrics, tags)


def test_observations_and_the_hypervolume_trace_from_child_runs():
    pool = active.build_pool(candidates.olivine_space(("Fe", "Mn"), step=0.1), ObjectiveSpec())
    children = [_child(pool, 0, 0, 900.0), _child(pool, 5, 0, 1200.0), _child(pool, 10, 1, 800.0),
                _child(pool, 3, 1, status="FAILED"), _child(pool, 7, 2, 1000.0, status="RUNNING")]
    obs = active.read_observations(children, pool)
    assert obs.before(1) == [0, 5] and obs.before(2) == [0, 5, 3, 10] and obs.count() == 5
    assert obs.values[0][0] == -900.0 and np.isnan(obs.values[3]).all()  # stress oriented; failed is NaN
    # a FAILED run counts against the budget but is not done: a rerun retries it, as in a plain sweep
    assert obs.done == {0, 5, 10}
    scale = active.observed_scale(pool, obs)
    assert scale.low[0] == -1200.0 and scale.span[0] == 300.0  # iteration 0's range
    trace = active.trace(pool, obs, scale, skip=set())
    assert [step for step, _ in trace] == [2, 4, 5]
    values = [hv for _, hv in trace]
    assert values[0] > 0 and values[1] >= values[0]
    assert active.trace(pool, obs, scale, skip={2, 4}) == trace[2:]


def test_bayes_proposals_are_reproducible_from_the_runs_and_the_seed():
    pool = active.build_pool(candidates.olivine_space(("Fe", "Mn", "Co"), step=0.1), ObjectiveSpec())
    observed = list(range(0, len(pool.candidates), 4))[:9]  # past the initial design (2·3 + 1 points)
    x = pool.coordinates[observed]
    stress = -(800.0 + 600.0 * x[:, 0] * x[:, 1] + 300.0 * x[:, 2])  # a smooth stand-in, oriented
    scale = active.scale_of(pool, stress[:, None])
    strategy = StrategySettings("bayes", budget=20, proposal_batch=3, proposal_seed=5)
    first = active.next_batch(strategy, pool, observed, stress[:, None], scale, iteration=2)
    assert first == active.next_batch(strategy, pool, observed, stress[:, None], scale, iteration=2)
    assert len(set(first)) == 3 and not set(first) & set(observed)


@pytest.mark.parametrize(("args", "flag"), [
    (["--samples", "0", "--strategy", "bayes"], "--samples"),
    (["--budget", "2", "--proposal-batch", "4"], "--budget"),
    (["--strategy", "annealing"], "--strategy"),
    (["--strategy", "bayes", "--refine", "1"], "--refine"),
    (["--strategy", "random", "--envelope"], "--envelope"),
    (["--strategy", "random", "--kinetics-model", "models:/lfp-kinetics@champion"], "--kinetics-model"),
])
def test_bad_strategy_input_exits_2_naming_the_flag_before_anything_is_written(tmp_path, monkeypatch, capsys,
                                                                                args, flag):
    from screening.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["sweep", "--law", "vegard", "--step", "0.5", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert flag in err[-1] and "Traceback" not in "\n".join(err)
    assert list(tmp_path.iterdir()) == []  # no store, no artifacts

