"""Which compositions to simulate next: ``grid``, ``random`` or ``bayes`` (multi-objective BoTorch).

The strategies choose from a pool of compositions (points of the simplex of M-site fractions, e.g. a fine
grid or seeded Dirichlet points) given the objectives observed so far, oriented larger-is-better as in
:func:`screening.objectives.objective_matrix`:

- ``grid``: the pool in its order (an exhaustive sweep, cut at the budget);
- ``random``: a seeded random permutation of the pool;
- ``bayes``: a Gaussian-process surrogate (BoTorch ``SingleTaskGP``, one output per *simulated*
  objective, outputs standardised, hyperparameters by maximum marginal likelihood) of the simulated
  objectives over the composition coordinates; the closed-form objectives (usable energy, cost, supply
  risk, volume change) are known exactly at every pool point. The next batch maximises the expected
  hypervolume improvement (EHVI) over the unobserved pool points, chosen greedily one point at a time.
  Until 2·d + 1 points (d coordinates) are observed it proposes random points (the initial design).

EHVI by integration over the objective space. The hypervolume improvement of a point y over the current
front P is the volume of the region {u : ref ≤ u ≤ y, u not dominated by P}. Its expectation under the
GP's posterior, whose outputs are independent normals N(μ_k, σ_k²), is an integral over that region:

    EHVI(x) = ∫_{u ≥ ref, u ∉ dom(P)} 1[e(x) ≥ u_e] · Π_k Φ((μ_k(x) − u_k) / σ_k(x)) du

with e(x) the exact objectives and k running over the simulated ones. It is evaluated on a fixed
scrambled Sobol point set in the box [ref, upper] (quasi-Monte Carlo), so its cost is linear in the
number of objectives: BoTorch's box decompositions (``qLogEHVI``) grow combinatorially with the number
of objectives and of front points (measured on this project's 2-core machine: 37 s to partition 100
front points in 5 objectives, 283 s for BoTorch's exact hypervolume of 185 points), which rules them out
for the default five objectives. A batch is built greedily: after each pick x*, every integration point's
weight is multiplied by the probability that x* does not dominate it, so the next pick is scored by the
improvement it adds beyond the expected improvement of the points already chosen (the batch's joint
EHVI when the candidates' outcomes are independent). With ``noisy`` (the observations are means over
``--samples`` draws) the current front uses the GP's posterior mean at the observed points instead of
the raw observations (the noisy-EHVI idea: the front itself is uncertain).

Constraints on simulated metrics (``constraints``: one slack c_l per constraint, feasible where
c_l ≤ 0) are learned as further outputs of the same GP, and the EHVI of each pool point is weighted by
its probability of feasibility Π_l Φ(−μ_l(x)/σ_l(x)) (constrained EHVI, Gardner et al. 2014, the
weighting BoTorch's constrained acquisitions use); the current front holds only the observations that
satisfy every constraint. Constraints on closed-form metrics need no model: the caller removes the
infeasible points from the pool.

The reference point of the hypervolume is given by the caller in the oriented objective space
(:mod:`screening.active` normalises each objective by its range over the pool and puts the reference at
−0.1 in every objective). Proposals are reproducible from ``seed`` (``--proposal-seed``): the same
observations give the same proposal.

This module chooses; it neither simulates nor logs (the sweep path does both).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mechanics.errors import InputError

STRATEGIES = ("grid", "random", "bayes")
#: integration points of EHVI per pool point and pass (float32 entries of the pool × points matrix)
EHVI_MATRIX_ENTRIES = 2**24
EHVI_POINTS_LOG2 = 13
#: posterior standard deviations below this (normalised units) count as this (Φ stays a step, not NaN)
MIN_STD = 1e-9


@dataclass(frozen=True)
class StrategySettings:
    """How a sweep chooses what to simulate (``chemoscreen sweep --strategy ...``).

    Fields: strategy (``grid``, ``random``, ``bayes``); budget: simulations in all; proposal_batch:
    compositions per iteration; proposal_seed: seed of the random choices (initial design, tie breaks).
    """

    strategy: str = field(default="grid", metadata={
        "help": "what to simulate next from the --metals/--step space: grid (in order), random, or bayes "
                "(GP surrogate + expected hypervolume improvement)", "metavar": "grid|random|bayes"})
    budget: int = field(default=64, metadata={"help": "simulations in all", "metavar": "N"})
    proposal_batch: int = field(default=8, metadata={"help": "compositions proposed per iteration",
                                                     "metavar": "B"})
    proposal_seed: int = field(default=0, metadata={"help": "seed of the proposals (initial design, ties)",
                                                    "metavar": "S"})

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InputError("strategy", f"one of {', '.join(STRATEGIES)}", self.strategy)
        for name in ("budget", "proposal_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(name, "a positive integer", value)
        if self.budget < self.proposal_batch:
            raise InputError("budget", f"at least the proposal batch ({self.proposal_batch}) simulations",
                             self.budget)
        if isinstance(self.proposal_seed, bool) or not isinstance(self.proposal_seed, (int, np.integer)):
            raise InputError("proposal_seed", "an integer", self.proposal_seed)

    def identity(self) -> dict[str, object]:
        """What decides the proposals (the budget only cuts them: a larger budget continues a sweep)."""
        return {"strategy": self.strategy, "proposal_batch": int(self.proposal_batch),
                "proposal_seed": int(self.proposal_seed)}


def hypervolume(points: np.ndarray, ref_point: Sequence[float]) -> float:
    """Exact hypervolume dominated by ``points`` (n, k), larger is better, above ``ref_point`` (k,) (BoTorch).

    Exact but combinatorial in k: for five objectives use :func:`hypervolume_qmc`.
    """
    import torch
    from botorch.utils.multi_objective.hypervolume import Hypervolume
    from botorch.utils.multi_objective.pareto import is_non_dominated

    y = torch.as_tensor(np.asarray(points, dtype=float), dtype=torch.float64)
    ref = torch.as_tensor(np.asarray(ref_point, dtype=float), dtype=torch.float64)
    y = y[torch.isfinite(y).all(dim=-1) & (y > ref).all(dim=-1)]
    if y.shape[0] == 0:
        return 0.0
    return float(Hypervolume(ref).compute(y[is_non_dominated(y)]))


def sobol_points(dimension: int, log2_count: int, seed: int = 0) -> np.ndarray:
    """(2**log2_count, dimension) scrambled Sobol points in the unit cube (scipy), reproducible from seed."""
    from scipy.stats import qmc

    return qmc.Sobol(dimension, scramble=True, seed=seed).random_base2(log2_count)


def dominated(samples: np.ndarray, points: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Boolean (N,): which of ``samples`` (N, k) are weakly dominated by some row of ``points`` (n, k)."""
    out = np.zeros(len(samples), dtype=bool)
    points = np.asarray(points, dtype=float)
    points = points[np.isfinite(points).all(axis=1)]
    for start in range(0, len(points), chunk):
        block = points[start:start + chunk]
        out |= (samples[:, None, :] <= block[None, :, :]).all(axis=2).any(axis=1)
    return out


