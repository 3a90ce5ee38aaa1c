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
from mechanics.errors import InputError, SolverError
from mechanics.fracture import FLAW_FRACTION, flaw_averaged_stress
from mechanics.grid import Grid
from mechanics.parameters.base import MaterialParams
from mechanics.phasefield import elastic as pf_elastic
from mechanics.phasefield import metrics as pf_metrics
from mechanics.phasefield import spectral
from mechanics.phasefield.free_energy import RegularSolution
from mechanics.phasefield.reaction import (
    RATE_LAWS,
    AllenCahnReaction,
    ButlerVolmer,
    CoupledIonElectron,
    allen_cahn_reaction,
)

PLATELET_AXES = (0, 2)  # grid axes hold crystal a and c


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
    resolution); observations: stress/energy evaluations over the run; max_steps: per-candidate cap on
    the accepted steps at 1C and faster (a run at n < 1C may take max_steps/n: a slow rate needs more
    steps, and the cap is a guard against a stalled stepper, not a budget);
    particle_padding_cells: void cells around the free platelet; direction: "discharge" (lithiation,
    X rises from soc_start to soc_end, the default) or "charge" (delithiation of the cathode, X falls from
    soc_end to soc_start: negative current, the overpotential reported positive for both); corrections:
    corrector iterations per step towards backward Euler
    (:attr:`mechanics.phasefield.reaction.AllenCahnReaction.corrections`). Default 6: the interface
    then moves at the model's own speed instead of lagging behind the stabiliser, and the free
    platelet's slow rates take 5–6× fewer steps (0.05–0.2C; a corrector does not repeat the elastic
    solve, and a corrected step costs 1.1× a plain one in a program of 8 elements, 2.1× in one of 128).
    Its driving stresses agree with the plain step's (0) over 8–32 seeds at 0.2C, 1C and 5C, and with a
    step refined 4× at 1C (docs/envelope.md); at 20C and faster, where other controls hold the step,
    the correctors only add their cost (up to 40 % more time).
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
    direction: str = "discharge"
    corrections: int = 6

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
        padding = self.particle_padding_cells
        if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
            raise InputError("particle_padding_cells", "an integer ≥ 0 (void cells around the platelet)",
                             padding)
        n = self.corrections
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InputError("corrections", "an integer ≥ 0", n)
        if self.noise_per_sqrt_s < 0 or not math.isfinite(self.noise_per_sqrt_s):
            raise InputError("noise_per_sqrt_s", "a finite number ≥ 0", self.noise_per_sqrt_s)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ScreeningResult:
    """metrics: scalars (units in the names); voltage_curve: (n, 2) [X, V]; snapshots: "composition"
    (S, H, W), "max_principal_stress_GPa" (S, H, W), "soc" (S,); status "FINISHED" or "FAILED";
    observed: per observation (O,) "soc" (X) and "driving_stress_MPa" (the flaw-averaged stress then)."""

    metrics: dict[str, float]
    voltage_curve: np.ndarray
    snapshots: dict[str, np.ndarray]
    status: str
    reason: str = ""
    observed: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


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


def _batch(params: Sequence[MaterialParams], settings: ScreeningSettings, dtype, device,
           kappa_scale: Sequence[float] | None = None) -> _Batch:
    """``kappa_scale`` (per element, default 1): (h_grid / h_element)², so an element of another size runs
    on the shared grid with the gradient energy it has at its own spacing (the rest is scale-free)."""
    def t(values):
        return torch.tensor(np.asarray(values, dtype=np.float64), dtype=dtype, device=device)

    scale = [1.0] * len(params) if kappa_scale is None else list(kappa_scale)

    k0_per_nm2_s = [p.exchange_rate_A_m2 / units.ELEMENTARY_CHARGE_C * units.M_PER_NM**2 for p in params]
    return _Batch(
        misfit=t([p.misfit for p in params]),
        voigt=t([p.stiffness_voigt() for p in params]),
        site_density=t([p.site_density_per_nm3 for p in params]),
        kT=t([units.kT_aJ(p.temperature_K) for p in params]),
        omega=t([p.omega_eV * units.AJ_PER_EV for p in params]),
        kappa=t([[p.kappa_aJ_per_nm[a] * f for a in PLATELET_AXES] for p, f in zip(params, scale)]),
        voltage=t([p.voltage_V for p in params]),
        rate=t([2 * k / (p.site_density_per_nm3 * settings.platelet_thickness_nm)
                for k, p in zip(k0_per_nm2_s, params)]),
        alpha=t([p.charge_transfer_alpha for p in params]),
        reorganization=t([p.reorganization_energy_kT for p in params]),
    )


