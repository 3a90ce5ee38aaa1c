"""The fit without the physics: each pixel's rate prefactor from its own composition changes alone.

A pixel's change over interval t is modelled as ΔX_p(t) = k_p ΔX̄(t), the particle's mean change scaled
by its own prefactor (no gradient energy, no coherency, no galvanostatic coupling between pixels, no
chemical potential): k_p = Σ_t ΔX_p ΔX̄ / Σ_t ΔX̄² (least squares). In a phase-separating particle a
pixel's change is set by where the phase boundary is, not by its own prefactor, so this map is what the
PDE-constrained fit has to beat."""

from __future__ import annotations

import numpy as np

from inverse.kinetics.series import ImageSeries, register_frames


def independent_pixel_log_k(series: ImageSeries, denoise_px: float = 1.0) -> np.ndarray:
    """(H, W) log k_p − mean (NaN outside the particle) from independent per-pixel fits."""
    from inverse.kinetics.data import smooth_inside

    reg = register_frames(series)
    inside = np.isfinite(series.composition[reg.reference])
    present = np.flatnonzero(~series.missing)
    frames = np.stack([smooth_inside(reg.series.composition[t], inside, denoise_px) for t in present])
    change = np.diff(frames, axis=0)
    mean_change = np.array([c[inside].mean() for c in change])
    k = np.tensordot(mean_change, change, axes=(0, 0)) / np.sum(mean_change**2)
    log_k = np.log(np.clip(k, 1e-3, None))
    out = np.where(inside, log_k - log_k[inside].mean(), np.nan)
    return out
