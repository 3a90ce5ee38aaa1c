"""Pareto sorting and score against hand-worked examples (exact arithmetic, so exact comparisons)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mechanics.errors import InputError
from screening.objectives import ObjectiveSpec, parse_constraint, weights_alias
from screening.ranking import pareto_ranks, rank_candidates, scores


def test_pareto_ranks_of_a_hand_worked_set():
    # maximise both columns. Front 1: (3,1), (2,2), (1,3); (1,1) is dominated by (2,2); (2,1) by (3,1) and
    # (2,2) but not by anything of rank 2 -> rank 2; (1,1) is dominated by (2,1) -> rank 3; (0,0) -> rank 4
    x = np.array([[3, 1], [2, 2], [1, 3], [2, 1], [1, 1], [0, 0]], dtype=float)
    assert pareto_ranks(x).tolist() == [1, 1, 1, 2, 3, 4]


def test_duplicates_share_a_rank_and_nan_rows_are_unranked():
    x = np.array([[1.0, 1.0], [1.0, 1.0], [np.nan, 5.0], [0.5, 0.5]])
    assert pareto_ranks(x).tolist() == [1, 1, 0, 2]


def test_pareto_front_of_random_points_is_mutually_non_dominated():
    rng = np.random.default_rng(0)
    x = rng.random((200, 3))
    ranks = pareto_ranks(x)
    for r in np.unique(ranks):
        members = x[ranks == r]
        dominated = ((members[:, None] >= members[None]).all(-1) & (members[:, None] > members[None]).any(-1))
        assert not dominated.any(), f"rank {r} holds a dominated pair"
    # and every point of rank r > 1 is dominated by some point of rank r - 1
    for i in np.flatnonzero(ranks > 1):
        prev = x[ranks == ranks[i] - 1]
        assert ((prev >= x[i]).all(-1) & (prev > x[i]).any(-1)).any()


def test_score_is_the_mean_of_min_max_utilities():
    x = np.array([[0.0, -10.0, -1.0], [10.0, -30.0, -1.0], [5.0, -20.0, -1.0]])
    # utilities: col0 (0, 1, .5); col1 (1, 0, .5); col2 no spread -> 1 for all
    np.testing.assert_allclose(scores(x), [(0 + 1 + 1) / 3, (1 + 0 + 1) / 3, (0.5 + 0.5 + 1) / 3])
    np.testing.assert_allclose(scores(x, weights=(1, 0, 0)), [0.0, 1.0, 0.5])


def test_score_rejects_bad_weights():
    with pytest.raises(InputError, match="weights"):
        scores(np.zeros((2, 3)), weights=(1, 1))
    with pytest.raises(InputError, match="weights"):
        scores(np.zeros((2, 3)), weights=(0, 0, 0))


THREE = ObjectiveSpec(objectives=(("specific_energy_Wh_kg", 1.0), ("peak_tensile_stress_MPa", 1.0),
                                   ("abs_volume_change_pct", 1.0)))


def test_rank_candidates_orients_objectives_and_sorts():
    table = pd.DataFrame({
        "formula": ["A", "B", "C", "D"],
        "x_Fe": [1.0, 1.0, 1.0, 1.0],
        "specific_energy_Wh_kg": [600.0, 500.0, 600.0, np.nan],
        "peak_tensile_stress_MPa": [100.0, 50.0, 200.0, 10.0],
        # volume change counts by magnitude: -5 is as bad as +5
        "volume_change_pct": [-5.0, 5.0, 4.0, 1.0],
    })
    ranked = rank_candidates(table, spec=THREE)
    # utilities (energy, stress, |dV|): A (1, 2/3, 0), B (0, 1, 0), C (1, 0, 1)
    by = ranked.set_index("formula")
    np.testing.assert_allclose(by.loc[["A", "B", "C"], "score"], [(5 / 3) / 3, 1 / 3, 2 / 3])
    assert ranked["formula"].tolist() == ["C", "A", "B", "D"]
    assert by.loc["A", "pareto_rank"] == 1 and by.loc["B", "pareto_rank"] == 1
    # C has the energy of A but more stress; its smaller |volume change| keeps it on the front
    assert by.loc["C", "pareto_rank"] == 1
    assert np.isnan(by.loc["D", "pareto_rank"]) and np.isnan(by.loc["D", "score"])
    assert ranked["formula"].iloc[-1] == "D"
    assert ranked["rank"].tolist() == [1, 2, 3, 4]


def test_rank_candidates_names_missing_metrics():
    table = pd.DataFrame({"x_Fe": [1.0], "specific_energy_Wh_kg": [1.0], "volume_change_pct": [1.0]})
    with pytest.raises(InputError, match="peak_tensile_stress_MPa"):
        rank_candidates(table, spec=THREE)


def test_weights_are_the_alias_of_the_three_original_objectives():
    table = _random_table(np.random.default_rng(1), 12)
    by_weights = rank_candidates(table, weights=(2.0, 1.0, 0.5))
    by_spec = rank_candidates(table, spec=ObjectiveSpec(objectives=weights_alias("2,1,0.5")))
    pd.testing.assert_frame_equal(by_weights, by_spec)
    with pytest.raises(InputError, match="weights"):
        rank_candidates(table, weights=(1.0, 1.0, 1.0), spec=ObjectiveSpec())


def _random_table(rng, n=None):
    """The 35 Fe/Mn/Co/Ni compositions of the 0.25 grid (the first n) with random simulated metrics."""
    import candidates

    space = candidates.olivine_space(("Fe", "Mn", "Co", "Ni"), step=0.25)[:n]
    m = len(space)
    return pd.DataFrame({
        "formula": [c.formula for c in space],
        **{f"x_{el}": [c.fraction(el) for c in space] for el in ("Fe", "Mn", "Co", "Ni")},
        "specific_energy_Wh_kg": rng.uniform(400, 900, m),
        "peak_tensile_stress_MPa": rng.uniform(100, 1500, m),
        "volume_change_pct": rng.uniform(-9, 9, m),
    })


@pytest.mark.parametrize("seed", range(5))
def test_infeasible_candidates_are_never_on_the_pareto_front(seed):
    rng = np.random.default_rng(seed)
    table = _random_table(rng)
    # Co- and Ni-rich rows have the best raw stress: they would dominate if feasibility were ignored
    co_ni = table["x_Co"] + table["x_Ni"]
    table.loc[co_ni > 0.5, "peak_tensile_stress_MPa"] = 10.0
    spec = ObjectiveSpec(constraints=(parse_constraint("peak_tensile_stress_MPa<1200"),))
    ranked = rank_candidates(table, spec=spec)
    infeasible = ~ranked["feasible"]
    assert infeasible.sum() > 0 and (~infeasible).sum() > 0
    assert ranked.loc[infeasible, "pareto_rank"].isna().all()
    assert ranked.loc[infeasible, "score"].isna().all()
    assert ranked.loc[~infeasible, "pareto_rank"].notna().all()
    assert (ranked.loc[infeasible, "infeasible_reason"] != "").all()
    assert ranked["feasible"].tolist() == sorted(ranked["feasible"].tolist(), reverse=True)
    # the front is that of the feasible rows alone: an infeasible row dominates nothing either
    alone = rank_candidates(table[~table["formula"].isin(ranked.loc[infeasible, "formula"])], spec=spec)
    front = set(ranked.loc[ranked["pareto_rank"] == 1, "formula"])
    assert front == set(alone.loc[alone["pareto_rank"] == 1, "formula"])
