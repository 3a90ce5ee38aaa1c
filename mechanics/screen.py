"""Batched screening simulation: every candidate cathode lithiated in one tensor program.

Protocol (the default, physically the right one for olivine platelets; Bai, Cogswell & Bazant, Nano
Lett. 11, 4890 (2011); Cogswell & Bazant, ACS Nano 6, 2215 (2012)): a platelet thin along b, imaged in
the a–c plane (grid axes = crystal a, c; generalized plane stress), depth-averaged Allen-Cahn-reaction
dynamics with Butler-Volmer (or CIET) insertion through the two large faces, lithiated galvanostatically
at a fixed C-rate from ``soc_start`` to ``soc_end``; the voltage is the output. Coherency strain enters
through the eigenstrain law ε⁰(X) = ε⁰(1)·g(X) with g the calibrated LFP law's shape (Vegard without a
law) and each candidate's own misfit and stiffness:

- ``fidelity="periodic"``: a particle in a periodic coherent matrix of the same stiffness (cell edge
  ``particle_size_nm``), exact Khachaturyan kernel B(k̂) (implicit; a nonlinear law adds its explicit
  correction from the homogeneous solver);
- ``fidelity="particle"``: a free-standing square platelet (no-flux composition, traction-free edges),
  elastic chemical potential from the core's free-surface solver every step.

Rates: the per-site exchange rate is k = 2 k₀ / (e ρ_s L_b) for exchange current density k₀
(``exchange_rate_A_m2``), two faces, thickness L_b (``platelet_thickness_nm``); a C-rate n is a mean
reaction rate n/3600 s⁻¹. Composition fluctuations: a seeded, zero-mean noise of amplitude
``noise_per_sqrt_s``·√Δt per step (the charge count stays exact); it is the same field sequence for every
candidate, so candidates are compared under the same perturbations.
Nondimensionalisation and all choices: docs/phasefield.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mechanics import units
from mechanics.errors import InputError
from mechanics.grid import Grid
from mechanics.parameters.base import MaterialParams
from mechanics.phasefield import elastic as pf_elastic
from mechanics.phasefield import metrics as pf_metrics
from mechanics.phasefield import spectral
from mechanics.phasefield.free_energy import RegularSolution
from mechanics.phasefield.protocols import run_to_times
from mechanics.phasefield.reaction import (
    AllenCahnReaction,
    ButlerVolmer,
    CoupledIonElectron,
    allen_cahn_reaction,
)

PLATELET_AXES = (0, 2)  # grid axes hold crystal a and c
RATE_LAWS = ("butler-volmer", "butler-volmer-activity", "ciet")


@dataclass(frozen=True)
class ScreeningSettings:
    """Simulation settings shared by every candidate of a sweep (units in the names).

    grid_points: cells per side; particle_size_nm: periodic cell edge (or platelet edge); c_rate:
    lithiation rate (1 = full capacity in one hour); soc_start/soc_end: Li fraction X at start/end;
    snapshots: number of field snapshots (evenly spaced in X, interior); dtype: "float32"/"float64";
    seed: noise seed; fidelity: "periodic" or "particle"; rate_law: "butler-volmer" (ideal-solution
    exchange current), "butler-volmer-activity" (Bazant's activity form) or "ciet";
    platelet_thickness_nm: L_b of the rate scale; noise_per_sqrt_s: fluctuation amplitude;
    composition_tol: target max |Δc| per step; soc_step_max: largest ΔX per step (voltage-curve
    resolution); observations: stress/energy evaluations over the run; max_steps: per-candidate cap;
    particle_padding_cells: void cells around the free platelet.
    """

    grid_points: int = 64
    particle_size_nm: float = 200.0
    c_rate: float = 1.0
    soc_start: float = 0.02
    soc_end: float = 0.98
    snapshots: int = 4
    dtype: str = "float32"
    seed: int = 0
    fidelity: str = "periodic"
    rate_law: str = "butler-volmer"
    platelet_thickness_nm: float = 20.0
    noise_per_sqrt_s: float = 1.0e-3
    composition_tol: float = 0.02
    soc_step_max: float = 0.01
    observations: int = 24
    max_steps: int = 20_000
    particle_padding_cells: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.grid_points, int) or self.grid_points < 8:
            raise InputError("grid_points", "an integer ≥ 8", self.grid_points)
        positive = ("particle_size_nm", "c_rate", "platelet_thickness_nm", "composition_tol", "soc_step_max")
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InputError(name, "a positive finite number", value)
        if not (0.0 < self.soc_start < self.soc_end < 1.0):
            raise InputError("soc_start/soc_end", "0 < soc_start < soc_end < 1",
                             (self.soc_start, self.soc_end))
        if self.dtype not in ("float32", "float64"):
            raise InputError("dtype", "'float32' or 'float64'", self.dtype)
        if self.fidelity not in ("periodic", "particle"):
            raise InputError("fidelity", "'periodic' or 'particle'", self.fidelity)
        if self.rate_law not in RATE_LAWS:
            raise InputError("rate_law", "'butler-volmer', 'butler-volmer-activity' or 'ciet'", self.rate_law)
        if not isinstance(self.snapshots, int) or self.snapshots < 0:
            raise InputError("snapshots", "an integer ≥ 0", self.snapshots)
        if not isinstance(self.observations, int) or self.observations < 1:
            raise InputError("observations", "an integer ≥ 1", self.observations)
        if not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise InputError("max_steps", "an integer ≥ 1", self.max_steps)
        if self.noise_per_sqrt_s < 0 or not math.isfinite(self.noise_per_sqrt_s):
            raise InputError("noise_per_sqrt_s", "a finite number ≥ 0", self.noise_per_sqrt_s)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ScreeningResult:
    """metrics: scalars (units in the names); voltage_curve: (n, 2) [X, V]; snapshots: "composition"
    (S, H, W), "max_principal_stress_GPa" (S, H, W), "soc" (S,); status "FINISHED" or "FAILED"."""

    metrics: dict[str, float]
    voltage_curve: np.ndarray
    snapshots: dict[str, np.ndarray]
    status: str
    reason: str = ""


@dataclass
class _Batch:
    """Per-element parameters as tensors (built once per call)."""

    misfit: torch.Tensor  # (B, 3)
    voigt: torch.Tensor  # (B, 6, 6) GPa
    site_density: torch.Tensor  # (B,) nm⁻³
    kT: torch.Tensor  # (B,) aJ
    omega: torch.Tensor  # (B,) aJ
    kappa: torch.Tensor  # (B, 2) aJ/nm, along the grid axes
    voltage: torch.Tensor  # (B,) V
    rate: torch.Tensor  # (B,) s⁻¹ per site
    alpha: torch.Tensor  # (B,)
    reorganization: torch.Tensor  # (B,) kT


def _batch(params: Sequence[MaterialParams], settings: ScreeningSettings, dtype, device) -> _Batch:
    def t(values):
        return torch.tensor(np.asarray(values, dtype=np.float64), dtype=dtype, device=device)

    k0_per_nm2_s = [p.exchange_rate_A_m2 / units.ELEMENTARY_CHARGE_C * units.M_PER_NM**2 for p in params]
    return _Batch(
        misfit=t([p.misfit for p in params]),
        voigt=t([p.stiffness_voigt() for p in params]),
        site_density=t([p.site_density_per_nm3 for p in params]),
        kT=t([units.kT_aJ(p.temperature_K) for p in params]),
        omega=t([p.omega_eV * units.AJ_PER_EV for p in params]),
        kappa=t([[p.kappa_aJ_per_nm[a] for a in PLATELET_AXES] for p in params]),
        voltage=t([p.voltage_V for p in params]),
        rate=t([2 * k / (p.site_density_per_nm3 * settings.platelet_thickness_nm)
                for k, p in zip(k0_per_nm2_s, params)]),
        alpha=t([p.charge_transfer_alpha for p in params]),
        reorganization=t([p.reorganization_energy_kT for p in params]),
    )


def _noise_bank(settings: ScreeningSettings, shape, dtype, device, size: int = 61) -> torch.Tensor:
    """Seeded zero-mean unit-variance fields (size, *shape); element i uses entry (steps_i mod size)."""
    gen = torch.Generator(device="cpu").manual_seed(int(settings.seed))
    bank = torch.randn((size, *shape), generator=gen, dtype=torch.float64)
    bank = bank - bank.mean(dim=tuple(range(1, bank.ndim)), keepdim=True)
    return bank.to(dtype=dtype, device=device)


class _Recorder:
    """Observers of one screening run: voltage per accepted step, stresses at observation times,
    snapshots at snapshot times, failure reasons."""

    def __init__(self, n: int, coupling, batch: _Batch, settings: ScreeningSettings, snapshot_times,
                 grid: Grid):
        self.n = n
        self.coupling = coupling
        self.batch = batch
        self.settings = settings
        self.snapshot_times = list(snapshot_times)
        self.grid = grid
        self.curve: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.last_steps = None
        self.last_x = None
        self.peak_stress = torch.full((n,), -math.inf, dtype=torch.float64)
        self.peak_energy = torch.zeros(n, dtype=torch.float64)
        self.peak_mean_energy = torch.zeros(n, dtype=torch.float64)
        self.separation = torch.zeros(n, dtype=torch.float64)
        self.angle = torch.full((n,), math.nan, dtype=torch.float64)
        self.snaps_c: list[np.ndarray] = []
        self.snaps_s: list[np.ndarray] = []
        self.snaps_x: list[np.ndarray] = []
        self.failed = torch.zeros(n, dtype=torch.bool)
        self.reasons = [""] * n

    def fail(self, mask: torch.Tensor, reason: str) -> None:
        for i in torch.nonzero(mask & ~self.failed).flatten().tolist():
            self.reasons[i] = reason
        self.failed |= mask

    def on_step(self, state) -> None:
        """Record (X, V) of one state: ``aux.nu`` of an accepted step was solved from the state the step
        started from, so it is paired with that state's filling (kept from the previous call), not with
        the filling after the step."""
        moved = state.steps > (self.last_steps if self.last_steps is not None else -1)
        self.last_steps = state.steps.clone()
        x_after = state.c.mean(dim=(-2, -1)).detach().cpu()
        x = x_after if self.last_x is None else self.last_x
        self.last_x = x_after
        kT_eV = self.batch.kT / units.AJ_PER_EV
        v = self.batch.voltage - state.aux.nu * kT_eV
        self.curve.append((moved.cpu(), x, v.detach().cpu()))

    def health(self, state) -> torch.Tensor:
        aux = state.aux
        self.fail(aux.saturated.cpu(), "overpotential beyond ±60 kT: the rate law cannot carry the C-rate")
        self.fail((aux.nonfinite & (state.dt < 1e-6)).cpu(),
                  "non-finite composition or potential (NaN/inf) even at Δt < 1 µs")
        c = state.c
        wild = (c.amin(dim=(-2, -1)) < -0.5) | (c.amax(dim=(-2, -1)) > 1.5)
        self.fail(wild.cpu(), "composition left [-0.5, 1.5] (numerical blow-up)")
        self.fail((state.steps >= self.settings.max_steps).cpu(),
                  f"max_steps = {self.settings.max_steps} reached before soc_end")
        return self.failed.to(c.device)

    def observe(self, state) -> None:
        ok = ~self.failed.to(state.c.device)
        c = torch.where(ok.reshape(-1, 1, 1), torch.nan_to_num(state.c), torch.full_like(state.c, 0.5))
        result, eps0 = self.coupling.solve(c)
        # the platelet's fields only (a free particle's void is cropped away)
        s1 = self.coupling.view(pf_metrics.max_principal_stress(result.stress))
        w = self.coupling.view(pf_metrics.elastic_energy_density(result.stress, result.strain, eps0))
        std = pf_metrics.phase_separation_index(c, 2).double().cpu()
        okc = ok.cpu()
        peak_s = s1.amax(dim=(-2, -1)).double().cpu()
        self.peak_stress = torch.where(okc, torch.maximum(self.peak_stress, peak_s), self.peak_stress)
        peak_w = w.amax(dim=(-2, -1)).double().cpu()
        self.peak_energy = torch.where(okc, torch.maximum(self.peak_energy, peak_w), self.peak_energy)
        mean_w = w.mean(dim=(-2, -1)).double().cpu()
        self.peak_mean_energy = torch.where(okc, torch.maximum(self.peak_mean_energy, mean_w),
                                            self.peak_mean_energy)
        angle = pf_metrics.interface_normal_angle_deg(c, self.grid).double().cpu()
        better = okc & (std > self.separation)
        self.angle = torch.where(better, angle, self.angle)
        self.separation = torch.where(better, std, self.separation)
        t = float(state.time.max())
        if any(math.isclose(t, ts, rel_tol=1e-6) for ts in self.snapshot_times):
            self.snaps_c.append(c.detach().cpu().numpy())
            self.snaps_s.append(s1.detach().cpu().numpy())
            self.snaps_x.append(c.mean(dim=(-2, -1)).detach().cpu().numpy())


def simulate_candidates(
    params: Sequence[MaterialParams],
    settings: ScreeningSettings,
    law: torch.nn.Module | None = None,
    device: str | torch.device = "cpu",
) -> list[ScreeningResult]:
    """Lithiate every candidate galvanostatically in one batched run; one result per candidate, in order.

    A candidate whose simulation fails (NaN, blow-up, an overpotential beyond floating point, too many
    steps) is frozen and returned FAILED with the reason; the others go on unaffected. Runs without
    autograd (a learned law's parameters are not traced; differentiate through the steppers instead).
    """
    with torch.no_grad():
        return _simulate(params, settings, law, device)


def _simulate(params, settings, law, device) -> list[ScreeningResult]:
    if isinstance(params, MaterialParams) or len(params) == 0:
        raise InputError("params", "a non-empty sequence of MaterialParams", params)
    for i, p in enumerate(params):
        if not isinstance(p, MaterialParams):
            raise InputError(f"params[{i}]", "a MaterialParams", type(p).__name__)
    if not isinstance(settings, ScreeningSettings):
        raise InputError("settings", "a ScreeningSettings", type(settings).__name__)
    dtype = getattr(torch, settings.dtype)
    device = torch.device(device)
    b = _batch(params, settings, dtype, device)
    n_el = len(params)
    n = settings.grid_points
    grid = Grid((n, n), spacing_nm=settings.particle_size_nm / n)
    current = settings.c_rate / 3600.0

    coupling, boundary, linear_kernel, potential = _elastic_setup(b, settings, law, grid, dtype, device)
    d = 2
    free_energy = RegularSolution(
        spectral.per_element(b.site_density, d, like=b.kT),
        spectral.per_element(b.kT, d, like=b.kT),
        spectral.per_element(b.omega, d, like=b.kT),
    )
    if settings.rate_law in ("butler-volmer", "butler-volmer-activity"):
        rate_law = ButlerVolmer(
            spectral.per_element(b.rate, d, like=b.kT), spectral.per_element(b.alpha, d, like=b.kT),
            exchange_form="ideal" if settings.rate_law == "butler-volmer" else "activity",
        )
    else:
        rate_law = CoupledIonElectron(
            spectral.per_element(b.rate, d, like=b.kT), spectral.per_element(b.reorganization, d, like=b.kT)
        )
    bank = _noise_bank(settings, (n, n), dtype, device)

    def noise(state, dt):
        if settings.noise_per_sqrt_s == 0:
            return torch.zeros_like(state.c)
        xi = bank[state.steps % bank.shape[0]]
        return settings.noise_per_sqrt_s * torch.sqrt(dt.clamp_min(0)).reshape(-1, 1, 1) * xi

    model = AllenCahnReaction(
        grid=grid,
        free_energy=free_energy,
        kappa_aJ_per_nm=b.kappa,
        site_density_per_nm3=b.site_density,
        kT_aJ=b.kT,
        rate_law=rate_law,
        current_per_s=torch.full((n_el,), current, dtype=dtype, device=device),
        boundary=boundary,
        linear_kernel_GPa=linear_kernel,
        explicit_potential=potential,
        noise=noise,
        dc_tol=settings.composition_tol,
        dt_max_s=settings.soc_step_max / current,
    )
    init_fn, step_fn = allen_cahn_reaction(model)
    c0 = torch.full((n_el, n, n), settings.soc_start, dtype=dtype, device=device)
    state = init_fn(c0, 0.1 * settings.soc_step_max / current)

    t_end = (settings.soc_end - settings.soc_start) / current
    obs_times = [t_end * (j + 1) / settings.observations for j in range(settings.observations)]
    snap_times = [t_end * (s + 1) / (settings.snapshots + 1) for s in range(settings.snapshots)]
    times = sorted(set(obs_times) | set(snap_times))
    recorder = _Recorder(n_el, coupling, b, settings, snap_times, grid)
    recorder.on_step(state)

    state = run_to_times(
        step_fn, state, times, [recorder.observe], on_step=recorder.on_step, stop=recorder.health,
        max_steps=10 * settings.max_steps,
    )
    return _results(recorder, state, b)


def _elastic_setup(b: _Batch, settings, law, grid: Grid, dtype, device):
    from mechanics.stiffness import Stiffness

    stiffness = Stiffness.from_voigt(b.voigt.to(torch.float64))
    shape_fn = pf_elastic.law_shape(law)
    if settings.fidelity == "periodic":
        coupling = pf_elastic.ElasticCoupling(grid, stiffness, b.misfit.to(torch.float64), shape_fn,
                                              PLATELET_AXES, "stress", None)
        kernel = coupling.kernel(dtype).to(device)
        potential = None
        if law is not None:
            q = coupling.kernel_matrix(dtype).to(device)
            potential = pf_elastic.law_potential(coupling, q, subtract_kernel=kernel)
        return coupling, "periodic", kernel, potential
    coupling = pf_elastic.ParticleCoupling.square(
        grid.shape[0], settings.particle_padding_cells, grid.spacing_nm, stiffness,
        b.misfit.to(torch.float64), shape_fn, PLATELET_AXES, "stress", device=device,
    )
    return coupling, "noflux", None, pf_elastic.explicit_potential(coupling)


def _results(rec: _Recorder, state, b: _Batch) -> list[ScreeningResult]:
    moved = torch.stack([m for m, _, _ in rec.curve])  # (T, B)
    xs = torch.stack([x for _, x, _ in rec.curve]).double()
    vs = torch.stack([v for _, _, v in rec.curve]).double()
    out = []
    n_snap = len(rec.snaps_c)
    for i in range(len(rec.reasons)):
        keep = moved[:, i].clone()
        keep[0] = False  # the initial record has no reservoir potential yet
        curve = torch.stack([xs[keep, i], vs[keep, i]], dim=1).numpy()
        metrics = {
            "peak_tensile_stress_MPa": float(rec.peak_stress[i]) * units.MPA_PER_GPA,
            "peak_elastic_energy_MJ_m3": float(rec.peak_energy[i]) * units.MJ_PER_M3_PER_GPA,
            "peak_mean_elastic_energy_MJ_m3": float(rec.peak_mean_energy[i]) * units.MJ_PER_M3_PER_GPA,
            "phase_separation": float(rec.separation[i]),
            "interface_angle_deg": float(rec.angle[i]),
            "steps": float(state.steps[i]),
            "rejected_steps": float(state.rejected[i]),
        }
        if len(curve) >= 2:
            x, v = curve[:, 0], curve[:, 1]
            mean_v = float(np.sum(0.5 * (v[1:] + v[:-1]) * np.diff(x)) / max(x[-1] - x[0], 1e-30))
            metrics.update(voltage_V=mean_v, voltage_min_V=float(v.min()), voltage_max_V=float(v.max()),
                           overpotential_mV=(float(b.voltage[i]) - mean_v) * 1e3)
        else:
            metrics.update(voltage_V=math.nan, voltage_min_V=math.nan, voltage_max_V=math.nan,
                           overpotential_mV=math.nan)
        failed = bool(rec.failed[i])
        essential = ("voltage_V", "peak_tensile_stress_MPa")
        if not failed and not all(math.isfinite(metrics[k]) for k in essential):
            failed, rec.reasons[i] = True, "non-finite metric"
        empty = np.zeros((0, 0, 0), dtype=np.float32)
        snaps = {
            "composition": np.stack([s[i] for s in rec.snaps_c]) if n_snap else empty,
            "max_principal_stress_GPa": np.stack([s[i] for s in rec.snaps_s]) if n_snap else empty,
            "soc": np.array([s[i] for s in rec.snaps_x]),
        }
        out.append(ScreeningResult(metrics=metrics, voltage_curve=curve, snapshots=snaps,
                                   status="FAILED" if failed else "FINISHED", reason=rec.reasons[i]))
    return out


__all__ = ["ScreeningResult", "ScreeningSettings", "simulate_candidates"]