def _noise_bank(seed: int, shape, dtype, device, size: int = 61) -> torch.Tensor:
    """Seeded zero-mean unit-variance fields (size, *shape); element i uses entry (steps_i mod size)."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    bank = torch.randn((size, *shape), generator=gen, dtype=torch.float64)
    bank = bank - bank.mean(dim=tuple(range(1, bank.ndim)), keepdim=True)
    return bank.to(dtype=dtype, device=device)


def _view_tensor(coupling, field: torch.Tensor) -> torch.Tensor:
    """The platelet part of a tensor field (*batch, *grid, d, d) (``coupling.view`` crops trailing axes)."""
    return coupling.view(field.movedim((-2, -1), (0, 1))).movedim((0, 1), (-2, -1))


class _Recorder:
    """Observers of one screening run: voltage per accepted step, stresses at observation times,
    snapshots at snapshot times, failure reasons.

    Observation and snapshot times are fractions of each element's own run time (elements may run at
    different currents). Each element is observed at every fraction of ``observe_fractions`` (the
    observation and the snapshot times together), in order; elements may reach them at different
    steps of the tensor program (:meth:`observe` takes the elements it observes and their indices).
    """

    def __init__(self, n: int, coupling, batch: _Batch, settings: ScreeningSettings, observe_fractions,
                 snapshot_times, grid: Grid, step_caps: torch.Tensor, flaw_cells: float = 1.0):
        self.n = n
        self.step_caps = step_caps.to(torch.int64).cpu()  # (n,) accepted steps allowed per element
        self.coupling = coupling
        self.batch = batch
        self.settings = settings
        self.observe_fractions = list(observe_fractions)
        self.snapshot_times = list(snapshot_times)
        # observation index → snapshot index, for the observations that are snapshot times
        self.snapshot_of = {j: k for j, f in enumerate(self.observe_fractions)
                            for k, ts in enumerate(self.snapshot_times) if math.isclose(f, ts, rel_tol=1e-9)}
        self.flaw_cells = flaw_cells
        self.driving_stress = torch.full((n,), -math.inf, dtype=torch.float64)
        n_obs, n_snap, shape = len(self.observe_fractions), len(self.snapshot_times), tuple(grid.shape)
        self.observed_x = torch.full((n_obs, n), math.nan, dtype=torch.float64)
        self.observed_flaw = torch.full((n_obs, n), math.nan, dtype=torch.float64)
        self.grid = grid
        self.curve: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.last_steps = None
        self.last_x = None
        self.peak_stress = torch.full((n,), -math.inf, dtype=torch.float64)
        self.peak_energy = torch.zeros(n, dtype=torch.float64)
        self.peak_mean_energy = torch.zeros(n, dtype=torch.float64)
        self.separation = torch.zeros(n, dtype=torch.float64)
        self.angle = torch.full((n,), math.nan, dtype=torch.float64)
        real = np.dtype(settings.dtype)  # snapshots keep the run's precision
        self.snaps_c = np.zeros((n_snap, n, *shape), dtype=real)
        self.snaps_s = np.zeros((n_snap, n, *shape), dtype=real)
        self.snaps_x = np.full((n_snap, n), np.nan)
        self.failed = torch.zeros(n, dtype=torch.bool)
        self.reasons = [""] * n
        self.deferred: list[tuple] = []

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
        self.fail(state.steps.cpu() >= self.step_caps,
                  f"max_steps reached before soc_end ({self.settings.max_steps} at 1C, /C-rate below it)")
        return self.failed.to(c.device)

    def observe(self, state, which: torch.Tensor | None = None, index: torch.Tensor | None = None,
                solved=None, defer: bool = False) -> None:
        """Observe the elements ``which`` ((n,) bool, default all) at their observation ``index`` ((n,)
        into :attr:`observe_fractions`): stresses, energies, phase separation and snapshots of ``state.c``.
        ``solved``: a :class:`mechanics.phasefield.elastic.WarmStart` whose result already holds the
        elastic solution at these compositions (its ``c``), as a step of the free platelet leaves it;
        otherwise the elastic problem is solved here, warm-started from the last step's solution.
        ``defer``: keep the fields and measure them later, together with other deferred observations
        (:meth:`flush`; the metrics' cost is per call more than per element)."""
        n = self.n
        which = torch.ones(n, dtype=torch.bool) if which is None else which.cpu()
        cols = torch.nonzero(which).flatten()
        if len(cols) == 0:
            return
        if solved is not None:
            c, result = solved.c, solved.result
            at = cols.to(c.device)
            # ε⁰ of the observed elements only (the step's solve did not keep it)
            misfit = self.coupling.misfit
            sub = dataclasses.replace(self.coupling, misfit=misfit[cols.to(misfit.device)])
            eps0, _ = sub.eigenstrain(sub.embed(c[at]))
        else:
            okd = (~self.failed & which).to(state.c.device).reshape(-1, 1, 1)
            c = torch.where(okd, torch.nan_to_num(state.c), torch.full_like(state.c, 0.5))
            carry = getattr(state.aux, "elastic", None)  # the last step's solution warm-starts a platelet
            start = carry.result if isinstance(carry, pf_elastic.WarmStart) else None
            result, eps0 = self.coupling.solve(c, start)
            at = cols.to(c.device)
            eps0 = eps0[at]
        rows = (torch.zeros(n, dtype=torch.long) if index is None else index.cpu())[cols]
        piece = (cols, rows, ~self.failed[cols], c[at], result.stress[at], result.strain[at], eps0)
        if self.deferred and bool(torch.isin(cols, torch.cat([p[0] for p in self.deferred])).any()):
            self.flush()  # an element observed again: measure what it had first
        self.deferred.append(piece)
        if not defer or sum(len(p[0]) for p in self.deferred) >= n:
            self.flush()

    def flush(self) -> None:
        """Measure the deferred observations (each element at most once among them)."""
        if not self.deferred:
            return
        pieces, self.deferred = self.deferred, []
        cols, rows, ok, c, stress, strain, eps0 = (torch.cat(parts) for parts in zip(*pieces))
        # the platelet's fields only (a free particle's void is cropped away)
        s1 = self.coupling.view(pf_metrics.max_principal_stress(stress))
        w = self.coupling.view(pf_metrics.elastic_energy_density(stress, strain, eps0))
        flaw = flaw_averaged_stress(_view_tensor(self.coupling, stress), self.flaw_cells).double().cpu()
        peak_s = s1.amax(dim=(-2, -1)).double().cpu()
        peak_w = w.amax(dim=(-2, -1)).double().cpu()
        mean_w = w.mean(dim=(-2, -1)).double().cpu()
        std = pf_metrics.phase_separation_index(c, 2).double().cpu()
        angle = pf_metrics.interface_normal_angle_deg(c, self.grid).double().cpu()
        x = c.mean(dim=(-2, -1)).double().cpu()

        def raise_to(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
            out = old.clone()
            out[cols] = torch.where(ok, torch.maximum(old[cols], new), old[cols])
            return out

        self.peak_stress = raise_to(self.peak_stress, peak_s)
        self.driving_stress = raise_to(self.driving_stress, flaw)
        self.peak_energy = raise_to(self.peak_energy, peak_w)
        self.peak_mean_energy = raise_to(self.peak_mean_energy, mean_w)
        better = ok & (std > self.separation[cols])
        self.angle[cols] = torch.where(better, angle, self.angle[cols])
        self.separation[cols] = torch.where(better, std, self.separation[cols])
        self.observed_x[rows, cols] = x
        self.observed_flaw[rows, cols] = torch.where(ok, flaw, math.nan)
        take = [(m, self.snapshot_of[int(j)]) for m, j in enumerate(rows) if int(j) in self.snapshot_of]
        if take:
            # a failed element's snapshot is the uniform X = ½ (no stress), as it was solved before
            okd = ok.to(c.device).reshape(-1, 1, 1)
            cc = torch.where(okd, torch.nan_to_num(c), 0.5).cpu().numpy()
            ss = torch.where(okd, s1, 0.0).detach().cpu().numpy()
            for m, k in take:
                i = int(cols[m])
                self.snaps_c[k, i] = cc[m]
                self.snaps_s[k, i] = ss[m]
                self.snaps_x[k, i] = float(x[m])


def simulate_candidates(
    params: Sequence[MaterialParams],
    settings: ScreeningSettings,
    law: torch.nn.Module | None = None,
    device: str | torch.device = "cpu",
) -> list[ScreeningResult]:
    """Lithiate (or, with ``settings.direction == "charge"``, delithiate) every candidate galvanostatically
    in one batched run; one result per candidate, in order.

    A candidate whose simulation fails (NaN, blow-up, an overpotential beyond floating point, too many
    steps) is frozen and returned FAILED with the reason; the others go on unaffected. Runs without
    autograd (a learned law's parameters are not traced; differentiate through the steppers instead).
    """
    return simulate_conditions(params, settings, law, device)


def simulate_conditions(
    params: Sequence[MaterialParams],
    settings: ScreeningSettings,
    law: torch.nn.Module | None = None,
    device: str | torch.device = "cpu",
    *,
    c_rates: Sequence[float] | None = None,
    sizes_nm: Sequence[float] | None = None,
    seeds: Sequence[int] | None = None,
    flaw_fraction: float = FLAW_FRACTION,
    noise_reference_grid: int | None = None,
) -> list[ScreeningResult]:
    """:func:`simulate_candidates` with a C-rate, a platelet size and a noise seed of its own per element,
    all in one tensor program (the envelope batches candidates × rates × sizes × seeds this way).

    Sizes share one grid of ``settings.grid_points`` cells: linear elasticity has no length scale, the
    rate per site and the noise do not depend on the size, so an element of size L runs with its
    gradient energy rescaled to the shared spacing, κ·(h_grid/h_L)² (exact for the discrete model).
    Metrics gain ``driving_stress_MPa`` (the largest tensile stress normal to a flaw of length
    a₀ = ``flaw_fraction``·L averaged over the flaw, :func:`mechanics.fracture.flaw_averaged_stress`, over
    the observations) and ``max_overpotential_mV`` (the largest |V − V₀| over the run).

    Args:
        params: as :func:`simulate_candidates` (so are ``settings``, ``law`` and ``device``).
        settings: the shared :class:`ScreeningSettings`.
        law: the eigenstrain law module, or None for Vegard.
        device: where the batch runs.
        c_rates: one per element (default: the settings' ``c_rate``). An element's C-rate may be a
            sequence of K rates (the same K for every element): a piecewise-constant current over K equal
            windows of X between ``soc_start`` and ``soc_end``, in the order they are traversed (a
            charging protocol).
        sizes_nm: one platelet edge per element (default: the settings' ``particle_size_nm``).
        seeds: one noise seed per element (default: the settings' ``seed``).
        flaw_fraction: a₀ / L (at least one grid cell is used).
        noise_reference_grid: N_ref: ``noise_per_sqrt_s`` is the per-cell amplitude of an N_ref² grid
            over the platelet, and on the settings' N² grid it is scaled by N/N_ref. White noise keeps
            its intensity per platelet area only so (a cell's variance ∝ 1/its area); at a fixed per-cell
            amplitude a finer grid weakens the fluctuations that seed phase separation. None: per cell
            as given (the sweep's convention).

    Raises:
        InputError: a list of the wrong length or a bad value, before any work.
    """
    with torch.no_grad():
        return _simulate(params, settings, law, device, c_rates, sizes_nm, seeds, flaw_fraction,
                         noise_reference_grid)


def _per_element(name: str, values, default, n: int, kind=float) -> list:
    """One value per element (``default`` for all when None), checked: positive floats or integers."""
    if values is None:
        return [default] * n
    values = list(values)
    if len(values) != n:
        raise InputError(name, f"{n} values, one per element", len(values))
    for v in values:
        ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        if not ok or not math.isfinite(v) or (kind is float and v <= 0):
            raise InputError(name, "positive finite numbers" if kind is float else "integers", v)
    return [kind(v) for v in values]


def _simulate(params, settings, law, device, c_rates=None, sizes_nm=None, seeds=None,
              flaw_fraction=FLAW_FRACTION, noise_reference_grid=None) -> list[ScreeningResult]:
    if isinstance(params, MaterialParams) or len(params) == 0:
        raise InputError("params", "a non-empty sequence of MaterialParams", params)
    for i, p in enumerate(params):
        if not isinstance(p, MaterialParams):
            raise InputError(f"params[{i}]", "a MaterialParams", type(p).__name__)
    if not isinstance(settings, ScreeningSettings):
        raise InputError("settings", "a ScreeningSettings", type(settings).__name__)
    if settings.direction not in ("discharge", "charge"):
        raise InputError("direction", "'discharge' (lithiation) or 'charge' (delithiation)",
                         settings.direction)
    if not (isinstance(flaw_fraction, (int, float)) and 0 < flaw_fraction <= 1):
        raise InputError("flaw_fraction", "a number in (0, 1]", flaw_fraction)
    ref = noise_reference_grid
    if ref is not None and (isinstance(ref, bool) or not isinstance(ref, (int, np.integer)) or ref < 1):
        raise InputError("noise_reference_grid", "None or a number of cells ≥ 1", ref)
    n_el = len(params)
    schedule = _schedule(c_rates, settings.c_rate, n_el)  # (B, K) C-rates
    sizes = _per_element("sizes_nm", sizes_nm, settings.particle_size_nm, n_el)
    seed_list = _per_element("seeds", seeds, settings.seed, n_el, kind=int)
    dtype = getattr(torch, settings.dtype)
    device = torch.device(device)
    n = settings.grid_points
    grid = Grid((n, n), spacing_nm=sizes[0] / n)
    b = _batch(params, settings, dtype, device, kappa_scale=[(sizes[0] / size) ** 2 for size in sizes])
    sign = 1.0 if settings.direction == "discharge" else -1.0  # charge: X falls, the current is negative
    rate_table = torch.tensor(schedule, dtype=dtype, device=device) / 3600.0  # (B, K) s⁻¹
    windows = rate_table.shape[1]
    current = sign * rate_table[:, 0].clone()  # updated in place at each window edge
    speed = current.abs()
    dt_max = settings.soc_step_max / speed  # updated in place with the current

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
    distinct = sorted(set(seed_list))
    bank = torch.stack([_noise_bank(s, (n, n), dtype, device) for s in distinct])  # (seeds, size, n, n)
    which = torch.tensor([distinct.index(s) for s in seed_list], device=device)

    size = bank.shape[1]
    cells = torch.arange(n, device=device)
    amplitude = settings.noise_per_sqrt_s * (1.0 if ref is None else n / int(ref))

    def noise(state, dt):
        if settings.noise_per_sqrt_s == 0:
            return torch.zeros_like(state.c)
        # each time an element's step count wraps the bank, its fields are moved on the grid by a new
        # offset: a moved white-noise field is uncorrelated with the unmoved one, so the noise summed over
        # a run grows as √steps, not linearly (a repeated bank made it grow with every wrap, and tighter
        # step control, with more steps, blew up). The first `size` steps are the bank as it is; the
        # offsets depend on the step count only, so candidates keep common random numbers.
        wraps = state.steps // size
        rows = (cells[None, :] + wraps[:, None] % n) % n  # (B, n)
        cols = (cells[None, :] + (wraps[:, None] // n) % n) % n
        xi = bank[which, state.steps % size]
        xi = xi.gather(1, rows[:, :, None].expand(-1, -1, n)).gather(2, cols[:, None, :].expand(-1, n, -1))
        return amplitude * torch.sqrt(dt.clamp_min(0)).reshape(-1, 1, 1) * xi

    model = AllenCahnReaction(
        grid=grid,
        free_energy=free_energy,
        kappa_aJ_per_nm=b.kappa,
        site_density_per_nm3=b.site_density,
        kT_aJ=b.kT,
        rate_law=rate_law,
        current_per_s=current,
        boundary=boundary,
        linear_kernel_GPa=linear_kernel,
        explicit_potential=potential,
        noise=noise,
        dc_tol=settings.composition_tol,
        dt_max_s=dt_max,
        corrections=settings.corrections,
    )
    init_fn, step_fn = allen_cahn_reaction(model)
    start = settings.soc_start if sign > 0 else settings.soc_end
    c0 = torch.full((n_el, n, n), start, dtype=dtype, device=device)
    state = init_fn(c0, 0.1 * settings.soc_step_max / speed)

    # time to traverse each window (B, K) and the time at which each element reaches a fraction of X
    window_time = (settings.soc_end - settings.soc_start) / windows / rate_table
    edges = torch.cat([torch.zeros_like(window_time[:, :1]), torch.cumsum(window_time, dim=1)], dim=1)

    def time_at(fraction: float) -> torch.Tensor:
        k = min(int(math.floor(fraction * windows + 1e-9)), windows - 1)
        return edges[:, k] + (fraction * windows - k) * window_time[:, k]

    obs = [(j + 1) / settings.observations for j in range(settings.observations)]
    snaps = [(k + 1) / (settings.snapshots + 1) for k in range(settings.snapshots)]
    switches = {k / windows: k for k in range(1, windows)}
    observed = sorted(set(obs) | set(snaps))
    events = sorted(set(observed) | set(switches))
    # the step cap grows as the slowest rate of an element's schedule falls below 1C
    slowest = torch.tensor([min(row) for row in schedule], dtype=torch.float64)
    caps = torch.ceil(settings.max_steps / slowest.clamp(max=1.0)).to(torch.int64)
    recorder = _Recorder(n_el, coupling, b, settings, observed, snaps, grid, caps,
                         flaw_cells=max(1.0, flaw_fraction * n))
    recorder.on_step(state)

    def switch(which: torch.Tensor, window: int, state):
        """The next window's current for the elements ``which`` (and the Δt bound that follows it)."""
        current.copy_(torch.where(which, sign * rate_table[:, window], current))
        dt_max.copy_(settings.soc_step_max / current.abs())
        return dataclasses.replace(state, dt=torch.where(which, torch.minimum(state.dt, dt_max), state.dt))

    if settings.fidelity == "particle" and not SYNCHRONOUS_EVENTS:
        times = torch.stack([time_at(f) for f in events], dim=1)  # (B, events)
        state = _run_events(step_fn, state, events, times, switches, observed, switch, recorder,
                            max_steps=10 * int(caps.max()) * len(events))
    else:
        everyone = torch.ones(n_el, dtype=torch.bool, device=device)
        for fraction in events:
            state = _run_to(step_fn, state, time_at(fraction), recorder, max_steps=10 * int(caps.max()))
            if fraction in switches:
                state = switch(everyone, switches[fraction], state)
            if fraction in observed:
                recorder.observe(state, index=torch.full((n_el,), observed.index(fraction)))
    return _results(recorder, state, b, sign)


# True: a free platelet's batch steps from event to event together, waiting at each for its slowest
# element (how it ran before per-element events; kept so benchmarks/envelope.py can time both). The
# periodic fidelity always runs so: it has no elastic solve per step to take an observation from.
SYNCHRONOUS_EVENTS = False


def _schedule(c_rates, default: float, n: int) -> list[list[float]]:
    if c_rates is None:
        return [[float(default)]] * n
    rows = [list(r) if isinstance(r, (list, tuple, np.ndarray)) else [r] for r in c_rates]
    if len(rows) != n:
        raise InputError("c_rates", f"{n} entries, one per element", len(rows))
    if len({len(r) for r in rows}) != 1 or not rows[0]:
        raise InputError("c_rates", "the same number K ≥ 1 of window rates for every element",
                         sorted({len(r) for r in rows}))
    for row in rows:
        for v in row:
            ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
            if not ok or not math.isfinite(v) or v <= 0:
                raise InputError("c_rates", "positive finite C-rates", v)
    return [[float(v) for v in r] for r in rows]


def _run_to(step_fn, state, target: torch.Tensor, recorder: _Recorder, *, max_steps: int):
    """Step every element to its own time target (*batch,), capping the step so it is hit exactly
    (:func:`mechanics.phasefield.protocols.run_to_times` with a target per element). Failed elements
    (``recorder.health``) count as done."""
    for _ in range(max_steps):
        remaining = target - state.time
        done = (remaining <= 1e-9 * target.clamp_min(1.0)) | recorder.health(state)
        if bool(done.all()):
            return state
        state = step_fn(state, torch.where(done, torch.zeros_like(remaining), remaining))
        recorder.on_step(state)
    raise SolverError("simulate_conditions", f"more than {max_steps} steps in one stretch")


def _run_events(step_fn, state, events: list, times: torch.Tensor, switches: dict, observed: list, switch,
                recorder: _Recorder, *, max_steps: int):
    """Step every element through its own event times ``times`` (B, E) (the fractions ``events`` of its
    run): a current switch at a window edge, an observation, or both. An element never waits for the
    others: it is stepped, with Δt capped to hit each of its times exactly, until it has passed all of
    them. An observation is taken from the next step's elastic solve, which every element runs at the
    state the step starts from (the free platelet's explicit potential): the element is observed at the
    state it reached, with no solve of its own (the end state's observations from a step of Δt = 0).

    The tensor program takes as many steps as its slowest element, not the sum over the events of the
    slowest element between them, and an element's run no longer depends on its batch mates: one that
    waited at an event took steps of Δt = 0 whose elastic solves moved its warm start within the
    solver's tolerance, enough to move its later steps by about 1e-3 (float64)."""
    n_el, n_ev = times.shape
    device = times.device
    pointer = torch.zeros(n_el, dtype=torch.long, device=device)
    pending = torch.zeros(n_el, dtype=torch.bool, device=device)
    index = torch.zeros(n_el, dtype=torch.long, device=device)
    target = times[:, 0]
    for _ in range(max_steps):
        failed = recorder.health(state)
        while True:  # events the elements have reached (at most one each per pass)
            live = pointer < n_ev
            target = times.gather(1, pointer.clamp(max=n_ev - 1)[:, None])[:, 0]
            hit = live & ~failed & ((target - state.time) <= 1e-9 * target.clamp_min(1.0))
            if not bool(hit.any()):
                break
            for k in torch.unique(pointer[hit]).tolist():
                which = hit & (pointer == k)
                fraction = events[k]
                if fraction in switches:
                    state = switch(which, switches[fraction], state)
                if fraction in observed:
                    pending |= which
                    index = torch.where(which, observed.index(fraction), index)
            pointer = torch.where(hit, pointer + 1, pointer)
        done = (pointer >= n_ev) | failed
        if bool(done.all()) and not bool(pending.any()):
            recorder.flush()
            return state
        remaining = torch.where(done, torch.zeros_like(target), target - state.time)
        state = step_fn(state, remaining)  # all done: Δt = 0, for the elastic solve of the last observations
        recorder.on_step(state)
        if bool(pending.any()):
            recorder.observe(state, pending, index, solved=state.aux.elastic, defer=True)
            pending = torch.zeros_like(pending)
    raise SolverError("simulate_conditions", f"more than {max_steps} steps")


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


def _results(rec: _Recorder, state, b: _Batch, sign: float = 1.0) -> list[ScreeningResult]:
    """``sign``: +1 lithiation, −1 delithiation (overpotentials are reported positive for both)."""
    moved = torch.stack([m for m, _, _ in rec.curve])  # (T, B)
    xs = torch.stack([x for _, x, _ in rec.curve]).double()
    vs = torch.stack([v for _, _, v in rec.curve]).double()
    out = []
    n_snap = len(rec.snapshot_times)
    for i in range(len(rec.reasons)):
        keep = moved[:, i].clone()
        keep[0] = False  # the initial record has no reservoir potential yet
        curve = torch.stack([xs[keep, i], vs[keep, i]], dim=1).numpy()
        metrics = {
            "peak_tensile_stress_MPa": float(rec.peak_stress[i]) * units.MPA_PER_GPA,
            "driving_stress_MPa": float(rec.driving_stress[i]) * units.MPA_PER_GPA,
            "peak_elastic_energy_MJ_m3": float(rec.peak_energy[i]) * units.MJ_PER_M3_PER_GPA,
            "peak_mean_elastic_energy_MJ_m3": float(rec.peak_mean_energy[i]) * units.MJ_PER_M3_PER_GPA,
            "phase_separation": float(rec.separation[i]),
            "interface_angle_deg": float(rec.angle[i]),
            "steps": float(state.steps[i]),
            "rejected_steps": float(state.rejected[i]),
        }
        if len(curve) >= 2:
            x, v = curve[:, 0], curve[:, 1]
            span = x[-1] - x[0]  # negative on charge, like np.diff(x)
            area = float(np.sum(0.5 * (v[1:] + v[:-1]) * np.diff(x)))
            mean_v = area / float(span) if abs(span) > 1e-12 else math.nan
            metrics.update(voltage_V=mean_v, voltage_min_V=float(v.min()), voltage_max_V=float(v.max()),
                           overpotential_mV=sign * (float(b.voltage[i]) - mean_v) * 1e3,
                           max_overpotential_mV=float(np.abs(v - float(b.voltage[i])).max()) * 1e3)
        else:
            metrics.update(voltage_V=math.nan, voltage_min_V=math.nan, voltage_max_V=math.nan,
                           overpotential_mV=math.nan, max_overpotential_mV=math.nan)
        failed = bool(rec.failed[i])
        essential = ("voltage_V", "peak_tensile_stress_MPa")
        if not failed and not all(math.isfinite(metrics[k]) for k in essential):
            failed, rec.reasons[i] = True, "non-finite metric"
        empty = np.zeros((0, 0, 0), dtype=np.float32)
        snaps = {
            "composition": rec.snaps_c[:, i].copy() if n_snap else empty,
            "max_principal_stress_GPa": rec.snaps_s[:, i].copy() if n_snap else empty,
            "soc": rec.snaps_x[:, i].copy(),
        }
        flaw = rec.observed_flaw[:, i].numpy().copy()
        observed = {"soc": rec.observed_x[:, i].numpy().copy(),
                    "driving_stress_MPa": units.MPA_PER_GPA * flaw}
        out.append(ScreeningResult(metrics=metrics, voltage_curve=curve, snapshots=snaps,
                                   status="FAILED" if failed else "FINISHED", reason=rec.reasons[i],
                                   observed=observed))
    return out


__all__ = ["ScreeningResult", "ScreeningSettings", "simulate_candidates", "simulate_conditions"]
