"""Errors in variables: denoise the composition map with its known noise level before the fit.

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
