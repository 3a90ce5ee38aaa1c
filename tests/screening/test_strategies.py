"""Proposal strategies: settings checked, grid/random reproducible, hypervolume against a hand-worked case,
and bayes against random on an analytic two-objective problem over the simplex with a known front."""

from __future__ import annotations

import numpy as np
import pytest

from mechanics.errors import InputError
from screening.strategies import StrategySettings, hypervolume, hypervolume_qmc, propose


def _simplex(step: float) -> np.ndarray:
    import candidates

    space = candidates.olivine_space(("Fe", "Mn", "Co"), step=step)
    return np.array([[c.fraction(m) for m in ("Fe", "Mn", "Co")] for c in space])


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"strategy": "annealing"}, "strategy"), ({"budget": 0}, "budget"),
    ({"proposal_batch": 0}, "proposal_batch"), ({"budget": 4, "proposal_batch": 8}, "budget"),
    ({"proposal_seed": 1.5}, "proposal_seed"),
])
def test_bad_settings_name_the_field(kwargs, field):
    # the command line names the option too: --budget (budget) (chemoscreen.options)
    with pytest.raises(InputError) as info:
        StrategySettings(**kwargs)
    assert info.value.field == field


def test_hypervolume_of_a_hand_worked_front():
    # points (1, 3), (2, 2), (3, 1) over the origin: union of three rectangles = 3 + 4 + 3 - 2 - 2 = 6;
    # (1, 1) is dominated and adds nothing, (-1, 5) lies below the reference point and is dropped
    points = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [1.0, 1.0], [-1.0, 5.0]])
    assert hypervolume(points, [0.0, 0.0]) == pytest.approx(6.0)
    assert hypervolume(np.empty((0, 2)), [0.0, 0.0]) == 0.0


def test_grid_and_random_are_reproducible_and_never_repeat():
    pool = _simplex(0.25)
    grid = StrategySettings("grid", budget=15, proposal_batch=4)
    assert propose(grid, pool, [0, 1], None, ref_point=[0, 0]) == [2, 3, 4, 5]
    rand = StrategySettings("random", budget=15, proposal_batch=4, proposal_seed=3)
    first = propose(rand, pool, [], None, ref_point=[0, 0])
    assert first == propose(rand, pool, [], None, ref_point=[0, 0])
    second = propose(rand, pool, first, None, ref_point=[0, 0], iteration=1)
    assert not set(first) & set(second) and len(set(first + second)) == 8
    everything = propose(StrategySettings("grid", 15, 15), pool, list(range(len(pool) - 2)), None,
                         ref_point=[0, 0])
    assert everything == [len(pool) - 2, len(pool) - 1]  # the pool runs out


A, B = np.array([0.8, 0.1, 0.1]), np.array([0.1, 0.1, 0.8])


def _objectives(x):
    """Two objectives to maximise, -|x - A|² and -|x - B|²: the Pareto set is the segment from A to B."""
    return np.stack([-((x - A) ** 2).sum(-1), -((x - B) ** 2).sum(-1)], axis=-1)


def _normalised(pool):
    values = _objectives(pool)
    low, high = values.min(axis=0), values.max(axis=0)
    return lambda x: (_objectives(x) - low) / (high - low)


def _run(strategy, seed, pool, budget=24, batch=4):
    """Hypervolume fraction of the pool's reached by the strategy; the second objective is closed-form."""
    norm = _normalised(pool)
    ref = [-0.1, -0.1]  # objectives normalised to [0, 1] by the pool's ranges; fixed reference point
    settings = StrategySettings(strategy, budget, batch, seed)
    observed: list[int] = []
    iteration = 0
    while len(observed) < budget:
        values = norm(pool[observed])[:, :1] if observed else None
        observed += propose(settings, pool, observed, values, ref_point=ref,
                            exact=lambda x: norm(x)[:, 1:], iteration=iteration)
        iteration += 1
    return hypervolume(norm(pool[observed]), ref) / hypervolume(norm(pool), ref)


@pytest.mark.slow  # a GP fit and a batch of 3: 18 s on 2 busy cores (test_active.py has a faster one)
def test_one_bayes_proposal_is_a_batch_of_distinct_unobserved_points():
    pool = _simplex(0.1)
    norm = _normalised(pool)
    observed = list(range(0, len(pool), 6))  # 11 points: past the initial design of 2·3 + 1
    settings = StrategySettings("bayes", budget=20, proposal_batch=3, proposal_seed=1)
    picked = propose(settings, pool, observed, norm(pool[observed]), ref_point=[-0.1, -0.1])
    assert len(picked) == 3 and len(set(picked)) == 3 and not set(picked) & set(observed)
    assert picked == propose(settings, pool, observed, norm(pool[observed]), ref_point=[-0.1, -0.1])


@pytest.mark.slow
def test_bayes_beats_random_at_equal_budget():
    # 231 compositions (0.05 grid of three metals), 24 simulations in batches of 4, 5 seeds each. Measured
    # (this setting, run as a script): random reached a median 0.964 of the pool's hypervolume (0.956 to
    # 0.969), bayes 0.995 (0.993 to 0.997). Margin required: 0.02, about 3x the spread of random's seeds.
    pool = _simplex(0.05)
    random = [_run("random", seed, pool) for seed in range(5)]
    bayes = [_run("bayes", seed, pool) for seed in range(5)]
    assert np.median(bayes) >= np.median(random) + 0.02, (random, bayes)


def test_qmc_hypervolume_agrees_with_the_exact_one():
    # 40 points of a concave front in three objectives (all non-dominated); the Sobol estimate on 2^16
    # points: quasi-Monte Carlo error well below 0.5 % here (measured 0.05 %), tolerance 0.5 %
    rng = np.random.default_rng(0)
    directions = rng.dirichlet(np.ones(3), size=40)
    front = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    ref = [-0.1, -0.1, -0.1]
    assert hypervolume_qmc(front, ref) == pytest.approx(hypervolume(front, ref), rel=5e-3)
    assert hypervolume_qmc(np.empty((0, 3)), ref) == 0.0


def test_with_known_objectives_bayes_picks_the_largest_hypervolume_improvements_greedily():
    # every objective exact (nothing to learn): EHVI is the hypervolume improvement itself, so the batch
    # must be the greedy sequence of largest exact improvements (BoTorch's exact hypervolume)
    t = np.linspace(0.0, 1.0, 11)
    pool = t[:, None]
    objectives = np.stack([t, 1.0 - t**2], axis=1)  # a concave front: every point is non-dominated
    ref = [-0.1, -0.1]
    observed = [0, 1, 10]
    settings = StrategySettings("bayes", budget=10, proposal_batch=3, proposal_seed=0)
    picked = propose(settings, pool, observed, None, ref_point=ref, exact=objectives)
    chosen = list(observed)
    for pick in picked:
        base = hypervolume(objectives[chosen], ref)
        gains = np.array([hypervolume(objectives[chosen + [i]], ref) - base if i not in chosen else -1.0
                          for i in range(len(t))])
        best = np.sort(gains)[-2:]
        # a clear winner: the runner-up is ≥ 0.8 % of the hypervolume behind (measured 4.5, 1.9, 0.86 %),
        # far more than the error of the 2^13-point integration
        assert best[1] - best[0] > 8e-3 * base
        assert pick == int(np.argmax(gains))
        chosen.append(pick)