def hypervolume_qmc(points: np.ndarray, ref_point: Sequence[float], log2_samples: int = 16,
                    seed: int = 0) -> float:
    """Hypervolume of ``points`` (n, k) above ``ref_point``, estimated on 2**log2_samples Sobol points.

    The points fill the box [ref, max over points]; the estimate is the box volume times the fraction
    of points dominated. Its relative standard error is below sqrt((1 − f)/(f N)) for a dominated
    fraction f (quasi-Monte Carlo does better); at the default N = 65,536 and f ≥ 0.05 that is < 2 %
    (about 0.1 % when the front fills a tenth of the box or more). The same seed gives the same points,
    so estimates of nested sets are ordered like the sets.
    """
    ref = np.asarray(ref_point, dtype=float)
    y = np.asarray(points, dtype=float).reshape(-1, len(ref))
    y = y[np.isfinite(y).all(axis=1) & (y > ref).all(axis=1)]
    if len(y) == 0:
        return 0.0
    upper = y.max(axis=0)
    u = ref + sobol_points(len(ref), log2_samples, seed) * (upper - ref)
    return float(np.prod(upper - ref) * dominated(u, y).mean())


def _rows(a, n: int) -> np.ndarray:
    """``a`` as an (n, k) float array, one row per observed point; None or empty: (n, 0)."""
    a = np.zeros((n, 0)) if a is None else np.asarray(a, dtype=float)
    if a.ndim != 2:
        a = a.reshape(n, -1) if a.size else np.zeros((n, 0))
    return a


