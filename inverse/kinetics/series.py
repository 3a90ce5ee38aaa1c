"""The operando image series: model, validation, readers, writers and frame registration.

An image series is one particle imaged repeatedly while it (de)lithiates (Zhao et al., Nature 621, 289
(2023)). Format (``.npz`` read with ``allow_pickle=False``, or ``.h5`` with the same names as datasets;
scalars also accepted as HDF5 attributes):

| name | shape | meaning |
|---|---|---|
| ``composition`` | (T, H, W) float | Li fraction X per frame; NaN outside the particle, or a missing frame |
| ``time_s`` | (T,) float | frame times, finite and strictly increasing |
| ``pixel_size_nm`` | scalar > 0 | pixel pitch |
| ``mask`` | (H, W) bool, optional | particle pixels; default: finite in every frame that is not missing |
| ``current_A_per_m2`` or ``c_rate`` | (T,), optional | current, + lithiation (entry t: interval t → t+1) |
| ``voltage_V`` | (T,), optional | measured cell voltage |
| ``composition_sigma`` | scalar or (H, W), optional | per-pixel one-σ noise of X |
| ``temperature_K``, ``thickness_nm`` | scalars, optional | default 298.15 K and 20 nm |
| ``truth_*`` | optional | ground truth of a synthetic series; never read by a fit |

A missing frame is one with no finite pixel inside the particle; it is kept (its time still counts)
and flagged in :attr:`ImageSeries.missing`. Frames may drift on the detector: :func:`register_frames`
finds each frame's sub-pixel shift from the particle's outline and moves the frames onto the first one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from chemoscreen.io import atomic_files
from mechanics.errors import InputError
from mechanics.parameters.conditions import STANDARD_TEMPERATURE_K

DEFAULT_THICKNESS_NM = 20.0
"""Platelet thickness along b when a series does not give one: the screening default
(``ScreeningSettings.platelet_thickness_nm``), typical of the hydrothermal LFP platelets imaged by
operando scanning transmission X-ray microscopy."""

MIN_FRAMES = 3
"""Fewest frames a series may have: two intervals, one to fit and one to hold out."""

COMPOSITION_TOLERANCE_SIGMAS = 4.0
COMPOSITION_TOLERANCE_MAX = 0.35
"""X may leave [0, 1] by noise: by at most 4 σ_X (a 4σ excursion has a two-sided probability of 6e-5
per pixel) and never by more than 0.35 (5 σ of the σ_X ≈ 0.07 of operando STXM maps), so a file's own
σ cannot wave through values that are not Li fractions at all. Without a σ the tolerance is 0.02."""

_OPTIONAL_PER_FRAME = ("current_A_per_m2", "c_rate", "voltage_V")


@dataclass(frozen=True)
class ImageSeries:
    """One particle's composition movie.

    Attributes:
        composition: (T, H, W) Li fraction X as read: NaN outside the particle as imaged in that frame
            and in missing frames.
        time_s: (T,) frame times (s), strictly increasing.
        mask: (H, W) bool particle pixels.
        pixel_size_nm: pixel pitch (nm).
        current_A_per_m2: (T,) applied current density per frame interval (+ lithiation), or None.
        c_rate: (T,) applied C-rate per frame interval (+ lithiation), or None.
        voltage_V: (T,) measured cell voltage, or None.
        composition_sigma: one-σ noise of X (scalar or (H, W) map), or None.
        temperature_K: temperature (K).
        thickness_nm: platelet thickness along b (nm).
        missing: (T,) bool, frames with no finite particle pixel.
        source: the file it was read from (empty in memory).
        sha256: the file's SHA-256 (empty in memory).
        truth: the ``truth_*`` entries of a synthetic series.
    """

    composition: np.ndarray
    time_s: np.ndarray
    mask: np.ndarray
    pixel_size_nm: float
    current_A_per_m2: np.ndarray | None = None
    c_rate: np.ndarray | None = None
    voltage_V: np.ndarray | None = None
    composition_sigma: float | np.ndarray | None = None
    temperature_K: float = STANDARD_TEMPERATURE_K
    thickness_nm: float = DEFAULT_THICKNESS_NM
    missing: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    source: str = ""
    sha256: str = ""
    truth: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.composition.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.composition.shape[1:])

    def mean_composition(self) -> np.ndarray:
        """(T,) particle-averaged X per frame (NaN for a missing frame)."""
        inside = np.where(self.mask, self.composition, np.nan)
        out = np.full(self.n_frames, np.nan)
        for t in np.flatnonzero(~self.missing):
            out[t] = np.nanmean(inside[t])
        return out


def _scalar(raw: dict, name: str, default: float | None, *, positive: bool) -> float | None:
    if name not in raw or raw[name] is None:
        return default
    value = np.asarray(raw[name])
    if value.size != 1 or value.dtype.kind not in "fiu":
        expected = "a number" + (" > 0" if positive else "")
        raise InputError(name, expected, f"{value.dtype} of shape {value.shape}")
    number = float(value.reshape(()))
    if not np.isfinite(number) or (positive and number <= 0):
        raise InputError(name, "a finite number" + (" > 0" if positive else ""), number)
    return number


def _per_frame(raw: dict, name: str, n_frames: int) -> np.ndarray | None:
    if name not in raw or raw[name] is None:
        return None
    value = np.asarray(raw[name])
    if value.shape != (n_frames,) or value.dtype.kind not in "fiu":
        raise InputError(name, f"a float array of shape ({n_frames},), one value per frame",
                         f"{value.dtype} array of shape {value.shape}")
    value = value.astype(float)
    if name != "voltage_V" and not np.isfinite(value[:-1]).all():
        raise InputError(name, "finite values for every frame interval", "NaN or inf")
    return value


def _sigma(raw: dict, shape: tuple[int, int]) -> float | np.ndarray | None:
    if "composition_sigma" not in raw or raw["composition_sigma"] is None:
        return None
    value = np.asarray(raw["composition_sigma"], dtype=float)
    if value.size == 1:
        number = float(value.reshape(()))
        if not np.isfinite(number) or number <= 0:
            raise InputError("composition_sigma", "a one-σ noise > 0 (scalar or (H, W) map)", number)
        return number
    if value.shape != shape:
        raise InputError("composition_sigma", f"a scalar or an array of shape {shape}",
                         f"shape {value.shape}")
    if not (np.isfinite(value).all() and (value > 0).all()):
        raise InputError("composition_sigma", "finite values > 0 at every pixel", "NaN, inf or values <= 0")
    return value


def composition_tolerance(sigma: float | np.ndarray | None) -> float:
    """How far X may lie outside [0, 1] and still count as noise (see ``COMPOSITION_TOLERANCE_*``)."""
    if sigma is None:
        return 0.02
    return float(min(COMPOSITION_TOLERANCE_SIGMAS * float(np.max(sigma)), COMPOSITION_TOLERANCE_MAX))


def validate_series(raw: dict, source: str = "", sha256: str = "") -> ImageSeries:
    """Check a mapping of arrays against the series format and build the :class:`ImageSeries`.

    Args:
        raw: names of the format (module docstring) to arrays or scalars.
        source: where it was read from (kept for provenance).
        sha256: the file's SHA-256.

    Returns:
        The validated series.

    Raises:
        InputError: naming the field: a missing or mis-shaped array, fewer than 3 frames, NaN or
            non-increasing ``time_s``, no particle pixels, X outside [0, 1] beyond noise, a bad scalar.
    """
    for name in ("composition", "time_s", "pixel_size_nm"):
        if name not in raw:
            raise InputError(name, f"'{name}' in the image series", "missing")
    comp = np.asarray(raw["composition"])
    if comp.ndim != 3 or comp.dtype.kind not in "fiu":
        raise InputError("composition", "a float array of shape (T, H, W)",
                         f"{comp.dtype} of shape {comp.shape}")
    comp = comp.astype(float)
    n_frames, height, width = comp.shape
    if n_frames < MIN_FRAMES:
        raise InputError("composition", f"at least {MIN_FRAMES} frames (T, H, W)", f"{n_frames} frames")
    if height < 3 or width < 3:
        raise InputError("composition", "frames of at least 3 × 3 pixels", f"{height} × {width}")
    time = np.asarray(raw["time_s"])
    if time.shape != (n_frames,) or time.dtype.kind not in "fiu":
        raise InputError("time_s", f"a float array of shape ({n_frames},), one time per frame",
                         f"{time.dtype} array of shape {time.shape}")
    time = time.astype(float)
    if not np.isfinite(time).all():
        raise InputError("time_s", "finite frame times", f"{int((~np.isfinite(time)).sum())} NaN or inf")
    if not (np.diff(time) > 0).all():
        first = int(np.flatnonzero(np.diff(time) <= 0)[0])
        raise InputError("time_s", "strictly increasing frame times",
                         f"time_s[{first + 1}] = {time[first + 1]:g} after time_s[{first}] = {time[first]:g}")
    if np.isinf(comp).any():
        raise InputError("composition", "finite Li fractions, NaN outside the particle or in a missing frame",
                         f"{int(np.isinf(comp).sum())} inf values")
    pixel = _scalar(raw, "pixel_size_nm", None, positive=True)
    finite = np.isfinite(comp)
    missing_default = ~finite.reshape(n_frames, -1).any(axis=1)
    if "mask" in raw and raw["mask"] is not None:
        mask = np.asarray(raw["mask"])
        if mask.shape != (height, width):
            raise InputError("mask", f"a bool array of shape ({height}, {width})", f"shape {mask.shape}")
        mask = mask.astype(bool)
    else:
        present = ~missing_default
        mask = finite[present].all(axis=0) if present.any() else np.zeros((height, width), bool)
    if not mask.any():
        raise InputError("mask", "at least one particle pixel (finite in every frame that is not missing)",
                         "no particle pixels")
    missing = ~(finite & mask).reshape(n_frames, -1).any(axis=1)
    if missing.sum() > n_frames - MIN_FRAMES:
        raise InputError("composition", f"at least {MIN_FRAMES} frames with particle pixels",
                         f"{int(n_frames - missing.sum())}")
    sigma = _sigma(raw, (height, width))
    tol = composition_tolerance(sigma)
    inside = comp[:, mask][np.isfinite(comp[:, mask])]
    if inside.size and (inside.min() < -tol or inside.max() > 1 + tol):
        raise InputError("composition", f"Li fractions in [0, 1] within noise (±{tol:.3g})",
                         f"range [{inside.min():.3g}, {inside.max():.3g}]")
    per_frame = {name: _per_frame(raw, name, n_frames) for name in _OPTIONAL_PER_FRAME}
    if per_frame["current_A_per_m2"] is not None and per_frame["c_rate"] is not None:
        raise InputError("current_A_per_m2", "either current_A_per_m2 or c_rate, not both", "both")
    truth = {k: np.asarray(v) for k, v in raw.items() if k.startswith("truth_")}
    return ImageSeries(
        composition=comp, time_s=time, mask=mask,
        pixel_size_nm=pixel, composition_sigma=sigma, missing=missing,
        temperature_K=_scalar(raw, "temperature_K", STANDARD_TEMPERATURE_K, positive=True),
        thickness_nm=_scalar(raw, "thickness_nm", DEFAULT_THICKNESS_NM, positive=True),
        source=source, sha256=sha256, truth=truth, **per_frame)


def _read(path: Path) -> dict:
    from inverse.images import _read_h5, _read_npz

    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_npz(path)
    if suffix in (".h5", ".hdf5"):
        return _read_h5(path)
    raise InputError("series", "an image series file ending in .npz, .h5 or .hdf5", path.name)


def load_series(path) -> ImageSeries:
    """Read and validate an image series (``.npz`` or ``.h5``).

    Raises:
        InputError: the file is missing, unreadable or violates the format (the field is named).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("series", "an existing image series file (.npz, .h5)", str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        raw = _read(path)
    except InputError as exc:  # the image readers name their own field; here the file is a series
        raise InputError("series", exc.expected, f"{path.name}: {exc.got}") from None
    except Exception as exc:  # truncated or foreign files: zipfile, EOF, HDF5 errors
        raise InputError("series", "a readable .npz or .h5 image series", f"{path.name}: {exc}") from None
    return validate_series(raw, source=str(path), sha256=digest)


def series_mapping(series: ImageSeries) -> dict:
    """The series as the names and arrays of the file format (for writing)."""
    out: dict = {"composition": series.composition, "time_s": series.time_s, "mask": series.mask,
                 "pixel_size_nm": series.pixel_size_nm, "temperature_K": series.temperature_K,
                 "thickness_nm": series.thickness_nm}
    for name in (*_OPTIONAL_PER_FRAME, "composition_sigma"):
        value = getattr(series, name)
        if value is not None:
            out[name] = value
    out.update(series.truth)
    return out


def save_series(series: ImageSeries, path) -> Path:
    """Write a series atomically (a temporary file renamed into place) as ``.npz`` or ``.h5``.

    Raises:
        InputError: (field ``out``) another suffix, or a folder that cannot be written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".h5", ".hdf5"):
        raise InputError("out", "a path ending in .npz, .h5 or .hdf5", path.name)
    data = {k: np.asarray(v) for k, v in series_mapping(series).items()}
    with atomic_files(field="out", make_parents=True) as staging:
        tmp_path = staging.temp(path)
        if suffix == ".npz":
            with open(tmp_path, "wb") as fh:
                np.savez_compressed(fh, **data)
        else:
            import h5py

            with h5py.File(tmp_path, "w") as fh:
                for key, value in data.items():
                    fh.create_dataset(key, data=value)
    return path


@dataclass(frozen=True)
class FrameRegistration:
    """Drift correction of a series.

    Attributes:
        series: the series with every frame moved onto the reference frame (mask: the reference's).
        shifts_px: (T, 2) shift (dy, dx) in pixels applied to each frame (0 for the reference and for
            missing frames).
        reference: index of the reference frame (the first frame that is not missing).
    """

    series: ImageSeries
    shifts_px: np.ndarray
    reference: int


def register_frames(series: ImageSeries) -> FrameRegistration:
    """Remove detector drift: shift every frame so that its particle outline matches the reference's.

    Each frame's support (its finite pixels, the particle as imaged in that frame) is registered to the
    reference frame's by :func:`inverse.registration.mask_shift` (phase correlation, then sub-pixel least
    squares on the smoothed outlines); the outline does not change as lithium moves, so the shift is the
    drift alone. Frames are moved by bilinear interpolation; pixels the shifted frame does not cover
    become NaN.

    Args:
        series: a series whose frames carry NaN outside the particle, as the format asks: each frame's
            finite pixels are its particle outline.

    Returns:
        The :class:`FrameRegistration`.
    """
    from scipy import ndimage

    from inverse.registration import mask_shift

    present = np.flatnonzero(~series.missing)
    reference = int(present[0])
    support = np.isfinite(series.composition)
    ref_support = support[reference]
    shifts = np.zeros((series.n_frames, 2))
    frames = np.full_like(series.composition, np.nan)
    for t in present:
        shift = (0.0, 0.0) if t == reference else mask_shift(ref_support, support[t])
        shifts[t] = shift
        values = np.where(support[t], series.composition[t], 0.0)
        moved = ndimage.shift(values, shift, order=1, mode="constant", cval=0.0)
        weight = ndimage.shift(support[t].astype(float), shift, order=1, mode="constant", cval=0.0)
        frames[t] = np.where(weight > 0.999, moved / np.maximum(weight, 1e-12), np.nan)
    covered = np.isfinite(frames[present]).all(axis=0)
    mask = ref_support & covered
    frames = np.where(mask[None], frames, np.nan)
    return FrameRegistration(replace(series, composition=frames, mask=mask), shifts, reference)
