"""Synthetic operando image series with known kinetics: the ground truth for the kinetics fit.

A LiFePO4 platelet (the a–c plane, no-flux edges) is (de)lithiated galvanostatically by the project's
Allen-Cahn-reaction model (``mechanics.phasefield.reaction``) on a grid ``oversample`` times finer than
the images, with

- a homogeneous chemical potential μ_h(X) = kT ln(X/(1−X)) + Ω(1−2X) + 2A·X(1−X)(1−2X): the regular
  solution of the LFP reference set plus a smooth correction of amplitude A (``mu_correction_meV``,
  from the density A·ρ_s·X²(1−X)², which keeps μ_h odd about X = ½ and leaves the end points alone);
- one of the rate laws of :data:`mechanics.phasefield.reaction.RATE_LAWS` (``rate_law``): ideal
  Butler–Volmer with the exchange current k₀(X) = k₀·X^α(1−X)^(1−α) (k₀ and α of the reference set,
  the default), Bazant's activity Butler–Volmer (k₀(X) = k₀(1−X)·e^{αμ_h(X)/kT} in a homogeneous
  state) or coupled ion–electron transfer (k₀(X) = k₀(1−X), Marcus–Hush–Chidsey electron transfer with
  λ = 8.3 kT), times a spatial prefactor k(r): a smooth, coating-like field whose largest and smallest
  values differ by ``k_range`` (a factor 3 by default), normalised to mean 1 over the particle, or a
  user map;
- coherency strain through the Khachaturyan kernel of the platelet (plane stress, Vegard misfit);
- a multi-rate protocol: the frames are split evenly over the segments of ``c_rates`` (+ lithiation,
  − delithiation), so that fast segments reach overpotentials where the rate laws differ.

The frames are then averaged down to the image pixels, blurred (Gaussian PSF), moved by a random
drift, given Gaussian noise of σ_X and NaN outside the particle, and one frame is blanked (missing).
The cell voltage at every frame (the missing one included) is the particle's reservoir potential,
V = V₀ − μ_res/e with V₀ = 3.43 V where the model's μ vanishes (the LFP plateau), solved from the
frame's state under the current that flows after it, plus Gaussian noise of ``voltage_sigma_mV``.
The truth goes under ``truth_*``: ``truth_composition`` (noise-free frames on the image grid, no drift),
``truth_log_k`` (H, W), ``truth_X``, ``truth_mu_h_eV`` (the model's μ_h, 0 at X = ½) and
``truth_k0_A_per_m2`` on ``truth_X``, ``truth_voltage_zero_V`` (V₀: μ_h against Li/Li⁺ is
``truth_mu_h_eV − V₀``), ``truth_shifts_px`` (T, 2), ``truth_missing_frame`` and ``truth_rate_law``
(the law's name, bytes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch

from inverse.kinetics.series import ImageSeries, validate_series
from mechanics.errors import InputError
from mechanics.phasefield.reaction import RATE_LAWS

MARGIN_PX = 4  # empty pixels around the particle, so that its outline (and the drift) is visible


def _rates(text: str) -> tuple[float, ...]:
    """``"2,20,-5"`` → (2.0, 20.0, -5.0) (the option's text; validated by the settings)."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InputError("c_rates", "comma-separated C-rates such as 2,20", text) from None


@dataclass(frozen=True)
class SeriesSynthSettings:
    """What :func:`synthesize_series` makes (units in the names; every field validated).

    Attributes:
        size_px: particle edge in image pixels (the images add a margin of 4 pixels per side).
        pixel_size_nm: image pixel pitch.
        oversample: simulation cells per image pixel along each axis.
        frames: number of frames T.
        c_rates: C-rate of each protocol segment (+ lithiation, − delithiation); the frames are split
            evenly over the segments.
        soc_start: Li fraction at the first frame.
        k_range: ratio of the largest to the smallest rate prefactor k(r) of the pattern.
        k_map: an (h, w) array of the relative prefactor k(r)/mean, resampled onto the particle; None
            makes the pattern.
        mu_correction_meV: amplitude A of the smooth correction to μ_h (meV per site).
        composition_sigma: one-σ noise of X per pixel.
        psf_nm: Gaussian σ of the X-ray probe.
        drift_px: largest drift of a frame from the first (pixels).
        missing_frame: index of the blanked frame (None: none; −1 by default means T // 2).
        seed: random seed (pattern, noise, drift).
        dtype: "float64" or "float32" for the simulation.
        rate_law: the true rate law, one of ``mechanics.phasefield.reaction.RATE_LAWS``.
        voltage_sigma_mV: one-σ noise of the recorded cell voltage (0: noise-free).
    """

    size_px: int = field(default=24, metadata={"help": "particle edge in image pixels", "flag": "--size"})
    pixel_size_nm: float = field(default=40.0, metadata={"help": "image pixel pitch (nm)"})
    oversample: int = field(default=2, metadata={"help": "simulation cells per image pixel per axis"})
    frames: int = field(default=16, metadata={"help": "number of frames T"})
    c_rates: tuple[float, ...] = field(default=(2.0, 20.0), metadata={
        "help": "C-rate of each protocol segment, comma-separated (+ lithiation)", "type": _rates,
        "metavar": "C1,C2,..."})
    soc_start: float = field(default=0.05, metadata={"help": "Li fraction at the first frame"})
    k_range: float = field(default=3.0, metadata={"help": "largest/smallest rate prefactor of the pattern"})
    k_map: np.ndarray | None = field(default=None, compare=False)
    mu_correction_meV: float = field(default=5.0, metadata={"help": "amplitude of the μ_h correction (meV)"})
    composition_sigma: float = field(default=0.05, metadata={"help": "one-σ noise of X per pixel"})
    psf_nm: float = field(default=20.0, metadata={"help": "Gaussian σ of the probe (nm)"})
    drift_px: float = field(default=2.0, metadata={"help": "largest drift from the first frame (px)"})
    missing_frame: int | None = field(default=-1, metadata={
        "help": "index of the blanked frame (-1: the middle one)"})
    seed: int = field(default=0, metadata={"help": "random seed (pattern, noise, drift)"})
    dtype: str = "float64"
    rate_law: str = field(default="butler-volmer",
                          metadata={"help": "the true rate law", "choices": RATE_LAWS})
    voltage_sigma_mV: float = field(default=1.0, metadata={"help": "one-σ noise of the cell voltage (mV)"})

    def __post_init__(self) -> None:
        def whole(name, low):
            value = getattr(self, name)
            if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low):
                raise InputError(name, f"an integer ≥ {low}", value)

        def number(name, low, *, strict=True):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or (value <= low if strict else value < low):
                raise InputError(name, f"a finite number {'>' if strict else '≥'} {low:g}", value)

        whole("size_px", 8)
        whole("oversample", 1)
        whole("frames", 3)
        whole("seed", 0)
        number("pixel_size_nm", 0)
        number("k_range", 1, strict=False)
        number("composition_sigma", 0, strict=False)
        number("psf_nm", 0, strict=False)
        number("drift_px", 0, strict=False)
        number("mu_correction_meV", -math.inf)
        number("voltage_sigma_mV", 0, strict=False)
        if not (isinstance(self.soc_start, (int, float)) and 0 < self.soc_start < 1):
            raise InputError("soc_start", "a Li fraction in (0, 1)", self.soc_start)
        rates = self.c_rates
        if (not isinstance(rates, tuple) or not rates or len(rates) > self.frames - 1
                or not all(isinstance(r, (int, float)) and math.isfinite(r) and r != 0 for r in rates)):
            expected = f"1 to {self.frames - 1} non-zero finite C-rates (+ lithiation)"
            raise InputError("c_rates", expected, rates)
        if self.missing_frame is not None and not (
                isinstance(self.missing_frame, int) and -1 <= self.missing_frame < self.frames
                and self.missing_frame not in (0, self.frames - 1)):
            expected = f"None, -1 (the middle frame) or an inner frame 1..{self.frames - 2}"
            raise InputError("missing_frame", expected, self.missing_frame)
        if self.rate_law not in RATE_LAWS:
            raise InputError("rate_law", " or ".join(RATE_LAWS), self.rate_law)
        if self.dtype not in ("float32", "float64"):
            raise InputError("dtype", "'float32' or 'float64'", self.dtype)
        if self.k_map is not None:
            k = np.asarray(self.k_map)
            if k.ndim != 2 or min(k.shape) < 2 or not np.isfinite(k).all() or (k <= 0).any():
                raise InputError("k_map", "an (h, w) array of positive finite relative rate prefactors",
                                 f"shape {k.shape}")