def propose(
    settings: StrategySettings,
    pool: np.ndarray,
    observed: Sequence[int],
    values: np.ndarray | None,
    *,
    ref_point: Sequence[float],
    exact: Callable[[np.ndarray], np.ndarray] | np.ndarray | None = None,
    noisy: bool = False,
    iteration: int = 0,
    constraints: np.ndarray | None = None,
) -> list[int]:
    """Indices into ``pool`` of the next ``settings.proposal_batch`` compositions to simulate.

    Args:
        settings: the strategy, batch and seed.
        pool: (m, d) composition coordinates to choose from.
        observed: indices of the pool points simulated so far (failed ones included: never proposed again).
        values: (len(observed), s) simulated objectives of those points, larger is better; a row of NaN
            is a failed simulation (left out of the fit). None when nothing is observed.
        ref_point: (s + e,) hypervolume reference point, simulated objectives first, then the exact ones.
        exact: the closed-form objectives (larger is better) of every pool point, (m, e), or a function
            ``exact(X) -> (n, e)`` of coordinates; None when there are none.
        noisy: the observations are means over draws (``--samples`` > 1): the front is the GP's mean.
        iteration: the iteration number (mixes into the seed so that each iteration draws afresh).
        constraints: (len(observed), c) slacks of the constraints on simulated metrics of the observed
            points, feasible where every slack is ≤ 0 (a row with NaN is left out of the fit, like a
            failed simulation); None when there are none.

    Returns:
        Up to ``proposal_batch`` distinct unobserved indices (fewer when the pool runs out).
    """
    pool = np.asarray(pool, dtype=float)
    done = {int(i) for i in observed}
    free = np.array([i for i in range(len(pool)) if i not in done], dtype=int)
    batch = min(settings.proposal_batch, len(free))
    if batch == 0:
        return []
    if settings.strategy == "grid":
        return free[:batch].tolist()
    if settings.strategy == "random":  # one seeded permutation of the pool for the whole run
        order = np.random.default_rng(settings.proposal_seed).permutation(len(pool))
        return [int(i) for i in order if int(i) not in done][:batch]
    rng = np.random.default_rng([settings.proposal_seed, iteration])
    observed = np.asarray(list(observed), dtype=int)
    values, slack = _rows(values, len(observed)), _rows(constraints, len(observed))
    fitted = np.isfinite(values).all(axis=1) & np.isfinite(slack).all(axis=1)
    if fitted.sum() < 2 * pool.shape[1] + 1:  # initial design
        return rng.choice(free, size=batch, replace=False).tolist()
    exact_values = None
    if exact is not None:
        exact_values = np.asarray(exact(pool) if callable(exact) else exact, dtype=float)
        exact_values = exact_values.reshape(len(pool), -1)
    return _bayes(pool, observed[fitted], values[fitted], free, batch, np.asarray(ref_point, dtype=float),
                  exact_values, noisy, rng, slack[fitted])


