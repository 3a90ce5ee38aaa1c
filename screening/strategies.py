"""Which compositions to simulate next: ``grid``, ``random`` or ``bayes`` (multi-objective BoTorch).

The strategies choose from a pool of compositions (points of the simplex of M-site fractions, e.g. a fine
grid or seeded Dirichlet points) given the objectives observed so far, oriented larger-is-better as in
:func:`screening.objectives.objective_matrix`:

- ``grid``: the pool in its order (an exhaustive sweep, cut at the budget);
- ``random``: a seeded random permutation of the pool;
- ``bayes``: a Gaussian-process surrogate (BoTorch ``SingleTaskGP``, one output per *simulated*
  objective, outputs standardised) of the simulated objectives over the composition coordinates, the
  closed-form objectives (usable energy, cost, supply risk) appended exactly to every posterior sample
  (a multi-output MC objective), and the next batch chosen by expected hypervolume improvement
  (``qLogEHVI``; the noisy ``qLogNEHVI`` when the observations are means over draws) over the unobserved
  pool points
  (sequential greedy, ``optimize_acqf_discrete``). Until 2·d + 1 points (d coordinates) are observed
  it proposes random points (the initial design).

The reference point of the hypervolume is given by the caller in the oriented objective space
(e.g. the worst value of each objective over the pool minus a margin, after normalising each objective
by its range). Proposals are reproducible from ``seed`` (``--proposal-seed``).

This module chooses; it neither simulates nor logs (the sweep path does both).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mechanics.errors import InputError

STRATEGIES = ("grid", "random", "bayes")


@dataclass(frozen=True)
class StrategySettings:
    """How a sweep chooses what to simulate.

    Fields: strategy (``grid``, ``random``, ``bayes``); budget: simulations in all; proposal_batch:
    compositions per iteration; proposal_seed: seed of the random choices (initial design, MC samples).
    """

    strategy: str = "grid"
    budget: int = 64
    proposal_batch: int = 8
    proposal_seed: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InputError("--strategy", f"one of {', '.join(STRATEGIES)}", self.strategy)
        for name, flag in (("budget", "--budget"), ("proposal_batch", "--proposal-batch")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(flag, "a positive integer", value)
        if self.budget < self.proposal_batch:
            raise InputError("--budget", f"at least --proposal-batch ({self.proposal_batch}) simulations",
                             self.budget)
        if isinstance(self.proposal_seed, bool) or not isinstance(self.proposal_seed, (int, np.integer)):
            raise InputError("--proposal-seed", "an integer", self.proposal_seed)


def hypervolume(points: np.ndarray, ref_point: Sequence[float]) -> float:
    """Hypervolume dominated by ``points`` (n, k), larger is better, above ``ref_point`` (k,) (BoTorch)."""
    import torch
    from botorch.utils.multi_objective.hypervolume import Hypervolume
    from botorch.utils.multi_objective.pareto import is_non_dominated

    y = torch.as_tensor(np.asarray(points, dtype=float), dtype=torch.float64)
    ref = torch.as_tensor(np.asarray(ref_point, dtype=float), dtype=torch.float64)
    y = y[torch.isfinite(y).all(dim=-1) & (y > ref).all(dim=-1)]
    if y.shape[0] == 0:
        return 0.0
    return float(Hypervolume(ref).compute(y[is_non_dominated(y)]))


def propose(
    settings: StrategySettings,
    pool: np.ndarray,
    observed: Sequence[int],
    values: np.ndarray | None,
    *,
    ref_point: Sequence[float],
    exact: Callable[[np.ndarray], np.ndarray] | None = None,
    noisy: bool = False,
    iteration: int = 0,
) -> list[int]:
    """Indices into ``pool`` of the next ``settings.proposal_batch`` compositions to simulate.

    Args:
        settings: the strategy, batch and seed.
        pool: (m, d) composition coordinates to choose from.
        observed: indices of the pool points simulated so far.
        values: (len(observed), s) simulated objectives of those points, larger is better (None when
            nothing is observed).
        ref_point: (s + e,) hypervolume reference point, simulated objectives first, then the exact ones.
        exact: ``exact(X) -> (n, e)`` closed-form objectives of coordinates X (larger is better), or None.
        noisy: the observations are means over draws (``--samples`` > 1): use the noisy acquisition.
        iteration: the iteration number (mixes into the seed so that each iteration draws afresh).

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
    if len(done) < 2 * pool.shape[1] + 1:  # initial design
        return rng.choice(free, size=batch, replace=False).tolist()
    return _bayes(pool, np.asarray(list(observed), dtype=int), np.asarray(values, dtype=float), free, batch,
                  ref_point, exact, noisy, int(rng.integers(2**31)))


def _bayes(pool, observed, values, free, batch, ref_point, exact, noisy, seed) -> list[int]:
    import torch
    from botorch.acquisition.multi_objective.logei import (
        qLogExpectedHypervolumeImprovement,
        qLogNoisyExpectedHypervolumeImprovement,
    )
    from botorch.acquisition.multi_objective.objective import GenericMCMultiOutputObjective
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from botorch.optim import optimize_acqf_discrete
    from botorch.sampling import SobolQMCNormalSampler
    from botorch.utils.multi_objective.box_decompositions.non_dominated import FastNondominatedPartitioning
    from gpytorch.mlls import ExactMarginalLogLikelihood

    torch.manual_seed(seed)
    dtype = torch.float64
    X = torch.as_tensor(pool[observed], dtype=dtype)
    Y = torch.as_tensor(values, dtype=dtype)
    gp = SingleTaskGP(X, Y, outcome_transform=Standardize(m=Y.shape[-1]))
    fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp))
    objective = None
    full_Y = Y
    if exact is not None:
        e = np.asarray(exact(pool[:1]), dtype=float).shape[-1]

        def exact_torch(x: torch.Tensor) -> torch.Tensor:
            flat = x.detach().reshape(-1, x.shape[-1]).cpu().numpy()
            out = np.asarray(exact(flat), dtype=float).reshape(*x.shape[:-1], e)
            return torch.as_tensor(out, dtype=x.dtype, device=x.device)

        def append_exact(samples: torch.Tensor, X: torch.Tensor | None = None) -> torch.Tensor:
            # samples (..., q, s) of the GP; the closed-form objectives of X are the same in every sample
            known = exact_torch(X).expand(*samples.shape[:-1], e)
            return torch.cat([samples, known], dim=-1)

        objective = GenericMCMultiOutputObjective(append_exact)
        full_Y = torch.cat([Y, exact_torch(X)], dim=-1)
    ref = torch.as_tensor(np.asarray(ref_point, dtype=float), dtype=dtype)
    sampler = SobolQMCNormalSampler(sample_shape=torch.Size([128]), seed=seed)
    if noisy:
        acq = qLogNoisyExpectedHypervolumeImprovement(gp, ref, X_baseline=X, sampler=sampler,
                                                      objective=objective, prune_baseline=True)
    else:
        partitioning = FastNondominatedPartitioning(ref_point=ref, Y=full_Y)
        acq = qLogExpectedHypervolumeImprovement(gp, ref, partitioning, sampler=sampler, objective=objective)
    choices = torch.as_tensor(pool[free], dtype=dtype)
    chosen, _ = optimize_acqf_discrete(acq, q=batch, choices=choices, unique=True)
    picked: list[int] = []
    for row in chosen.cpu().numpy():
        index = int(free[np.argmin(np.abs(pool[free] - row).sum(axis=1))])
        if index not in picked:
            picked.append(index)
    return picked