def _smooth_field(shape, rng, correlation_cells: float) -> np.ndarray:
    from scipy import ndimage

    noise = rng.standard_normal(shape)
    smooth = ndimage.gaussian_filter(noise, correlation_cells, mode="reflect")
    return (smooth - smooth.min()) / max(smooth.max() - smooth.min(), 1e-300)


def _prefactor(settings: SeriesSynthSettings, n: int, rng) -> np.ndarray:
    """k(r)/mean on the simulation grid (n, n): the pattern or the resampled user map, mean 1."""
    from scipy import ndimage

    if settings.k_map is None:
        unit = _smooth_field((n, n), rng, correlation_cells=n / 6)  # a few coating patches per particle
        log_k = math.log(settings.k_range) * (unit - 0.5)
    else:
        user = np.asarray(settings.k_map, float)
        zoom = (n / user.shape[0], n / user.shape[1])
        log_k = ndimage.zoom(np.log(user), zoom, order=1, mode="nearest")[:n, :n]
    k = np.exp(log_k)
    return k / k.mean()


class _CorrectedRegularSolution:
    """The regular solution plus A·ρ_s·c²(1−c)² per volume (GPa), A in aJ per site."""

    def __init__(self, base, site_density, correction_aJ):
        self.base, self.rho, self.a = base, site_density, correction_aJ

    def density(self, c):
        return self.base.density(c) + self.rho * self.a * c**2 * (1 - c) ** 2

    def derivative(self, c):
        return self.base.derivative(c) + self.rho * self.a * 2 * c * (1 - c) * (1 - 2 * c)

    def curvature(self, c):
        return self.base.curvature(c) + self.rho * self.a * (2 - 12 * c + 12 * c**2)

    def stabilization(self):
        return self.base.stabilization() + self.rho * abs(self.a)  # min of 2 − 12c + 12c² is −1