def _posterior(pool, observed, values, free, noisy):
    """GP posterior mean and standard deviation (normal outputs) at the free points; the front's
    simulated objectives (observations, or the posterior mean there when ``noisy``)."""
    import torch
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    dtype = torch.float64
    X = torch.as_tensor(pool[observed], dtype=dtype)
    Y = torch.as_tensor(values, dtype=dtype)
    gp = SingleTaskGP(X, Y, outcome_transform=Standardize(m=Y.shape[-1]))
    fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp))
    with torch.no_grad():
        post = gp.posterior(torch.as_tensor(pool[free], dtype=dtype))
        mean = post.mean.cpu().numpy()
        std = post.variance.clamp_min(0).sqrt().cpu().numpy()
        front = gp.posterior(X).mean.cpu().numpy() if noisy else values
    return mean, std, front


def _bayes(pool, observed, values, free, batch, ref, exact_values, noisy, rng, slack=None) -> list[int]:
    from scipy.special import ndtr

    s = values.shape[1]
    slack = np.zeros((len(observed), 0)) if slack is None else slack
    c = slack.shape[1]
    if s + c:
        import torch

        torch.manual_seed(int(rng.integers(2**31)))
        # one GP of the simulated objectives and the constraint slacks (independent outputs)
        mean, std, front_all = _posterior(pool, observed, np.hstack([values, slack]), free, noisy)
    else:
        mean = std = np.empty((len(free), 0))
        front_all = np.empty((len(observed), 0))
    std = np.maximum(std, MIN_STD)
    # probability of feasibility of each free point; the front keeps the feasible observations only
    feasible_p = ndtr(-mean[:, s:] / std[:, s:]).prod(axis=1)
    mean, std, front_sim = mean[:, :s], std[:, :s], front_all[:, :s]
    feasible = (slack <= 0).all(axis=1)
    exact_free = exact_values[free] if exact_values is not None else np.empty((len(free), 0))
    front = np.hstack([front_sim, exact_values[observed] if exact_values is not None
                       else np.empty((len(observed), 0))])[feasible]
    # the integration box: from the reference point to the best the front or a candidate (μ + 4σ) may reach
    reach = np.hstack([mean + 4 * std, exact_free])
    upper = np.maximum(np.nanmax(np.vstack([front, reach]), axis=0), ref + 1e-9)
    log2_points = EHVI_POINTS_LOG2
    while log2_points > 8 and len(free) * 2**log2_points > EHVI_MATRIX_ENTRIES:
        log2_points -= 1
    u = ref + sobol_points(len(ref), log2_points, seed=int(rng.integers(2**31))) * (upper - ref)
    u = u[~dominated(u, front)]  # only the region the front does not cover can improve
    order = rng.permutation(len(free))  # ties (e.g. no expected improvement anywhere) broken by the seed
    if len(u) == 0:  # nothing left to improve: the most probably feasible points
        return [int(free[i]) for i in order[np.argsort(-feasible_p[order], kind="stable")][:batch]]
    # gain[i, j]: probability that free point i dominates integration point j
    gain = np.empty((len(free), len(u)), dtype=np.float32)
    for start in range(0, len(free), 64):
        rows = slice(start, start + 64)
        p = (exact_free[rows, None, :] >= u[None, :, s:]).all(axis=2).astype(float)
        for k in range(s):
            p *= ndtr((mean[rows, None, k] - u[None, :, k]) / std[rows, None, k])
        gain[rows] = p * feasible_p[rows, None]
    weight = np.ones(len(u), dtype=np.float32)
    picked: list[int] = []
    for _ in range(batch):
        score = gain @ weight
        if not score.max() > 0:  # no expected improvement left: the most probably feasible points
            score = feasible_p.copy()
        score[picked] = -np.inf
        best = int(order[np.argmax(score[order])])
        picked.append(best)
        weight *= 1.0 - gain[best]
    return [int(free[i]) for i in picked]
