"""Uncertainty propagation: paired parameter draws, per-element law samples, draw statistics, how sure the
ranking is (p_pareto, p_top_k, score_std), and a sweep with --samples through Ray and MLflow."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import candidates
import screening
from mechanics.errors import InputError
from mechanics.laws import PiecewiseLinearLaw
from screening.objectives import ObjectiveSpec
from screening.ranking import rank_candidates, rank_draws
from screening.uncertainty import (
    DrawnParams,
    LawSamples,
    ParameterSpread,
    draw_parameters,
    merge_draws,
    simulate_draws,
    spread_of,
    summarize,
)

SETTINGS = screening.ScreeningSettings(grid_points=8, observations=2, snapshots=1, soc_step_max=0.05,
                                       composition_tol=0.1)


def _props(fractions):
    return candidates.properties(candidates.explicit_space([fractions])[0])


def _binomial_tolerance(p: float, n: int) -> float:
    """4 binomial standard errors of a fraction p over n draws, plus half a count for p at 0 or 1."""
    return 4.0 * math.sqrt(p * (1.0 - p) / n) + 0.5 / n


# ---------------------------------------------------------------------------------------------------
# parameter draws


def test_paired_draws_give_a_smaller_std_of_the_difference_than_unpaired_ones():
    a, b = _props({"Fe": 0.5, "Mn": 0.5}), _props({"Fe": 0.55, "Mn": 0.45})
    spreads = [spread_of(p.params, p.fractions, p.source, p.uncertainties) for p in (a, b)]
    n = 400

    def misfit_a(props, spread, seed, k):
        return draw_parameters(props.params, props.fractions, spread, seed, k).misfit[0]

    paired = [misfit_a(a, spreads[0], 0, k) - misfit_a(b, spreads[1], 0, k) for k in range(n)]
    unpaired = [misfit_a(a, spreads[0], 0, k) - misfit_a(b, spreads[1], 1, k) for k in range(n)]
    # the draws do spread: the marginal std is the documented 1σ of the misfit within 4 standard errors
    marginal = np.std([misfit_a(a, spreads[0], 0, k) for k in range(n)], ddof=1)
    assert marginal == pytest.approx(a.uncertainties["misfit_a"], rel=4 / math.sqrt(2 * n) + 0.05)
    # paired, the two candidates share their end members' errors: only the 5 % composition difference of
    # the end-member weights is left, about 20x smaller than the unpaired sqrt(2)-times marginal spread
    assert np.std(paired, ddof=1) < 0.1 * np.std(unpaired, ddof=1)


def test_zero_spread_draws_are_the_nominal_parameters():
    props = _props({"Fe": 1.0})
    zero = ParameterSpread({}, 0.0, 0.0, 0.0)
    assert draw_parameters(props.params, props.fractions, zero, 3, 7) == props.params


def test_drawn_law_gives_each_batch_element_its_samples_shape():
    central = PiecewiseLinearLaw.from_vegard([0.05, 0.036, -0.02], n_knots=3)
    bent = PiecewiseLinearLaw(central.knots_X, np.array([[0.0, 0.03, 0.06], [0.0, 0.02, 0.04],
                                                         [0.0, -0.005, -0.02]]))
    drawn = LawSamples(central, [central, bent]).for_draws([0, 1, -1])
    x = torch.full((3, 2, 2), 0.5, dtype=torch.float64)
    value = drawn(x)
    end = central(torch.ones(1, dtype=torch.float64)).reshape(3)
    # element 1 follows the bent sample's shape g = eps(X)/eps(1), scaled to the central end point
    one = torch.ones(1, dtype=torch.float64)
    g_bent = bent(torch.tensor([0.5], dtype=torch.float64)).reshape(3) / bent(one).reshape(3)
    torch.testing.assert_close(value[1, 0, 0], g_bent * end)
    torch.testing.assert_close(value[0, 0, 0], 0.5 * end)
    torch.testing.assert_close(value[2, 1, 1], 0.5 * end)
    torch.testing.assert_close(drawn(one), central(one))
    with pytest.raises(RuntimeError, match="batch"):
        drawn(torch.zeros(5, 2, 2, dtype=torch.float64))


def test_summarize_reports_mean_std_and_percentiles():
    stats = summarize([1.0, 2.0, 3.0, 4.0, np.nan])
    assert stats[""] == 2.5 and stats["_std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert stats["_p05"] == pytest.approx(1.15) and stats["_p95"] == pytest.approx(3.85)
    assert summarize([5.0])["_std"] == 0.0


# ---------------------------------------------------------------------------------------------------
# zero spread: the draws reproduce the point simulation and the point ranking


def test_zero_spread_law_draws_reproduce_the_point_simulation_and_ranking():
    from mechanics.screen import simulate_candidates

    space = candidates.olivine_space(("Fe", "Mn"), step=1.0)
    params = [candidates.properties(c).params for c in space]
    law = PiecewiseLinearLaw.from_vegard([0.052, 0.038, -0.02], n_knots=4)
    n = 2
    point = simulate_candidates(params, SETTINGS, law)
    drawn = simulate_draws([DrawnParams(p, k) for p in params for k in range(n)], SETTINGS,
                           LawSamples(law, [law] * n))
    from screening.actors import package_result

    merged = [merge_draws(c.id, [package_result(f"{c.id}#{k}", drawn[i * n + k], None, 0.0)
                                 for k in range(n)]) for i, c in enumerate(space)]
    for result, expected in zip(merged, point):
        assert result.status == "FINISHED"
        assert result.metrics["peak_tensile_stress_MPa"] == pytest.approx(
            expected.metrics["peak_tensile_stress_MPa"], rel=1e-12)
        assert result.metrics["peak_tensile_stress_MPa_std"] == 0.0
        assert len(result.draws["peak_tensile_stress_MPa"]) == n
    table = pd.DataFrame({
        "candidate_id": [c.id for c in space], "formula": [c.formula for c in space],
        **{f"x_{m}": [c.fraction(m) for c in space] for m in ("Fe", "Mn")},
        "volume_change_pct": [100 * candidates.properties(c).volume_change for c in space],
        **{k: [r.metrics[k] for r in merged] for k in ("peak_tensile_stress_MPa",)},
    })
    ranked = rank_candidates(table)
    by_id = {r.candidate_id: r for r in merged}
    draws = {"peak_tensile_stress_MPa": np.array([by_id[c].draws["peak_tensile_stress_MPa"]
                                                  for c in ranked["candidate_id"]])}
    out, beats = rank_draws(ranked, draws, ObjectiveSpec(top_k=1))
    # 0 up to the rounding of a mean of equal floats (1e-16 here)
    np.testing.assert_allclose(out["score_std"], 0.0, atol=1e-12)
    assert out["p_pareto"].tolist() == (ranked["pareto_rank"] == 1).astype(float).tolist()
    assert out["p_top_k"].tolist() == [1.0] + [0.0] * (len(out) - 1)  # the point ranking's first
    assert out["candidate_id"].tolist() == ranked["candidate_id"].tolist()
    score = ranked["score"].to_numpy()
    np.testing.assert_array_equal(beats, score[:, None] > score[None])


# ---------------------------------------------------------------------------------------------------
# how sure: synthetic draws with a known answer


def _two(stress_a, stress_b):
    table = pd.DataFrame({"candidate_id": ["a", "b"], "formula": ["A", "B"], "x_Fe": [1.0, 1.0],
                          "volume_change_pct": [6.8, 6.8], "peak_tensile_stress_MPa": [stress_a, stress_b]})
    return rank_candidates(table)


@pytest.mark.parametrize(("delta_sigma", "sigma"), [(0.01, 50.0), (10.0, 10.0)])
def test_p_pareto_against_the_normal_probability_within_the_binomial_error(delta_sigma, sigma):
    # A and B differ only in stress (same composition, so every closed-form objective ties): A is on
    # the front in a draw exactly when its stress is below B's, P = Phi(delta / (sigma sqrt 2))
    n = 2000
    rng = np.random.default_rng(5)
    mean_a, mean_b = 500.0, 500.0 + delta_sigma * sigma
    draws = np.stack([rng.normal(mean_a, sigma, n), rng.normal(mean_b, sigma, n)])
    ranked = _two(mean_a, mean_b)
    out, beats = rank_draws(ranked, {"peak_tensile_stress_MPa": draws})
    p_a = 0.5 * (1.0 + math.erf(delta_sigma / 2.0))  # Phi(delta_sigma / sqrt 2)
    by = out.set_index("candidate_id")
    assert by.loc["a", "p_pareto"] == pytest.approx(p_a, abs=_binomial_tolerance(p_a, n))
    assert by.loc["b", "p_pareto"] == pytest.approx(1.0 - p_a, abs=_binomial_tolerance(p_a, n))
    if delta_sigma < 1:
        assert abs(by.loc["a", "p_pareto"] - 0.5) <= _binomial_tolerance(0.5, n)
    else:
        assert by.loc["a", "p_pareto"] == 1.0 and by.loc["b", "p_pareto"] == 0.0
    i, j = out["candidate_id"].tolist().index("a"), out["candidate_id"].tolist().index("b")
    assert beats[i, j] == pytest.approx(by.loc["a", "p_pareto"])  # one varying objective: front = winner


def test_infeasible_rows_get_no_draw_statistics():
    table = pd.DataFrame({"candidate_id": ["fe", "co"], "formula": ["LiFePO4", "LiCoPO4"],
                          "x_Fe": [1.0, 0.0], "x_Co": [0.0, 1.0], "volume_change_pct": [6.8, 2.0],
                          "peak_tensile_stress_MPa": [500.0, 100.0]})
    ranked = rank_candidates(table)
    out, _ = rank_draws(ranked, {"peak_tensile_stress_MPa": np.array([[500.0, 510.0], [100.0, 90.0]])})
    by = out.set_index("candidate_id")
    assert by.loc["fe", "p_pareto"] == 1.0 and by.loc["fe", "p_top_k"] == 1.0
    assert np.isnan(by.loc["co", "p_pareto"]) and np.isnan(by.loc["co", "score_std"])


def test_bad_samples_are_refused():
    for bad in (0, -2, 1.5, True, 10_000):
        with pytest.raises(InputError, match="--samples"):
            screening.SweepOptions(samples=bad)
    with pytest.raises(InputError, match="--samples"):
        screening.SweepOptions(samples=4, simulator="my.module:simulate")
    with pytest.raises(InputError, match="--top-k"):
        ObjectiveSpec(top_k=0)


# ---------------------------------------------------------------------------------------------------
# through the sweep: Ray actors, MLflow child runs, the parent's plots


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('samples') / 'mlflow.db'}"
    space = candidates.olivine_space(metals=("Fe", "Mn"), step=0.5)
    outcome = screening.sweep(space, "vegard", SETTINGS, options=screening.SweepOptions(
        tracking_uri=uri, num_cpus=2, artifacts=False, progress=False, samples=3))
    return uri, outcome


def test_sweep_with_samples_logs_means_statistics_draws_and_how_sure(sampled):
    from chemoscreen import store

    uri, outcome = sampled
    table = outcome.table
    assert outcome.simulated == 3 and (table["status"] == "FINISHED").all()
    stress = "peak_tensile_stress_MPa"
    for column in (f"{stress}_std", f"{stress}_p05", f"{stress}_p95", "score_std", "p_pareto", "p_top_k"):
        assert table[column].notna().all(), column
    assert (table["peak_tensile_stress_MPa_p05"] <= table["peak_tensile_stress_MPa"]).all()
    assert (table["peak_tensile_stress_MPa"] <= table["peak_tensile_stress_MPa_p95"]).all()
    assert (table["peak_tensile_stress_MPa_std"] > 0).all()  # the parameters were drawn
    assert table[["p_pareto", "p_top_k"]].stack().between(0, 1).all()
    client = store.open_store(uri)
    for run_id in table["run_id"]:
        run = client.get_run(run_id)
        history = client.get_metric_history(run_id, "peak_tensile_stress_MPa_draw")
        values = [m.value for m in sorted(history, key=lambda m: m.step)]
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [0, 1, 2]
        assert run.data.metrics["peak_tensile_stress_MPa"] == pytest.approx(np.mean(values), rel=1e-12)
        assert {"p_pareto", "score_std", "p_top_k", "cost_USD_per_kWh", "feasible"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(outcome.parent_run_id, "ranking")}
    assert {"ranking/score_errorbars.png", "ranking/p_beats.png", "ranking/p_beats.csv"} <= artifacts
    assert client.get_run(outcome.parent_run_id).data.params["settings.samples"] == "3"


def test_a_rerun_with_samples_simulates_nothing_and_another_n_is_another_sweep(sampled):
    uri, outcome = sampled
    space = candidates.olivine_space(metals=("Fe", "Mn"), step=0.5)
    again = screening.sweep(space, "vegard", SETTINGS, options=screening.SweepOptions(
        tracking_uri=uri, num_cpus=2, artifacts=False, progress=False, samples=3))
    assert again.simulated == 0 and again.sweep_id == outcome.sweep_id
    pd.testing.assert_series_equal(again.table["p_pareto"], outcome.table["p_pareto"])


def test_a_law_without_posterior_samples_is_refused_before_any_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    law = PiecewiseLinearLaw.from_vegard([0.052, 0.038, -0.02], n_knots=4)
    space = candidates.olivine_space(metals=("Fe",), step=1.0)
    with pytest.raises(InputError, match="--samples"):
        screening.sweep(space, law, SETTINGS, options=screening.SweepOptions(
            tracking_uri=uri, num_cpus=2, progress=False, samples=2))
    from chemoscreen import store

    client = store.open_store(uri)
    assert not client.search_experiments() or all(
        not client.search_runs([e.experiment_id]) for e in client.search_experiments())


def test_a_registered_version_without_posterior_samples_is_refused_by_the_cli(tmp_path, capsys):
    from chemoscreen import store
    from chemoscreen.models import log_model
    from screening.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = store.open_store(uri)
    experiment = store.ensure_experiment(client, "laws", uri)
    run_id = client.create_run(experiment).info.run_id
    law = PiecewiseLinearLaw.from_vegard([0.052, 0.038, -0.02], n_knots=4)
    version = log_model(client, run_id, law, artifact_path="law", register="no-samples")
    client.set_terminated(run_id)
    args = ["sweep", "--metals", "Fe", "--step", "1", "--tracking-uri", uri, "--grid-points", "8"]
    assert main([*args, "--model", f"models:/no-samples/{version}", "--samples", "2"]) == 2
    assert "--samples" in capsys.readouterr().err
    assert main([*args, "--law", "vegard", "--samples", "0"]) == 2
    assert "--samples" in capsys.readouterr().err
    screening_runs = client.get_experiment_by_name(store.SCREENING_EXPERIMENT)
    assert screening_runs is None or not client.search_runs([screening_runs.experiment_id])


def test_rank_writes_the_uncertainty_plots_beside_the_table(sampled, tmp_path):
    from screening.cli import main

    uri, _ = sampled
    out = tmp_path / "ranking.csv"
    assert main(["rank", "--tracking-uri", uri, "--out", str(out), "--top-k", "1"]) == 0
    table = pd.read_csv(out)
    assert table["p_top_k"].sum() == pytest.approx(1.0)  # exactly one candidate is the best in each draw
    for name in ("ranking_score_errorbars.png", "ranking_p_beats.png", "ranking_p_beats.csv"):
        assert (tmp_path / name).stat().st_size > 0, name


@pytest.mark.slow
def test_registered_posterior_samples_reach_the_actors(tmp_path):
    # a registered Vegard-shaped law whose two posterior samples bend its shape (middle knot x1.3, x0.7): the
    # parameter draws are the same as those of a --law vegard sweep (common random numbers: they depend on
    # the seed and the draw index only), so every difference between the two sweeps' draws is the law's
    from chemoscreen import store
    from chemoscreen.models import log_model

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = store.open_store(uri)
    run_id = client.create_run(store.ensure_experiment(client, "laws", uri)).info.run_id
    law = PiecewiseLinearLaw.from_vegard([0.052, 0.038, -0.02], n_knots=3)
    values = law.values().detach().numpy()
    bent = np.stack([values * np.array([1.0, 1.3, 1.0]), values * np.array([1.0, 0.7, 1.0])])  # (2, 3, K=3)
    version = log_model(client, run_id, law, artifact_path="law", register="with-samples", samples=bent)
    client.set_terminated(run_id)
    space = candidates.olivine_space(metals=("Fe",), step=1.0)
    options = screening.SweepOptions(tracking_uri=uri, num_cpus=2, artifacts=False, progress=False, samples=2)

    def draws(law_uri):
        outcome = screening.sweep(space, law_uri, SETTINGS, options=options)
        assert (outcome.table["status"] == "FINISHED").all()
        history = client.get_metric_history(outcome.table["run_id"].iloc[0], "peak_tensile_stress_MPa_draw")
        return np.array([m.value for m in sorted(history, key=lambda m: m.step)])

    with_law, vegard = draws(f"models:/with-samples/{version}"), draws("vegard")
    assert len(with_law) == len(vegard) == 2
    # the bent shapes change the stress by more than float noise, in opposite directions
    change = (with_law - vegard) / vegard
    assert (np.abs(change) > 1e-6).all() and change[0] * change[1] < 0


def test_a_failed_draw_is_counted_and_left_out_of_the_paired_ranking():
    from screening.actors import CandidateResult

    ok = [CandidateResult("c#0", "FINISHED", "", {"peak_tensile_stress_MPa": 100.0}),
          CandidateResult("c#1", "FAILED", "blow-up"),
          CandidateResult("c#2", "FINISHED", "", {"peak_tensile_stress_MPa": 300.0})]
    merged = merge_draws("c", ok)
    assert merged.status == "FINISHED" and merged.metrics["draws_failed"] == 1.0
    assert merged.metrics["peak_tensile_stress_MPa"] == 200.0
    assert np.isnan(merged.draws["peak_tensile_stress_MPa"][1])
    assert merge_draws("c", [ok[1], ok[1]]).status == "FAILED"
    # draw 1 failed for A: it is left out for B too, so that A and B are compared in draws 0 and 2 only
    ranked = _two(200.0, 250.0)
    values = {"a": [100.0, np.nan, 300.0], "b": [150.0, 10.0, 350.0]}
    draws = {"peak_tensile_stress_MPa": np.array([values[c] for c in ranked["candidate_id"]])}
    out, _ = rank_draws(ranked, draws)
    by = out.set_index("candidate_id")
    assert by.loc["a", "p_pareto"] == 1.0 and by.loc["b", "p_pareto"] == 0.0
    assert (out["draws_ranked"] == 2).all()
