"""Stage 4 of the calibration: the final coefficients (monotone re-solve where asked), their Laplace
covariance and spatial block bootstrap (:mod:`inverse.fit`), and the Vegard slopes of the learned law
with their standard deviations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inverse import fit as lsq
from inverse.linear import LinearFit
from inverse.result import VegardSlopes
from inverse.settings import CalibrationSettings


@dataclass(frozen=True)
class Uncertainty:
    """theta (P,): the final coefficients (law, offsets, dislocations); chi2_reduced: weighted residual
    sum of squares per degree of freedom; covariance (P, P): Laplace covariance s²(AᵀWA + λRᵀR)⁻¹ with
    s² = max(1, χ²_red) when every strain σ is known (χ²_red otherwise); laplace_std, bootstrap_std (P,):
    its diagonal's square root and the spread of the bootstrap replicates (0 without a bootstrap);
    replicates (n_bootstrap, P) or None."""

    theta: np.ndarray
    chi2_reduced: float
    covariance: np.ndarray
    laplace_std: np.ndarray
    bootstrap_std: np.ndarray
    replicates: np.ndarray | None


def estimate_uncertainty(fitted: LinearFit, knots: np.ndarray, n_law: int, settings: CalibrationSettings,
                         known_sigma: bool) -> Uncertainty:
    """Laplace covariance and block bootstrap of the last linear fit.

    Args:
        fitted: the fit of the last round; knots: (K,); n_law: the law's 2(K−1) coefficients.
        settings: ``monotone``, ``n_bootstrap`` and ``seed`` are used.
        known_sigma: every image set states its strain σ (then s² is at least 1).

    Returns:
        The :class:`Uncertainty`.
    """
    m = n_law // 2
    eq, theta = fitted.fit.equations, fitted.theta
    penalty = lsq.smoothness_penalty(knots, 2, fitted.a.shape[1])
    lam = fitted.fit.gcv["lambda"]
    signs = np.sign(theta[[m - 1, 2 * m - 1]])
    signs[signs == 0] = 1.0
    if settings.monotone:
        theta = lsq.solve_monotone(eq.gram, eq.rhs, penalty, lam, signs, n_law)
    resid_w = max(lsq.rss(eq, theta), 0.0)
    dof = eq.n_rows - fitted.fit.gcv["dof_best"]
    chi2 = resid_w / dof
    scale2 = max(1.0, chi2) if known_sigma else chi2
    cov = lsq.laplace_covariance(eq, penalty, lam, scale2)

    rng = np.random.default_rng(settings.seed)
    if settings.n_bootstrap > 0:
        solve = None
        if settings.monotone:
            def solve(g, r):
                return lsq.solve_monotone(g, r, penalty, lam, signs, n_law)
        reps = lsq.block_bootstrap(eq, penalty, lam, settings.n_bootstrap, rng, solve)
        boot_std = reps.std(axis=0, ddof=1)
    else:
        reps = None
        boot_std = np.zeros_like(theta)
    lap_std = np.sqrt(np.clip(np.diag(cov), 0, None))
    return Uncertainty(theta, chi2, cov, lap_std, boot_std, reps)


def per_axis(vec: np.ndarray, n_law: int) -> np.ndarray:
    """The law's coefficients of ``vec`` as (2, K) values at the knots, ε⁰(0) = 0 prepended."""
    m = n_law // 2
    return np.concatenate([np.zeros((2, 1)), vec[:n_law].reshape(2, m)], axis=1)


def vegard_slopes(values: np.ndarray, knots: np.ndarray, unc: Uncertainty, n_law: int) -> VegardSlopes:
    """Least-squares slopes through the origin of ``values`` (2, K) over the knots; each σ is the larger
    of the Laplace and bootstrap ones."""
    m = n_law // 2
    g = knots / np.sum(knots**2)
    slopes = values @ g
    cov = unc.covariance
    slope_std = []
    for ax in range(2):
        grad = np.zeros(cov.shape[0])
        grad[ax * m:(ax + 1) * m] = g[1:]
        var = grad @ cov @ grad
        if unc.replicates is not None:
            var = max(var, float(np.var(unc.replicates @ grad, ddof=1)))
        slope_std.append(float(np.sqrt(var)))
    return VegardSlopes(
        slope_a=float(slopes[0]), slope_c=float(slopes[1]),
        slope_a_std=slope_std[0], slope_c_std=slope_std[1],
        max_deviation=float(np.max(np.abs(values - slopes[:, None] * knots[None, :]))),
    )