def mu_h_eV(x: np.ndarray, kT_eV: float, omega_eV: float, correction_eV: float) -> np.ndarray:
    """The homogeneous chemical potential per site (eV) of the synthetic material."""
    x = np.asarray(x, float)
    return (kT_eV * np.log(x / (1 - x)) + omega_eV * (1 - 2 * x)
            + 2 * correction_eV * x * (1 - x) * (1 - 2 * x))


def true_k0_A_per_m2(rate_law: str, x: np.ndarray, mu_h_kT: np.ndarray, k0_A_per_m2: float,
                     alpha: float) -> np.ndarray:
    """The exchange prefactor k₀(X) of a homogeneous state (A/m²): i₀ of the Butler–Volmer laws, the
    (1−X) prefactor of CIET; ``mu_h_kT`` is μ_h(X)/kT (used by the activity form)."""
    x = np.asarray(x, float)
    if rate_law == "butler-volmer":
        return k0_A_per_m2 * x**alpha * (1 - x) ** (1 - alpha)
    if rate_law == "butler-volmer-activity":
        return k0_A_per_m2 * (1 - x) * np.exp(alpha * np.asarray(mu_h_kT, float))
    return k0_A_per_m2 * (1 - x)


def synthesize_series(settings: SeriesSynthSettings | None = None, **overrides) -> ImageSeries:
    """A synthetic image series with known μ_h(X), k₀(X) and k(r) (model in the module docstring).

    Args:
        settings: what to make (default :class:`SeriesSynthSettings`).
        **overrides: fields of the settings to change.

    Returns:
        The validated :class:`inverse.kinetics.ImageSeries` with its ``truth_*`` entries.

    Raises:
        InputError: a setting out of range, named by its field.
        SolverError: the simulation stalled.
    """
    from scipy import ndimage

    from mechanics import Stiffness, units
    from mechanics.grid import Grid
    from mechanics.parameters.lfp import VOLTAGE_LFP_V, lfp_params
    from mechanics.phasefield import elastic as pf_elastic
    from mechanics.phasefield.free_energy import RegularSolution
    from mechanics.phasefield.protocols import run_to_times
    from mechanics.phasefield.reaction import (
        AllenCahnReaction,
        ReactionAux,
        acr_increment,
        acr_symbols,
        allen_cahn_reaction,
        rate_law_named,
    )

    settings = SeriesSynthSettings() if settings is None else settings
    if overrides:
        names = {f.name for f in fields(SeriesSynthSettings)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"synthesize_series() got unexpected settings {unknown}")
        settings = replace(settings, **overrides)
    rng = np.random.default_rng(settings.seed)
    dtype = getattr(torch, settings.dtype)
    p = lfp_params()
    n = settings.size_px * settings.oversample
    grid = Grid((n, n), spacing_nm=settings.pixel_size_nm / settings.oversample)
    kT = units.kT_aJ(p.temperature_K)
    correction_aJ = settings.mu_correction_meV * 1e-3 * units.AJ_PER_EV
    free_energy = _CorrectedRegularSolution(
        RegularSolution(p.site_density_per_nm3, kT, p.omega_eV * units.AJ_PER_EV), p.site_density_per_nm3,
        correction_aJ)
    k_rel = _prefactor(settings, n, rng)
    k0_per_nm2_s = p.exchange_rate_A_m2 / units.ELEMENTARY_CHARGE_C * units.M_PER_NM**2
    rate = 2 * k0_per_nm2_s / (p.site_density_per_nm3 * 20.0)  # two faces of a 20 nm platelet
    rate_law = rate_law_named(settings.rate_law, torch.tensor(rate * k_rel, dtype=dtype),
                              alpha=p.charge_transfer_alpha)
    kappa = p.kappa_aJ_per_nm[0]
    base = AllenCahnReaction(grid=grid, free_energy=free_energy, kappa_aJ_per_nm=kappa,
                             site_density_per_nm3=p.site_density_per_nm3, kT_aJ=kT, rate_law=rate_law,
                             current_per_s=torch.zeros(1, dtype=dtype), boundary="noflux",
                             dc_tol=0.01)
    # coherency: the platelet's Khachaturyan kernel on the grid the no-flux FFTs run on (mirror images)
    stiffness = Stiffness.from_voigt(torch.tensor(np.asarray([p.stiffness_voigt()]), dtype=torch.float64))
    coupling = pf_elastic.ElasticCoupling(base.stepped_grid, stiffness,
                                          torch.tensor([p.misfit], dtype=torch.float64),
                                          pf_elastic.law_shape(None), (0, 2), "stress", None)
    base = replace(base, linear_kernel_GPa=coupling.kernel(dtype))

    # frame times: the segments share the frames evenly; each moves X at its own rate
    n_seg = len(settings.c_rates)
    per_seg = np.diff(np.linspace(0, settings.frames - 1, n_seg + 1).round().astype(int))
    # each segment moves X by an equal share of 0.8 in its direction
    times, rates, t, x = [0.0], [], 0.0, settings.soc_start
    for c_rate, count in zip(settings.c_rates, per_seg):
        seg_dx = (0.85 - settings.soc_start) / n_seg
        dt_frame = seg_dx / abs(c_rate / 3600.0) / count
        for _ in range(count):
            t += dt_frame
            times.append(t)
            rates.append(c_rate)
        x += math.copysign(seg_dx, c_rate)
    if not (0.02 < x < 0.98):
        raise InputError("c_rates", "a protocol that keeps X inside (0.02, 0.98)", settings.c_rates)
    init_fn, _ = allen_cahn_reaction(base)
    seed_noise = rng.standard_normal((1, n, n))
    # a zero-mean 1e-3 perturbation seeds the instability without changing the filling
    c = torch.full((1, n, n), settings.soc_start, dtype=dtype) + 1e-3 * torch.tensor(
        seed_noise - seed_noise.mean(), dtype=dtype)
    state = init_fn(c, 1e-3)
    kT_eV = kT / units.AJ_PER_EV

    def potential_V(c_now, c_rate):
        """The cell voltage of state c_now under the current of ``c_rate`` (a zero-length step solves
        the galvanostatic reservoir potential of this very state)."""
        model = replace(base, current_per_s=torch.full((1,), c_rate / 3600.0, dtype=dtype))
        zero = torch.zeros(1, dtype=dtype)
        aux = ReactionAux(nu=zero, current_per_s=zero, saturated=zero.bool(), nonfinite=zero.bool())
        _, aux = acr_increment(model, c_now, zero, aux, acr_symbols(model, c_now))
        return VOLTAGE_LFP_V - float(aux.nu[0]) * kT_eV

    fine = [state.c[0].numpy().copy()]
    volts = [potential_V(state.c, rates[0])]
    for frame in range(1, settings.frames):
        current = rates[frame - 1] / 3600.0
        model = replace(base, current_per_s=torch.full((1,), current, dtype=dtype),
                        dt_max_s=0.005 / abs(current))
        _, step_fn = allen_cahn_reaction(model)
        state = run_to_times(step_fn, state, [times[frame]], max_steps=200_000)
        fine.append(state.c[0].numpy().copy())
        volts.append(potential_V(state.c, rates[min(frame, len(rates) - 1)]))
    fine = np.stack(fine)

    # image formation: average to pixels, blur, drift, noise, outline, a missing frame
    s, m = settings.oversample, MARGIN_PX
    clean = fine.reshape(settings.frames, settings.size_px, s, settings.size_px, s).mean(axis=(2, 4))
    side = settings.size_px + 2 * m
    canvas = np.zeros((settings.frames, side, side))
    canvas[:, m:-m, m:-m] = clean
    support = np.zeros((side, side))
    support[m:-m, m:-m] = 1.0
    sigma_px = settings.psf_nm / settings.pixel_size_nm
    drift = np.cumsum(rng.normal(size=(settings.frames, 2)), axis=0)
    drift -= drift[0]
    drift *= settings.drift_px / max(np.abs(drift).max(), 1e-12)
    frames = np.full_like(canvas, np.nan)
    for k in range(settings.frames):
        weight = ndimage.shift(ndimage.gaussian_filter(support, sigma_px), drift[k], order=1)
        image = ndimage.shift(ndimage.gaussian_filter(canvas[k], sigma_px), drift[k], order=1)
        inside = ndimage.shift(support, drift[k], order=1) > 0.5
        noise = settings.composition_sigma * rng.standard_normal(image.shape)
        values = image / np.maximum(weight, 1e-12) + noise
        frames[k] = np.where(inside, values, np.nan)
    missing = settings.frames // 2 if settings.missing_frame == -1 else settings.missing_frame
    if missing is not None:
        frames[missing] = np.nan
    truth_k = np.full((side, side), np.nan)
    truth_k[m:-m, m:-m] = np.log(k_rel.reshape(settings.size_px, s, settings.size_px, s).mean(axis=(1, 3)))
    truth_clean = np.full_like(canvas, np.nan)
    truth_clean[:, m:-m, m:-m] = clean
    x_grid = np.linspace(0.02, 0.98, 49)
    voltage = np.asarray(volts) + 1e-3 * settings.voltage_sigma_mV * rng.standard_normal(len(volts))
    mu_h = mu_h_eV(x_grid, kT_eV, p.omega_eV, settings.mu_correction_meV * 1e-3)
    raw = {
        "composition": frames, "time_s": np.asarray(times), "pixel_size_nm": settings.pixel_size_nm,
        "c_rate": np.append(np.asarray(rates, float), rates[-1]), "voltage_V": voltage,
        "composition_sigma": settings.composition_sigma if settings.composition_sigma > 0 else None,
        "temperature_K": p.temperature_K, "thickness_nm": 20.0,
        "truth_composition": truth_clean, "truth_log_k": truth_k, "truth_X": x_grid,
        "truth_mu_h_eV": mu_h,
        "truth_k0_A_per_m2": true_k0_A_per_m2(settings.rate_law, x_grid, mu_h / kT_eV,
                                              p.exchange_rate_A_m2, p.charge_transfer_alpha),
        "truth_voltage_zero_V": VOLTAGE_LFP_V, "truth_shifts_px": drift,
        "truth_missing_frame": -1 if missing is None else missing,
        "truth_rate_law": np.asarray(settings.rate_law.encode()),
    }
    return validate_series(raw, source="synthesize_series")
