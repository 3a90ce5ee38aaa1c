"""Ranking of screened candidates: feasibility, a documented score and the Pareto front.

What a candidate is ranked by (objectives, weights, voltage window, constraints) is a
:class:`screening.objectives.ObjectiveSpec`; its default objectives are usable specific energy (up),
peak tensile stress (down), |volume change| (down), raw-material cost per kWh (down) and supply-risk
HHI (down). Infeasible candidates (capacity outside the voltage window, a violated constraint) stay in
the table with ``feasible=False`` and ``infeasible_reason``, but get neither a score nor a Pareto rank.
``safe_window_decades`` (up: decades of C-rate a candidate charges without cracking, from
``sweep --envelope``; :func:`safe_window_decades`) joins them when chosen.

Pareto rank: rank 1 is the non-dominated set; rank r + 1 is the non-dominated set of what remains after
removing ranks 1..r (non-dominated sorting, Deb et al. 2002). A candidate dominates another when it is
at least as good in every objective and strictly better in one.

Score: each objective is mapped to a utility in [0, 1] by min-max scaling over the feasible ranked
candidates (1 = best candidate of the set, 0 = worst; an objective with no spread gives every candidate
1), and ``score`` is the weighted mean of the utilities. The score is therefore relative to the
candidate set: it orders the candidates of one sweep, it is not an absolute merit. Failed and
infeasible candidates get neither a score nor a Pareto rank.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from mechanics.errors import InputError
from screening.objectives import OBJECTIVES, ObjectiveSpec, evaluate, objective_matrix, weights_alias

DEFAULT_WEIGHTS = (1.0, 1.0, 1.0)


def safe_window_decades(min_safe: float, max_safe: float, lowest: float, highest: float,
                        any_safe: bool = True) -> float:
    """log10(max_safe_C_rate / min_safe_C_rate) of the charge window, open ends (NaN) capped at the scanned
    [lowest, highest]; 0 when no scanned rate is safe. Larger is better: a wider safe range of rates."""
    if not any_safe:
        return 0.0
    lo, hi = (lowest if np.isnan(min_safe) else min_safe), (highest if np.isnan(max_safe) else max_safe)
    return float(np.log10(hi / lo))


def pareto_ranks(objectives: np.ndarray) -> np.ndarray:
    """Non-dominated sorting of ``objectives`` (n, k), larger is better; returns ranks 1, 2, ... (n,).

    Rows with a non-finite entry get rank 0 (unranked). Memory O(n²): fine up to ~10⁴ candidates.
    """
    objectives = np.asarray(objectives, dtype=float)
    n = objectives.shape[0]
    ranks = np.zeros(n, dtype=int)
    valid = np.isfinite(objectives).all(axis=1)
    index = np.flatnonzero(valid)
    if index.size == 0:
        return ranks
    x = objectives[index]
    at_least = (x[:, None, :] >= x[None, :, :]).all(axis=2)
    strictly = (x[:, None, :] > x[None, :, :]).any(axis=2)
    dominates = at_least & strictly  # dominates[i, j]: i dominates j
    remaining = np.ones(index.size, dtype=bool)
    rank = 0
    while remaining.any():
        rank += 1
        dominated = (dominates[remaining][:, remaining]).any(axis=0)
        front = np.flatnonzero(remaining)[~dominated]
        ranks[index[front]] = rank
        remaining[front] = False
    return ranks


def scores(objectives: np.ndarray, weights: Sequence[float] = DEFAULT_WEIGHTS) -> np.ndarray:
    """Weighted mean of min-max utilities (see the module docstring); NaN where an objective is missing."""
    objectives = np.asarray(objectives, dtype=float)
    weights = np.asarray(weights, dtype=float)
    if weights.shape != (objectives.shape[1],) or (weights < 0).any() or weights.sum() <= 0:
        raise InputError("weights", f"{objectives.shape[1]} non-negative numbers with a positive sum",
                         weights.tolist())
    valid = np.isfinite(objectives).all(axis=1)
    score = np.full(objectives.shape[0], np.nan)
    if not valid.any():
        return score
    x = objectives[valid]
    low, high = x.min(axis=0), x.max(axis=0)
    spread = high - low
    utility = np.where(spread > 0, (x - low) / np.where(spread > 0, spread, 1.0), 1.0)
    score[valid] = utility @ weights / weights.sum()
    return score


def rank_candidates(table: pd.DataFrame, weights: Sequence[float] | None = None, *,
                    spec: ObjectiveSpec | None = None) -> pd.DataFrame:
    """Add feasibility, ``score`` and ``pareto_rank`` to a table with one row per candidate and sort it.

    Args:
        table: one row per candidate with its composition as ``x_<metal>`` columns and the columns the
            spec's objectives and constraints read (see :func:`screening.objectives.evaluate`).
        weights: the alias of ``rank --weights``: weights of usable specific energy, peak tensile stress
            and |volume change| (excludes ``spec``).
        spec: objectives, weights, voltage window and constraints (default ``ObjectiveSpec()``).

    Returns:
        The table with the static metrics, ``abs_volume_change_pct``, ``feasible``,
        ``infeasible_reason``, ``score`` and ``pareto_rank``, sorted feasible first by Pareto rank, then
        score (best first), then infeasible, then unranked (failed) rows, with a 1-based ``rank``.

    Raises:
        InputError: both ``weights`` and ``spec``, bad weights, missing columns.
    """
    if weights is not None and spec is not None:
        raise InputError("weights", "either weights (the --weights alias) or spec, not both", weights)
    if spec is None:
        spec = (ObjectiveSpec() if weights is None
                else ObjectiveSpec(objectives=weights_alias(weights, "weights")))
    out = evaluate(table, spec)
    objectives = objective_matrix(out, spec)
    objectives[~out["feasible"].to_numpy(dtype=bool)] = np.nan
    out["score"] = scores(objectives, spec.weights)
    ranks = pareto_ranks(objectives).astype(float)
    ranks[ranks == 0] = np.nan
    out["pareto_rank"] = ranks
    out["_order"] = np.where(np.isfinite(ranks), 0, np.where(out["feasible"], 2, 1))
    out = out.sort_values(["_order", "pareto_rank", "score"], ascending=[True, True, False],
                          na_position="last", kind="stable").drop(columns="_order")
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out.reset_index(drop=True)


def rank_draws(ranked: pd.DataFrame, draws: Mapping[str, np.ndarray], spec: ObjectiveSpec | None = None
               ) -> tuple[pd.DataFrame, np.ndarray]:
    """How sure the ranking is: the ranking repeated in every draw of the simulated metrics.

    In draw d every objective read from ``draws`` takes its draw-d value (the others, e.g. the closed-form
    ones, keep their exact value); infeasible rows stay out (feasibility of the means). Per draw: the
    score (min-max utilities over the feasible rows of that draw), the Pareto front and the top ``top_k``
    by score. Only complete draws count: a draw in which a ranked row has no value (its simulation
    failed in that draw) is left out for every row, so that the comparison stays paired.

    Args:
        ranked: the output of :func:`rank_candidates` (``feasible`` and the objective columns).
        draws: metric column → (n_rows, n_draws) values aligned with ``ranked``'s rows.
        spec: the spec ``ranked`` was ranked with (default ``ObjectiveSpec()``); ``spec.top_k`` is the k
            of ``p_top_k``.

    Returns:
        ``ranked`` with ``score_std`` (sample std over draws, ddof 1), ``p_pareto`` (fraction of draws in
        which the row is non-dominated) and ``p_top_k`` (fraction in which it is among the k best); and
        the (n_rows, n_rows) matrix P[i, j] = fraction of draws in which row i scores above row j.

    Raises:
        InputError: draws of another shape.
    """
    spec = ObjectiveSpec() if spec is None else spec
    top_k = spec.top_k
    n = len(ranked)
    arrays = {k: np.asarray(v, dtype=float) for k, v in draws.items()}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or next(iter(shapes))[0] != n or len(next(iter(shapes))) != 2:
        raise InputError("draws", f"arrays (n_rows={n}, n_draws) of one shape", sorted(shapes))
    base = objective_matrix(ranked, spec)
    infeasible = ~ranked["feasible"].to_numpy(dtype=bool)
    ranked_rows = np.isfinite(ranked["score"].to_numpy(dtype=float))
    complete = np.ones(next(iter(shapes))[1], dtype=bool)
    for array in arrays.values():
        complete &= np.isfinite(array[ranked_rows]).all(axis=0)
    arrays = {k: a[:, complete] for k, a in arrays.items()}
    n_draws = int(complete.sum())
    score_draws = np.full((n_draws, n), np.nan)
    front = np.zeros((n_draws, n))
    top = np.zeros((n_draws, n))
    for d in range(n_draws):
        objectives = base.copy()
        for j, name in enumerate(spec.names):
            objective = OBJECTIVES[name]
            if objective.column in arrays:
                values = arrays[objective.column][:, d]
                objectives[:, j] = objective.direction * (np.abs(values) if objective.absolute else values)
        objectives[infeasible] = np.nan
        score = scores(objectives, spec.weights)
        score_draws[d] = score
        front[d] = pareto_ranks(objectives) == 1
        finite = np.flatnonzero(np.isfinite(score))
        top[d, finite[np.argsort(-score[finite], kind="stable")[:top_k]]] = 1.0
    out = ranked.copy()
    ranked_rows &= n_draws > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.std(score_draws, axis=0, ddof=1) if n_draws > 1 else np.zeros(n)
        out["score_std"] = np.where(ranked_rows, std, np.nan)
        out["p_pareto"] = np.where(ranked_rows, front.mean(axis=0), np.nan)
        out["p_top_k"] = np.where(ranked_rows, top.mean(axis=0), np.nan)
        beats = (score_draws[:, :, None] > score_draws[:, None, :]).mean(axis=0)
    out["draws_ranked"] = n_draws
    return out, beats
