"""Errors in variables: treat the measured composition as uncertain, with its known noise level.

Default ("posterior", regression calibration for a model linear in hat functions; Carroll et al.,
*Measurement Error in Nonlinear Models*, 2nd ed. (2006), ch. 4): the strain is linear in φ_k(X_true),
so the unbiased regressor is E[φ_k(X_true) | x_obs], not φ_k(x_obs). The prior of X_true is the
nonparametric maximum-likelihood deconvolution of the histogram of x_obs with the Gaussian noise
(Kiefer & Wolfowitz, Ann. Math. Stat. 27, 887 (1956); EM on a grid of X in [0, 1]): for a
phase-separating particle it comes out as a mixture with sharp peaks near the end members, which is what
keeps noisy end-member pixels from leaking into the knots next to them. Per pixel,

    p(X | x) ∝ π(X) N(x; X, σ²),   E[φ_k | x] = Σ_j p(g_j | x) φ_k(g_j),   E[X | x] likewise.

Spatial denoising ("nlm", the default of the calibration): non-local means with the known σ
(Buades, Coll & Morel, Multiscale Model. Simul. 4, 490 (2005); scikit-image, filtering parameter
h = 0.8σ as its documentation recommends, 5×5 patches, search distance 6). It keeps the flat end-member
domains flat and the phase boundaries sharp, and on synthetic platelets (σ_X = 0.03) it left the
smallest X error of the denoisers tried (TV with the discrepancy principle below, TV at fractions of
that weight). "tv": total-variation denoising, below.

Noise in the regressor X biases a least-squares law towards zero slope (attenuation) and smears it
across knots. The map of a phase-separating particle is nearly piecewise smooth with sharp phase
boundaries, which total-variation denoising keeps (Rudin, Osher & Fatemi, Physica D 60, 259 (1992);
Chambolle's projection algorithm, J. Math. Imaging Vis. 20, 89 (2004), via scikit-image).

The TV weight is chosen by Morozov's discrepancy principle: the largest weight whose removed part has
the RMS of the noise, mean((X̂ − X)²) = σ², found by bisection in log weight. σ is the file's
``composition_sigma`` or, when absent, the wavelet estimate of Donoho & Johnstone (skimage
``estimate_sigma``).
"""

from __future__ import annotations

import numpy as np


def estimate_noise(x: np.ndarray, mask: np.ndarray) -> float:
    from skimage.restoration import estimate_sigma

    from inverse.registration import _fill_nearest

    return float(estimate_sigma(_fill_nearest(np.where(mask, x, np.nan), mask)))


def denoise_nlm(x: np.ndarray, mask: np.ndarray, sigma) -> np.ndarray:
    """Non-local-means denoised X (H, W) on the mask (NaN outside); sigma scalar or (H, W) (RMS used)."""
    from skimage.restoration import denoise_nl_means

    from inverse.registration import _fill_nearest

    sig = float(np.sqrt(np.mean(np.square(np.broadcast_to(sigma, x.shape)[mask]))))
    filled = _fill_nearest(np.where(mask, x, np.nan), mask)
    out = denoise_nl_means(filled, h=0.8 * sig, sigma=sig, patch_size=5, patch_distance=6, fast_mode=True)
    return np.where(mask, out, np.nan)


def denoise_composition(x: np.ndarray, mask: np.ndarray, sigma,
                        n_bisect: int = 14) -> tuple[np.ndarray, float]:
    """TV-denoised X (H, W) on the mask and the chosen weight; outside the mask NaN.

    sigma: scalar or (H, W) one-σ noise (a map enters through its RMS over the mask).
    """
    from skimage.restoration import denoise_tv_chambolle

    from inverse.registration import _fill_nearest

    sig = float(np.sqrt(np.mean(np.square(np.broadcast_to(sigma, x.shape)[mask]))))
    if sig <= 0:
        return np.where(mask, x, np.nan), 0.0
    filled = _fill_nearest(np.where(mask, x, np.nan), mask)
    target = sig**2

    def removed(weight: float) -> tuple[float, np.ndarray]:
        out = denoise_tv_chambolle(filled, weight=weight)
        return float(np.mean((out - filled)[mask] ** 2)), out

    lo, hi = np.log(sig * 1e-2), np.log(sig * 1e2)
    best = filled
    weight = 0.0
    for _ in range(n_bisect):
        mid = 0.5 * (lo + hi)
        value, out = removed(float(np.exp(mid)))
        if value > target:
            hi = mid
        else:
            lo, best, weight = mid, out, float(np.exp(mid))
    return np.where(mask, best, np.nan), weight


def deconvolved_prior(x: np.ndarray, sigma: float, grid: np.ndarray, n_iter: int = 400) -> np.ndarray:
    """NPMLE weights π_j (J,) of X_true on ``grid`` from samples x (n,) with Gaussian noise σ (EM).

    The samples are binned at σ/10 first (the likelihood varies on the scale σ), so the cost does not
    grow with the pixel count.
    """
    width = sigma / 10.0
    lo, hi = float(x.min()) - width, float(x.max()) + width
    counts, edges = np.histogram(x, bins=max(int(np.ceil((hi - lo) / width)), 1), range=(lo, hi))
    centres = 0.5 * (edges[1:] + edges[:-1])
    keep = counts > 0
    c, xc = counts[keep].astype(float), centres[keep]
    like = np.exp(-0.5 * ((xc[:, None] - grid[None, :]) / sigma) ** 2)  # (B, J)
    w = np.full(grid.size, 1.0 / grid.size)
    total = c.sum()
    for _ in range(n_iter):
        denom = like @ w
        w = w * (like.T @ (c / np.maximum(denom, 1e-300))) / total
    return w / w.sum()


def posterior_hats(x: np.ndarray, sigma: float, knots: np.ndarray, n_grid: int = 201) -> tuple:
    """E[φ_k(X) | x] (n, K) and E[X | x] (n,) for samples x (n,), and the prior (grid, weights)."""
    from inverse.forward import hat_basis

    grid = np.linspace(0.0, 1.0, n_grid)
    prior = deconvolved_prior(x, sigma, grid)
    post = prior[None, :] * np.exp(-0.5 * ((x[:, None] - grid[None, :]) / sigma) ** 2)
    post /= np.maximum(post.sum(axis=1, keepdims=True), 1e-300)
    return post @ hat_basis(grid, knots), post @ grid, (grid, prior)
