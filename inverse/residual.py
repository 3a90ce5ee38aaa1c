"""Hot spots of the residual strain (measured − model): where the law cannot explain the data.

A residual that the composition law cannot produce is localised (misfit dislocations, cracks, local
composition errors). Score per pixel: s = ‖r‖_F / σ, the Frobenius norm of the residual tensor in units
of the strain noise, smoothed with a one-pixel Gaussian (suppresses single noisy pixels). Hot spots are
local maxima of s at least ``min_distance`` pixels apart that exceed median(s) + ``n_sigma``·1.4826·MAD(s)
(a robust outlier threshold), ranked by score.
"""

from __future__ import annotations

import numpy as np


def residual_score(residual: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Smoothed ‖r‖_F/σ (H, W), zero outside the mask; residual (H, W, 2, 2)."""
    from scipy import ndimage

    norm = np.sqrt(np.sum(residual**2, axis=(-1, -2))) / max(float(sigma), 1e-300)
    m = mask.astype(float)
    num = ndimage.gaussian_filter(norm * m, 1.0)
    den = ndimage.gaussian_filter(m, 1.0)
    return np.where(mask, num / np.maximum(den, 1e-12), 0.0)


def find_hotspots(residual: np.ndarray, mask: np.ndarray, sigma: float, n_sigma: float = 6.0,
                  min_distance: int = 4, max_spots: int = 50) -> list[dict]:
    """Hot spots as ``[{"row", "col", "score"}]`` (pixel indices; score in units of σ)."""
    from skimage.feature import peak_local_max

    score = residual_score(residual, mask, sigma)
    values = score[mask]
    med = np.median(values)
    mad = 1.4826 * np.median(np.abs(values - med))
    threshold = med + n_sigma * max(mad, 1e-12)
    peaks = peak_local_max(score, min_distance=min_distance, threshold_abs=threshold,
                           num_peaks=max_spots, exclude_border=False, labels=mask.astype(int))
    return [{"row": int(r), "col": int(c), "score": float(score[r, c])} for r, c in peaks]
