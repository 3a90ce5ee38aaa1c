"""Ranking of screened candidates: a documented score and the Pareto front.

Objectives (ARCHITECTURE.md §4.4 metric names):

| objective | direction | why |
|---|---|---|
| ``specific_energy_Wh_kg`` | up | energy stored per kg of active material |
| ``peak_tensile_stress_MPa`` | down | coherency stress during (de)lithiation drives fracture |
| ``abs(volume_change_pct)`` | down | volume change strains the electrode and its binder |
| ``safe_window_decades`` | up | decades of C-rate it charges without cracking (``sweep --envelope``) |

Pareto rank: rank 1 is the non-dominated set; rank r + 1 is the non-dominated set of what remains after
removing ranks 1..r (non-dominated sorting, Deb et al. 2002). A candidate dominates another when it is
at least as good in every objective and strictly better in one.

Score: each objective is mapped to a utility in [0, 1] by min-max scaling over the ranked candidates
(1 = best candidate of the set, 0 = worst; an objective with no spread gives every candidate 1), and
``score`` is the weighted mean of the utilities (equal weights by default). The score is therefore
relative to the candidate set: it orders the candidates of one sweep, it is not an absolute merit.
Failed candidates get neither a score nor a Pareto rank.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mechanics.errors import InputError

OBJECTIVES: tuple[tuple[str, int], ...] = (
    ("specific_energy_Wh_kg", +1),
    ("peak_tensile_stress_MPa", -1),
    ("abs_volume_change_pct", -1),
)
DEFAULT_WEIGHTS = (1.0, 1.0, 1.0)


def safe_window_decades(min_safe: float, max_safe: float, lowest: float, highest: float,
                        any_safe: bool = True) -> float:
    """log10(max_safe_C_rate / min_safe_C_rate) of the charge window, open ends (NaN) capped at the scanned
    [lowest, highest]; 0 when no scanned rate is safe. Larger is better: a wider safe range of rates."""
    if not any_safe:
        return 0.0
    lo, hi = (lowest if np.isnan(min_safe) else min_safe), (highest if np.isnan(max_safe) else max_safe)
    return float(np.log10(hi / lo))


def objective_matrix(table: pd.DataFrame) -> np.ndarray:
    """(n, 3) array of objectives oriented so that larger is better."""
    columns = []
    for name, sign in OBJECTIVES:
        if name == "abs_volume_change_pct":
            values = table["volume_change_pct"].to_numpy(dtype=float)
            values = np.abs(values)
        else:
            values = table[name].to_numpy(dtype=float)
        columns.append(sign * values)
    return np.stack(columns, axis=1) if columns else np.zeros((len(table), 0))


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


def rank_candidates(table: pd.DataFrame, weights: Sequence[float] = DEFAULT_WEIGHTS) -> pd.DataFrame:
    """Add ``score`` and ``pareto_rank`` to a table with one row per candidate and sort it.

    ``table`` needs the columns ``specific_energy_Wh_kg``, ``peak_tensile_stress_MPa`` and
    ``volume_change_pct``. The result is sorted by Pareto rank, then score (best first), with a 1-based
    ``rank`` column; unranked (failed) rows come last with ``pareto_rank`` NaN.
    """
    missing = [c for c in ("specific_energy_Wh_kg", "peak_tensile_stress_MPa", "volume_change_pct")
               if c not in table.columns]
    if missing:
        raise InputError("runs", f"metrics {missing} on every candidate run", sorted(table.columns))
    out = table.copy()
    objectives = objective_matrix(out)
    out["score"] = scores(objectives, weights)
    ranks = pareto_ranks(objectives).astype(float)
    ranks[ranks == 0] = np.nan
    out["pareto_rank"] = ranks
    out = out.sort_values(["pareto_rank", "score"], ascending=[True, False], na_position="last")
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out.reset_index(drop=True)
