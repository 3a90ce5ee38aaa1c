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


def _to_strain_grid(field: np.ndarray, images: ImageSet, shift: tuple[float, float] | None):
    """Resample (if needed) and shift a composition-grid field; returns (field, covered mask, shift)."""
    from scipy import ndimage

    resampled = images.composition_pixel_size_nm is not None and (
        field.shape != images.shape or images.composition_pixel_size_nm != images.pixel_size_nm
    )
    if resampled:
        field = _resample(field, images.composition_pixel_size_nm, images.pixel_size_nm, images.shape)
    valid = np.isfinite(field)
    if not valid.any():
        raise InputError("composition", "a particle that overlaps the strain field of view", "no overlap")
    if shift is None:
        shift = mask_shift(images.mask, valid)
    shifted = ndimage.shift(_fill_nearest(field, valid), shift, order=1, mode="nearest")
    covered = ndimage.shift(valid.astype(float), shift, order=1, mode="constant", cval=0.0) >= 0.5
    ok = covered & images.mask
    out = np.where(images.mask, _fill_nearest(np.where(ok, shifted, np.nan), ok), np.nan)
    return out, ok, shift, resampled


def align_composition(images: ImageSet, shift: tuple[float, float] | None = None) -> Registration:
    """Composition on the strain grid, registered to the particle mask (see module docstring).

    ``shift`` (dy, dx) in strain pixels skips the search and applies a known shift (e.g. the one found
    for the same image set before).
    """
    out, ok, (dy, dx), resampled = _to_strain_grid(images.composition, images, shift)
    if ok.sum() < 0.5 * images.mask.sum():
        raise InputError(
            "composition", "a map that covers most of the particle after registration",
            f"{int(ok.sum())} of {int(images.mask.sum())} pixels",
        )
    p = images.pixel_size_nm
    return Registration(
        composition=out,
        shift_px=(float(dy), float(dx)),
        shift_nm=(float(dy) * p, float(dx) * p),
        n_filled=int((images.mask & ~ok).sum()),
        resampled=bool(resampled),
    )


def field_to_strain_grid(field: np.ndarray, images: ImageSet, registration: Registration) -> np.ndarray:
    """Any map on the composition grid (NaN outside the particle) put on the strain grid with the
    registration's shift, filled on the particle, NaN outside."""
    return _to_strain_grid(field, images, registration.shift_px)[0]
