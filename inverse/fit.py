"""Regularised, noise-weighted linear least squares for the law coefficients, with uncertainty.

Model: y = A θ + noise, weights W = diag(1/σ²). θ holds the knot values of the law (per in-plane axis)
and nuisance offsets. Estimate

    θ̂_λ = argmin (y − Aθ)ᵀ W (y − Aθ) + λ ‖R θ‖²,   R = second divided differences of the knot values
                                                         (ε⁰(0) = 0 included), zero on the nuisances,

with λ chosen by generalized cross-validation (Golub, Heath & Wahba, Technometrics 21, 215 (1979)):

    GCV(λ) = n · RSS_w(λ) / (n − tr H_λ)²,   tr H_λ = tr[(AᵀWA + λRᵀR)⁻¹ AᵀWA].

Everything runs on the normal equations G = AᵀWA (P × P, P ≈ 20-30), so the pixel count only enters
once. Monotone laws: v = s·cumsum(δ), δ ≥ 0, solved as bounded least squares on the Cholesky factor
of G + λRᵀR. Uncertainty: the Laplace (Gaussian posterior) covariance s²(G + λRᵀR)⁻¹ with
s² = max(1, χ²_red) (or χ²_red when σ is unknown), and a spatial block bootstrap (Künsch, Ann. Stat. 17,
1217 (1989)) that resamples image blocks with replacement, which keeps the spatial correlation of the
residuals (PSF, unmodelled defects) that the Laplace estimate ignores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NormalEquations:
    """Sufficient statistics of a weighted linear least-squares problem.

    gram: AᵀWA (P, P); rhs: AᵀWy (P,); ywy: yᵀWy; n_rows: number of observations;
    block_gram (B, P, P) and block_rhs (B, P): the same per spatial block (for the bootstrap).
    """

    gram: np.ndarray
    rhs: np.ndarray
    ywy: float
    n_rows: int
    block_gram: np.ndarray
    block_rhs: np.ndarray


def normal_equations(a: np.ndarray, y: np.ndarray, w: np.ndarray, block: np.ndarray,
                     with_blocks: bool = True, device=None) -> NormalEquations:
    """From rows A (n, P), y (n,), w (n,) and a block id (n,) per row (0..B−1); the per-block sums
    (for the bootstrap) only when ``with_blocks``. ``device``: a torch device to form the products on
    (float64; the GPU of the platelet solves), None for numpy; then ``a`` may already be a tensor there
    (repeated fits with new weights copy it once)."""
    if device is not None:
        return _normal_equations_torch(a, y, w, block, with_blocks, device)
    p = a.shape[1]
    if not with_blocks:
        aw = a * w[:, None]
        return NormalEquations(aw.T @ a, aw.T @ y, float(np.sum(w * y * y)), int(y.size),
                               np.zeros((0, p, p)), np.zeros((0, p)))
    n_blocks = int(block.max()) + 1
    order = np.argsort(block, kind="stable")
    bounds = np.searchsorted(block[order], np.arange(n_blocks + 1))
    bg = np.empty((n_blocks, p, p))
    br = np.empty((n_blocks, p))
    for b in range(n_blocks):  # B ≈ tens to hundreds of blocks, each a (rows × P) product
        rows = order[bounds[b]:bounds[b + 1]]
        a_b = a[rows]  # gathered block by block: cache-sized copies (a whole sorted copy took 2.5×)
        bg[b] = (a_b * w[rows, None]).T @ a_b
        br[b] = a_b.T @ (w[rows] * y[rows])
    # the whole-set sums are the sums of the block sums: no second pass over the rows
    return NormalEquations(bg.sum(axis=0), br.sum(axis=0), float(np.sum(w * y * y)), int(y.size), bg, br)


def _normal_equations_torch(a, y, w, block, with_blocks, device) -> NormalEquations:
    import torch

    kw = {"dtype": torch.float64, "device": device}
    at = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.ascontiguousarray(a), **kw)
    yt, wt = (torch.as_tensor(np.ascontiguousarray(v), **kw) for v in (y, w))
    aw = at * wt[:, None]
    ywy = float((wt * yt * yt).sum())
    p = a.shape[1]
    if not with_blocks:
        return NormalEquations((aw.T @ at).cpu().numpy(), (aw.T @ yt).cpu().numpy(), ywy, int(y.size),
                               np.zeros((0, p, p)), np.zeros((0, p)))
    n_blocks = int(block.max()) + 1
    order = np.argsort(block, kind="stable")
    bounds = np.searchsorted(block[order], np.arange(n_blocks + 1))
    idx = torch.as_tensor(order, device=device)
    a_s, aw_s, y_s = at[idx], aw[idx], yt[idx]
    bg = torch.stack([aw_s[lo:hi].T @ a_s[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])])
    br = torch.stack([aw_s[lo:hi].T @ y_s[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])])
    bg, br = bg.cpu().numpy(), br.cpu().numpy()
    return NormalEquations(bg.sum(axis=0), br.sum(axis=0), ywy, int(y.size), bg, br)


def smoothness_penalty(knots: np.ndarray, n_axes: int, n_params: int) -> np.ndarray:
    """RᵀR (P, P): Σ_axes Σ_k [second divided difference of (0, v_1, ..., v_{K−1}) at knot k]²·Δ̄⁴.

    Scaled by the mean knot spacing to the fourth power so λ is comparable across knot counts.
    """
    k = np.asarray(knots, float)
    n = k.size
    rows = []
    mean_h = np.mean(np.diff(k))
    for j in range(1, n - 1):
        h0, h1 = k[j] - k[j - 1], k[j + 1] - k[j]
        r = np.zeros(n)
        r[j - 1], r[j], r[j + 1] = 2 / (h0 * (h0 + h1)), -2 / (h0 * h1), 2 / (h1 * (h0 + h1))
        rows.append(r[1:] * mean_h**2)  # v_0 = 0 is not a parameter
    d2 = np.array(rows).reshape(-1, n - 1)
    pen = np.zeros((n_params, n_params))
    m = n - 1
    for ax in range(n_axes):
        sl = slice(ax * m, (ax + 1) * m)
        pen[sl, sl] = d2.T @ d2
    return pen


def solve_penalized(gram: np.ndarray, rhs: np.ndarray, penalty: np.ndarray, lam: float) -> np.ndarray:
    return np.linalg.solve(gram + lam * penalty, rhs)


def rss(eq: NormalEquations, theta: np.ndarray) -> float:
    return float(eq.ywy - 2 * theta @ eq.rhs + theta @ eq.gram @ theta)


def gcv_select(eq: NormalEquations, penalty: np.ndarray, n_grid: int = 61) -> dict:
    """λ minimising GCV over a log grid spanning 1e-8…1e4 of tr(G)/tr(RᵀR); returns the curve too."""
    scale = np.trace(eq.gram) / max(np.trace(penalty), 1e-300)
    lambdas = scale * np.logspace(-8, 4, n_grid)
    scores, dofs = [], []
    for lam in lambdas:
        m = eq.gram + lam * penalty
        theta = np.linalg.solve(m, eq.rhs)
        df = float(np.trace(np.linalg.solve(m, eq.gram)))
        scores.append(eq.n_rows * max(rss(eq, theta), 0.0) / (eq.n_rows - df) ** 2)
        dofs.append(df)
    best = int(np.argmin(scores))
    return {"lambda": float(lambdas[best]), "lambdas": lambdas, "gcv": np.array(scores),
            "dof": np.array(dofs), "dof_best": dofs[best]}


def solve_monotone(gram: np.ndarray, rhs: np.ndarray, penalty: np.ndarray, lam: float,
                   signs: np.ndarray, n_law: int) -> np.ndarray:
    """Penalised least squares with each axis' knot values monotone in the direction ``signs``.

    Parameters: θ = [v_axis0 (m), v_axis1 (m), ..., nuisances]; n_law = m·len(signs). Substituting
    v = s·T δ (T = lower-triangular ones) and δ ≥ 0 gives a bound-constrained problem, solved with
    scipy's ``lsq_linear`` on ‖U M δ' − U⁻ᵀ rhs‖² where UᵀU = G + λRᵀR.
    """
    from scipy.optimize import lsq_linear

    p = gram.shape[0]
    n_axes = len(signs)
    m = n_law // n_axes
    transform = np.eye(p)
    tri = np.tril(np.ones((m, m)))
    for ax, s in enumerate(signs):
        sl = slice(ax * m, (ax + 1) * m)
        transform[sl, sl] = s * tri
    mat = gram + lam * penalty
    u = np.linalg.cholesky(mat).T  # mat = Uᵀ U
    target = np.linalg.solve(u.T, rhs)
    lower = np.full(p, -np.inf)
    lower[:n_law] = 0.0
    res = lsq_linear(u @ transform, target, bounds=(lower, np.full(p, np.inf)), method="bvls", tol=1e-12)
    return transform @ res.x


def robust_pixel_weights(r: np.ndarray, n_mad: float = 4.0) -> np.ndarray:
    """Outlier weights per pixel from whitened residual rows r (n_px, 3).

    χ_p = ‖r_p‖; c = median(χ) + n_mad·1.4826·MAD(χ); w_p = 1 for χ_p ≤ c and (c/χ_p)² above (a
    redescending Cauchy-type weight: a pixel k·c away counts 1/k²). Used in iteratively reweighted
    least squares (Holland & Welsch, Commun. Stat. 6, 813 (1977)).
    """
    chi = np.sqrt(np.sum(r * r, axis=1))
    med = np.median(chi)
    c = med + n_mad * 1.4826 * np.median(np.abs(chi - med))
    return np.where(chi <= c, 1.0, np.square(c / np.maximum(chi, c)))


def laplace_covariance(eq: NormalEquations, penalty: np.ndarray, lam: float, scale2: float) -> np.ndarray:
    return scale2 * np.linalg.inv(eq.gram + lam * penalty)


def block_bootstrap(eq: NormalEquations, penalty: np.ndarray, lam: float, n_boot: int,
                    rng: np.random.Generator, solver=None) -> np.ndarray:
    """θ replicates (n_boot, P) from resampling spatial blocks with replacement.

    ``solver(gram, rhs)`` defaults to the penalised solve; pass the monotone one for monotone laws. A
    tiny ridge (1e-10 tr G / P) keeps a replicate solvable when it happens to miss every block of a
    particle's offset.
    """
    n_blocks, p = eq.block_rhs.shape
    ridge = 1e-10 * np.trace(eq.gram) / p * np.eye(p)
    solve = solver or (lambda g, r: solve_penalized(g + ridge, r, penalty, lam))
    out = np.empty((n_boot, p))
    for i in range(n_boot):
        counts = np.bincount(rng.integers(0, n_blocks, n_blocks), minlength=n_blocks).astype(float)
        g = np.tensordot(counts, eq.block_gram, axes=1)
        r = counts @ eq.block_rhs
        out[i] = solve(g + ridge, r)
    return out
