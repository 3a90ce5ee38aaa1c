"""Put the composition map on the strain grid: resample, then register the particle masks.

1. Resample: a composition map with its own pitch p_X is interpolated (bilinear, after a Gaussian
   anti-alias of σ = ½·p_s/p_X pixels when it is finer) at the strain pixel centres; both fields of view
   start at the same corner, so strain pixel k sits at composition index (k + ½)·p_s/p_X − ½.
2. Register: the shift between the two particle masks from scikit-image phase correlation (integer
   peak, then the upsampled-DFT sub-pixel estimate of Guizar-Sicairos et al., Opt. Lett. 33, 156 (2008)),
   refined by least squares between the two masks smoothed with a one-pixel Gaussian.
3. Apply the shift (bilinear) and fill particle pixels that the shifted map does not cover from their
   nearest covered neighbour (reported as ``n_filled``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inverse.images import ImageSet
from mechanics.errors import InputError


@dataclass(frozen=True)
class Registration:
    """Result of putting composition on the strain grid.

    Fields: composition (H, W) on the strain grid (finite on the mask); shift_px (dy, dx) applied to the
    resampled composition map in strain pixels; shift_nm likewise in nm; n_filled: mask pixels filled
    from neighbours; resampled: whether the composition had its own grid.
    """

    composition: np.ndarray
    shift_px: tuple[float, float]
    shift_nm: tuple[float, float]
    n_filled: int
    resampled: bool


def _resample(comp: np.ndarray, comp_pixel_nm: float, pixel_nm: float, shape) -> np.ndarray:
    from scipy import ndimage

    valid = np.isfinite(comp)
    filled = _fill_nearest(comp, valid)
    ratio = pixel_nm / comp_pixel_nm
    if ratio > 1:  # composition finer than strain: anti-alias
        weight = ndimage.gaussian_filter(valid.astype(float), 0.5 * ratio)
        smooth = ndimage.gaussian_filter(np.where(valid, filled, 0.0), 0.5 * ratio)
        filled = smooth / np.maximum(weight, 1e-12)
        filled = np.where(weight > 1e-6, filled, _fill_nearest(comp, valid))
        valid_f = weight
    else:
        valid_f = valid.astype(float)
    rows = (np.arange(shape[0]) + 0.5) * ratio - 0.5
    cols = (np.arange(shape[1]) + 0.5) * ratio - 0.5
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    values = ndimage.map_coordinates(filled, [rr, cc], order=1, mode="nearest")
    inside = ndimage.map_coordinates(valid_f, [rr, cc], order=1, mode="constant", cval=0.0) >= 0.5
    return np.where(inside, values, np.nan)


def _fill_nearest(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    if valid.all():
        return values.copy()
    idx = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
    return values[tuple(idx)]


def mask_shift(reference: np.ndarray, moving: np.ndarray) -> tuple[float, float]:
    """Shift (dy, dx) in pixels that moves ``moving`` onto ``reference`` (both boolean masks)."""
    from scipy import ndimage, optimize
    from skimage.registration import phase_cross_correlation

    ref = reference.astype(float)
    mov = moving.astype(float)
    coarse, _, _ = phase_cross_correlation(ref, mov, upsample_factor=20, normalization=None)
    ref_s = ndimage.gaussian_filter(ref, 1.0)
    mov_s = ndimage.gaussian_filter(mov, 1.0)

    def misfit(shift):
        moved = ndimage.shift(mov_s, shift, order=3, mode="constant", cval=0.0)
        return moved.ravel() - ref_s.ravel()

    fine = optimize.least_squares(misfit, x0=np.asarray(coarse, float), diff_step=1e-3)
    shift = fine.x if fine.success and np.all(np.abs(fine.x - coarse) < 1.0) else coarse
    return float(shift[0]), float(shift[1])


def align_composition(images: ImageSet) -> Registration:
    """Composition on the strain grid, registered to the particle mask (see module docstring)."""
    from scipy import ndimage

    comp = images.composition
    resampled = images.composition_pixel_size_nm is not None and (
        comp.shape != images.shape or images.composition_pixel_size_nm != images.pixel_size_nm
    )
    if resampled:
        comp = _resample(comp, images.composition_pixel_size_nm, images.pixel_size_nm, images.shape)
    comp_mask = np.isfinite(comp)
    if not comp_mask.any():
        raise InputError("composition", "a particle that overlaps the strain field of view", "no overlap")
    dy, dx = mask_shift(images.mask, comp_mask)
    filled = _fill_nearest(comp, comp_mask)
    shifted = ndimage.shift(filled, (dy, dx), order=1, mode="nearest")
    covered = ndimage.shift(comp_mask.astype(float), (dy, dx), order=1, mode="constant", cval=0.0) >= 0.5
    ok = covered & images.mask
    if ok.sum() < 0.5 * images.mask.sum():
        raise InputError(
            "composition", "a map that covers most of the particle after registration",
            f"{int(ok.sum())} of {int(images.mask.sum())} pixels",
        )
    out = np.where(ok, shifted, np.nan)
    out = np.where(images.mask, _fill_nearest(out, ok), np.nan)
    p = images.pixel_size_nm
    return Registration(
        composition=out,
        shift_px=(dy, dx),
        shift_nm=(dy * p, dx * p),
        n_filled=int((images.mask & ~ok).sum()),
        resampled=bool(resampled),
    )
