"""From an image series to the intervals the kinetics fit shoots over: registration, the simulated
domain, the noise level, denoised start frames, the galvanostatic current of every step, held-out
intervals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from inverse.kinetics.model import Domain, Intervals, Physics
from inverse.kinetics.series import ImageSeries, register_frames
from mechanics.errors import InputError

START_CLIP = 0.01
"""Start frames are clipped to [0.01, 0.99]: the entropy term of μ_h diverges at X = 0 and 1, and a
denoised X of 0 or 1 is noise, not a pure phase."""


@dataclass(frozen=True)
class PreparedSeries:
    """One series made ready for the fit.

    Attributes:
        series: the series as given.
        frames: (T, H, W) registered frames (NaN outside the particle and where a moved frame has no data).
        shifts_px: (T, 2) registration shifts (dy, dx).
        domain: the simulated box and mask.
        sigma: (h, w) one-σ noise of X on the box (given, or estimated).
        sigma_estimated: whether σ was estimated from the frames.
        physics: the fixed physics at the series' temperature and thickness.
        intervals: every interval between consecutive present frames.
        holdout: (B,) bool, the intervals held out from the fit.
    """

    series: ImageSeries
    frames: np.ndarray
    shifts_px: np.ndarray
    domain: Domain
    sigma: np.ndarray
    sigma_estimated: bool
    physics: Physics
    intervals: Intervals
    holdout: np.ndarray


def smooth_inside(frame: np.ndarray, inside: np.ndarray, sigma_px: float) -> np.ndarray:
    """Normalised Gaussian smoothing of the finite pixels of ``frame`` within ``inside`` (values at other
    pixels of ``inside`` are filled from their neighbours)."""
    from scipy import ndimage

    ok = inside & np.isfinite(frame)
    if sigma_px <= 0:
        out = np.where(ok, frame, np.nan)
    else:
        num = ndimage.gaussian_filter(np.where(ok, frame, 0.0), sigma_px, mode="constant")
        den = ndimage.gaussian_filter(ok.astype(float), sigma_px, mode="constant")
        out = num / np.maximum(den, 1e-12)
    fill = inside & ~np.isfinite(out)
    if fill.any():
        out[fill] = np.nanmean(out[inside])
    return out


def estimate_sigma(frames: np.ndarray, inside: np.ndarray, present: np.ndarray) -> float:
    """σ_X from the pixel-to-pixel differences of the present frames: the median absolute horizontal
    difference /(0.6745 √2) (robust to interfaces, which are few pixels)."""
    diffs = []
    for t in np.flatnonzero(present):
        f = np.where(inside, frames[t], np.nan)
        d = f[:, 1:] - f[:, :-1]
        diffs.append(d[np.isfinite(d)])
    d = np.concatenate(diffs)
    return float(np.median(np.abs(d)) / (0.6745 * np.sqrt(2.0)))


def step_currents(series: ImageSeries, physics: Physics, start: int, end: int, n_steps: int) -> np.ndarray:
    """(n_steps,) ⟨∂c/∂t⟩ (s⁻¹) of the fixed steps from frame ``start`` to ``end``: the per-interval
    ``c_rate`` (C/3600) or ``current_A_per_m2`` (two faces), else the observed change of the mean X."""
    t = series.time_s
    if series.c_rate is not None:
        per_interval = series.c_rate / 3600.0
    elif series.current_A_per_m2 is not None:
        per_interval = series.current_A_per_m2 * physics.rate_per_A_m2
    else:
        x = series.mean_composition()
        rate = (x[end] - x[start]) / (t[end] - t[start])
        return np.full(n_steps, rate)
    mids = t[start] + (np.arange(n_steps) + 0.5) * (t[end] - t[start]) / n_steps
    which = np.clip(np.searchsorted(t, mids, side="right") - 1, start, end - 1)
    return per_interval[which]


def prepare(
    series: ImageSeries, *, n_steps: int, holdout_every: int, denoise_px: float, dtype: torch.dtype,
    voltage_sigma_V: float | None = None,
) -> PreparedSeries:
    """Register, choose the domain and σ, and build the intervals of one series; ``voltage_sigma_V``: σ of
    the measured cell voltage (None: the voltage, if any, is not used).

    Raises:
        InputError: (field ``composition``) fewer than 3 present frames after registration, or no
            interval left to fit once every ``holdout_every``-th is held out.
    """
    reg = register_frames(series)
    frames = reg.series.composition
    present = ~series.missing
    domain_full = np.isfinite(series.composition[reg.reference])  # the particle as the reference images it
    domain = Domain.of(domain_full, series.pixel_size_nm)
    box = (slice(None), domain.rows, domain.cols)
    inside = domain.mask
    boxed = frames[box]
    if series.composition_sigma is None:
        sigma = np.full(domain.shape, estimate_sigma(boxed, inside, present))
        estimated = True
    else:
        sig = np.asarray(series.composition_sigma, float)
        sigma = np.full(domain.shape, float(sig)) if sig.ndim == 0 else sig[domain.rows, domain.cols]
        estimated = False
    physics = Physics.lfp(series.temperature_K, series.thickness_nm)
    idx = np.flatnonzero(present)
    if idx.size < 3:
        raise InputError("composition", "at least 3 frames with particle pixels after registration", idx.size)
    starts, targets, weights, dts, currents, ends = [], [], [], [], [], []
    observed_starts, start_weights, volts, volt_weights = [], [], [], []
    voltage = series.voltage_V if voltage_sigma_V is not None else None
    for a, b in zip(idx[:-1], idx[1:]):
        measured = voltage is not None and bool(np.isfinite(voltage[a]))
        volts.append(float(voltage[a]) if measured else 0.0)
        volt_weights.append(1.0 / voltage_sigma_V if measured else 0.0)
        starts.append(np.clip(smooth_inside(boxed[a], inside, denoise_px), START_CLIP, 1 - START_CLIP))
        first = np.where(inside, boxed[a], np.nan)
        observed_starts.append(np.nan_to_num(first))
        start_weights.append(np.where(np.isfinite(first), 1.0 / sigma, 0.0))
        target = np.where(inside, boxed[b], np.nan)
        targets.append(target)
        weights.append(np.where(np.isfinite(target), 1.0 / sigma, 0.0))
        dts.append((series.time_s[b] - series.time_s[a]) / n_steps)
        currents.append(step_currents(series, physics, a, b, n_steps))
        ends.append(b)
    n = len(ends)
    holdout = (np.arange(n) % holdout_every) == holdout_every - 1 if holdout_every > 1 else np.zeros(n, bool)
    if holdout.all() or not holdout.any():
        raise InputError(
            "composition",
            f"enough frames for fitted and held-out intervals (holdout_every={holdout_every})",
            f"{n} intervals",
        )
    as_t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype)  # noqa: E731
    intervals = Intervals(
        start=as_t(starts),
        target=as_t(np.nan_to_num(targets)),
        weight=as_t(weights),
        dt_s=as_t(dts),
        currents_per_s=as_t(currents),
        index=np.asarray(ends),
        series=np.zeros(n, int),
        start_observed=as_t(observed_starts),
        start_weight=as_t(start_weights),
        start_voltage_V=as_t(volts),
        voltage_weight=as_t(volt_weights),
    )
    return PreparedSeries(
        series, frames, reg.shifts_px, domain, sigma, estimated, physics, intervals, holdout
    )
