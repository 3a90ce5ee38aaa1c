"""The objective specification's constraints drive the active-learning proposals: a constraint on a
closed-form metric removes pool points exactly (the same set the ranking marks infeasible), one on a
simulated metric is learned by the GP and weights the EHVI by the probability of feasibility; and the
noisy variant (``samples`` > 1) through the Python API end to end."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

import candidates
import screening
from mechanics.errors import InputError
from screening import active
from screening.objectives import ObjectiveSpec, evaluate
from screening.strategies import StrategySettings


def _table(space) -> pd.DataFrame:
    metals = sorted({m for c in space for m in c.fractions})
    return pd.DataFrame([{f"x_{m}": c.fraction(m) for m in metals} for c in space])


def test_a_closed_form_constraint_removes_exactly_the_points_the_ranking_marks_infeasible():
    space = candidates.olivine_space(("Fe", "Mn", "Co", "Ni"), step=0.1)
    objectives = "usable_specific_energy_Wh_kg,cost_USD_per_kWh,supply_risk_hhi"
    loose = ObjectiveSpec.from_text(objectives)
    # thresholds at the medians over the window's compositions, so that each constraint cuts
    window = evaluate(_table(space), loose)
    window = window[window["feasible"]]
    cost, hhi = float(window["cost_USD_per_kWh"].median()), float(window["supply_risk_hhi"].median())
    spec = ObjectiveSpec.from_text(objectives, constraints=[f"cost_USD_per_kWh<{cost!r}",
                                                            f"supply_risk_hhi<={hhi!r}"])
    pool = active.build_pool(space, spec)
    ranked = evaluate(_table(space), spec)  # the ranking's own feasibility
    expected = {c.id for c, ok in zip(space, ranked["feasible"]) if ok}
    assert {c.id for c in pool.candidates} == expected
    assert 0 < len(expected) < len(window) // 2 + 1  # both constraints removed points of the window
    assert pool.constraints == ()  # nothing left for the strategy to learn

    # no strategy can propose an infeasible point: run every one to the pool's end
    infeasible = {c.id for c in space} - expected
    for name in ("grid", "random", "bayes"):
        strategy = StrategySettings(name, budget=len(pool.candidates), proposal_batch=8, proposal_seed=1)
        observed: list[int] = []
        while True:
            values = np.zeros((len(observed), 0))
            batch = active.next_batch(strategy, pool, observed, values, None, len(observed) // 8)
            if not batch:
                break
            observed += batch
        assert sorted(observed) == list(range(len(pool.candidates))), name
        assert not {pool.candidates[i].id for i in observed} & infeasible

    with pytest.raises(InputError, match="--constraint"):
        active.build_pool(space, ObjectiveSpec.from_text(objectives, constraints=["cost_USD_per_kWh<0"]))


def test_slack_is_nonpositive_exactly_where_the_constraint_holds():
    spec = ObjectiveSpec.from_text(constraints=["peak_tensile_stress_MPa<800", "safe_window_decades>=2"])
    below, above = spec.constraints
    values = np.array([700.0, 800.0, 900.0, np.nan])
    np.testing.assert_array_equal(active.slack(below, values) <= 0, below.holds(values))
    assert active.slack(below, values)[2] == 100.0 and np.isnan(active.slack(below, values)[3])
    windows = np.array([1.0, 2.0, 3.5])
    np.testing.assert_array_equal(active.slack(above, windows) <= 0, [False, True, True])
    assert active.slack(above, windows)[0] == 1.0
    assert active.simulated_constraints(spec) == spec.constraints and not active.closed_form_constraints(spec)


# A synthetic problem over the Fe–Mn–Co simplex: usable energy (exact) rewards Mn and Co, the stress
# oracle (an objective) rewards Fe, and the elastic-energy oracle (a constraint only, not an objective)
# forbids the Mn-rich corner, where the unconstrained front wants to go.
def _stress(x):  # x: (n, 3) fractions over (Co, Fe, Mn), the pool's sorted metals
    return 500.0 + 200.0 * x[:, 0] + 300.0 * x[:, 2] + 150.0 * x[:, 0] * x[:, 2]


def _elastic(x):
    return 2.0 + 6.0 * x[:, 2] + 2.0 * x[:, 0]


LIMIT = 4.5  # MJ/m³: feasible where x_Mn + x_Co/3 < 5/12


def _fraction_feasible(spec, seed, budget=20, batch=4):
    pool = active.build_pool(candidates.olivine_space(("Fe", "Mn", "Co"), step=0.1), spec)
    assert pool.metals == ("Co", "Fe", "Mn")
    stress, elastic = _stress(pool.coordinates), _elastic(pool.coordinates)
    strategy = StrategySettings("bayes", budget=budget, proposal_batch=batch, proposal_seed=seed)
    constraint = active.simulated_constraints(spec)
    observed: list[int] = []
    chosen: list[int] = []
    scale = None
    for k in range(budget // batch):
        values = -stress[observed][:, None]  # oriented: lower stress is better
        slacks = (np.stack([active.slack(c, elastic[observed]) for c in constraint], axis=1)
                  if constraint else None)
        proposal = active.next_batch(strategy, pool, observed, values, scale, k, slacks=slacks)
        if len(observed) >= 2 * 3 + 1:  # chosen by the GP (past the random initial design)
            chosen += proposal
        observed += proposal
        if k == 0:
            scale = active.scale_of(pool, -stress[proposal][:, None])
    return float(np.mean(elastic[chosen] < LIMIT)), float(np.mean(elastic < LIMIT))


def test_a_simulated_metric_constraint_makes_bayes_propose_mostly_feasible_points():
    objectives = "usable_specific_energy_Wh_kg,peak_tensile_stress_MPa"
    constrained = ObjectiveSpec.from_text(objectives, constraints=[f"peak_elastic_energy_MJ_m3<{LIMIT}"])
    free = ObjectiveSpec.from_text(objectives)
    pool = active.build_pool(candidates.olivine_space(("Fe", "Mn", "Co"), step=0.1), constrained)
    assert [str(c) for c in pool.constraints] == [f"peak_elastic_energy_MJ_m3<{LIMIT:g}"]
    with_constraint, without, base = [], [], None
    for seed in range(2):
        share, base = _fraction_feasible(constrained, seed)
        with_constraint.append(share)
        without.append(_fraction_feasible(free, seed)[0])
    # measured (proposal seeds 0/1/2/3, 12 GP-chosen points each): feasible share 0.83/0.83/0.83/0.75 with
    # the constraint, 0.50/0.50/0.50/0.42 without it; the pool's own share is 0.45
    message = f"feasible share of GP proposals: with {with_constraint}, without {without}, pool {base:.2f}"
    assert np.median(with_constraint) >= 0.75, message
    assert np.median(with_constraint) >= np.median(without) + 0.25, message
    assert np.median(with_constraint) >= base + 0.25, message


SETTINGS = screening.ScreeningSettings(grid_points=8, observations=2, snapshots=1, soc_step_max=0.05,
                                       composition_tol=0.1)


def test_noisy_bayes_with_samples_runs_end_to_end_with_std_metrics_and_iteration_tags(tmp_path):
    from chemoscreen import store
    from screening import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = candidates.olivine_space(("Fe", "Mn"), step=0.1)
    # 11 compositions, 7 simulations in batches of 2: iterations 0-2 are the random design (2·2 + 1 = 5
    # points), iteration 3 is chosen by the noisy EHVI from the means over 2 draws
    strategy = StrategySettings("bayes", budget=7, proposal_batch=2, proposal_seed=4)
    outcome = screening.sweep(space, "vegard", SETTINGS, strategy=strategy, options=screening.SweepOptions(
        tracking_uri=uri, num_cpus=2, artifacts=False, progress=False, samples=2))
    assert outcome.simulated == 7 and (outcome.table["status"] == "FINISHED").all()
    client = store.open_store(uri)
    children = [client.get_run(r) for r in outcome.table["run_id"]]
    assert Counter(r.data.tags[active.ITERATION_TAG] for r in children) == {"0": 2, "1": 2, "2": 2, "3": 1}
    for run in children:
        assert run.data.metrics["peak_tensile_stress_MPa_std"] > 0  # the parameters were drawn
        assert run.data.params.get("samples", "2") == "2"
    # iteration 3 is what the noisy strategy proposes from the runs of iterations 0-2
    pool = active.build_pool(space, ObjectiveSpec())
    experiment = client.get_experiment_by_name(store.SCREENING_EXPERIMENT).experiment_id
    obs = active.read_observations(tracking.child_runs(client, experiment, outcome.parent_run_id), pool)
    before = obs.before(3)
    values = np.array([obs.values[i] for i in before]).reshape(len(before), 1)
    proposed = active.next_batch(strategy, pool, before, values, active.observed_scale(pool, obs), 3,
                                 noisy=True, size=1)
    assert proposed == [i for i, it in obs.iteration.items() if it == 3]
    steps = [m.step for m in client.get_metric_history(outcome.parent_run_id, active.HYPERVOLUME_METRIC)]
    assert sorted(steps) == [2, 4, 6, 7]
