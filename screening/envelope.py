"""Fracture-limited charging envelope and charging protocols per candidate (issue 15; docs/envelope.md).

```python
import candidates, screening
space = candidates.olivine_space(metals=("Fe", "Mn"), step=0.5)
result = screening.charging_envelope(space, law="vegard", c_rates=(0.2, 1, 5, 50, 200), sizes_nm=(50, 100))
result.summary[["formula", "size_nm", "direction", "min_safe_C_rate", "max_safe_C_rate", "note"]]
```
One path: ``chemoscreen envelope`` and ``chemoscreen sweep --envelope`` call :func:`charging_envelope`.
Every simulation is one element of :func:`mechanics.screen.simulate_conditions` (candidates × sizes ×
rates × seeds batched in one tensor program); results are cached per (candidate, size, rate schedule,
direction, seed, settings, law) key in ``DIR/envelope_cache.jsonl``, so a rerun simulates nothing new.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mechanics.errors import InputError
from mechanics.fracture import EDGE_GEOMETRY_FACTOR, FLAW_FRACTION, critical_size_nm, critical_stress_MPa

DIRECTIONS = ("charge", "discharge")
MIN_SIZE_NM = 5.0  # a few olivine unit cells (a ≈ 1 nm): below this a continuum phase field means nothing
MIN_FLAW_CELLS = 3.0  # the flaw must span this many grid cells for its average to be a continuum mean
MIN_INTERFACE_CELLS = 2.0  # the model's interface length λ must span this many grid cells
INTERFACE_FRACTION = 1.0 / 16.0  # λ ≥ L/16: LiFePO4's own λ = 1.4 nm is L/16 at L ≈ 22 nm
CACHE_FILE = "envelope_cache.jsonl"
ENVELOPE_COLUMNS = ["candidate_id", "formula", "size_nm", "c_rate", "direction", "peak_tensile_stress_MPa",
                    "driving_stress_MPa", "critical_stress_MPa", "safety_factor", "fractured",
                    "overpotential_mV", "phase_separation"]
SUMMARY_COLUMNS = ["candidate_id", "formula", "size_nm", "direction", "min_safe_C_rate", "max_safe_C_rate",
                   "critical_size_nm_at_1C", "fastest_time_min", "protocol_time_min",
                   "protocol_peak_stress_MPa", "constant_peak_stress_MPa", "k_ic_source", "note"]


def _positive_tuple(name: str, values) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise InputError(name, "a non-empty list of positive numbers", values) from None
    if not out or any(not (math.isfinite(v) and v > 0) for v in out):
        raise InputError(name, "a non-empty list of positive finite numbers", values)
    return tuple(sorted(set(out)))


@dataclass(frozen=True)
class EnvelopeSettings:
    """What the envelope scans and how it decides (units in the names).

    c_rates: scanned C-rates (1 = full capacity in one hour); sizes_nm: platelet edges L; seeds: noise
    seeds per condition; seed_quantile: the upper quantile of the driving stress over the seeds;
    safety_factor: s ≥ 1, a rate is safe when σ_c/σ ≥ s; max_overpotential_mV: largest |η| allowed
    (default 200 mV: an LFP cell charged to a 3.6–3.65 V cut-off leaves ~0.2 V above the 3.43 V plateau);
    target_min: the charge time T of protocol (b); soc_windows: windows of equal ΔX of the protocols;
    flaw_fraction: a₀/L; geometry_factor: Y of σ_c = K_Ic/(Y√(πa₀)); interface_fraction: the model's
    interface length λ = √(κ/ρΩ) is at least this fraction of L (κ raised where the material's is
    thinner, so every larger size runs one scale-free problem whose interface the grid resolves;
    docs/envelope.md, with what is and is not shown about its grid convergence);
    bisections: simulated bisection steps of each window bound inside its scanned bracket (then
    log-linear interpolation); batch_elements: simulations per tensor program;
    noise_reference_grid: N_ref, the composition noise is the per-cell amplitude of an N_ref² grid over
    the platelet and scales by N/N_ref on an N² grid (fixed white-noise intensity per area, which is
    what makes the driving stress converge on refinement; docs/envelope.md). 32: the default grid's own.
    """

    c_rates: tuple[float, ...] = (0.05, 0.2, 1.0, 5.0, 20.0, 50.0, 200.0)
    sizes_nm: tuple[float, ...] = (50.0, 100.0, 200.0)
    seeds: int = 8
    seed_quantile: float = 0.75
    safety_factor: float = 1.5
    max_overpotential_mV: float = 200.0
    target_min: float = 60.0
    soc_windows: int = 10
    flaw_fraction: float = FLAW_FRACTION
    geometry_factor: float = EDGE_GEOMETRY_FACTOR
    interface_fraction: float = INTERFACE_FRACTION
    bisections: int = 1
    batch_elements: int = 128
    directions: tuple[str, ...] = DIRECTIONS
    noise_reference_grid: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "c_rates", _positive_tuple("--c-rates", self.c_rates))
        object.__setattr__(self, "sizes_nm", _positive_tuple("--sizes", self.sizes_nm))
        if min(self.sizes_nm) < MIN_SIZE_NM:
            raise InputError("--sizes", f"sizes ≥ {MIN_SIZE_NM:g} nm (a few unit cells)", self.sizes_nm)
        if not _is_int(self.seeds) or self.seeds < 1:
            raise InputError("--seeds", "a positive number of noise seeds (4 or more for the quantile)",
                             self.seeds)
        if not (0.5 <= self.seed_quantile <= 1.0):
            raise InputError("seed_quantile", "an upper quantile in [0.5, 1]", self.seed_quantile)
        if not (_is_number(self.safety_factor) and self.safety_factor >= 1.0):
            raise InputError("--safety-factor", "a number ≥ 1", self.safety_factor)
        for name, flag in (("max_overpotential_mV", "--max-overpotential-mV"), ("target_min", "--target-min"),
                           ("geometry_factor", "geometry_factor")):
            value = getattr(self, name)
            if not (_is_number(value) and value > 0):
                raise InputError(flag, "a positive finite number", value)
        if not (_is_number(self.flaw_fraction) and 0 < self.flaw_fraction < 1):
            raise InputError("flaw_fraction", "a fraction in (0, 1)", self.flaw_fraction)
        if not (_is_number(self.interface_fraction) and 0 < self.interface_fraction < self.flaw_fraction):
            raise InputError("interface_fraction", "a fraction of L in (0, flaw_fraction)",
                             self.interface_fraction)
        for name in ("soc_windows", "batch_elements", "noise_reference_grid"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise InputError(name, "a positive integer", getattr(self, name))
        if not _is_int(self.bisections) or self.bisections < 0:
            raise InputError("bisections", "an integer ≥ 0", self.bisections)
        directions = tuple(self.directions)
        if not directions or any(d not in DIRECTIONS for d in directions):
            raise InputError("directions", f"some of {DIRECTIONS}", self.directions)
        object.__setattr__(self, "directions", directions)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value)


def default_simulation_settings():
    """The envelope's simulation defaults: the free platelet (traction-free surfaces), 32² cells (the
    interface λ = L/16 over 2 cells, the flaw a₀ = 0.1·L over 3.2; docs/envelope.md)."""
    from mechanics.screen import ScreeningSettings

    return ScreeningSettings(fidelity="particle", grid_points=32)


# ---------------------------------------------------------------------------------------------------
# the window: bracketing root search on margins


def window_from_margins(rates: Sequence[float], margins: Sequence[float]) -> tuple[int, int] | None:
    """Indices (first, last) of the widest contiguous run (in decades) of scanned rates with margin ≥ 0;
    None when no rate is safe."""
    safe = [m >= 0 for m in margins]
    best, start = None, None
    for i, ok in enumerate([*safe, False]):
        if ok and start is None:
            start = i
        if not ok and start is not None:
            width = math.log10(rates[i - 1] / rates[start])
            if best is None or width > best[0]:
                best = (width, start, i - 1)
            start = None
    return None if best is None else (best[1], best[2])


def _crossing(r0, m0, r1, m1) -> float:
    """The rate where the margin crosses 0, linear in log rate between (r0, m0) and (r1, m1)."""
    if m0 == m1:
        return math.sqrt(r0 * r1)
    w = m0 / (m0 - m1)
    return float(math.exp(math.log(r0) + w * (math.log(r1) - math.log(r0))))


def safe_windows(evaluate: Callable[[list[tuple[object, float]]], list[float]], keys: Sequence[object],
                 rates: Sequence[float], bisections: int = 1) -> dict[object, tuple[float, float, str]]:
    """Safe C-rate window of every key by a bracketing root search on its margin m(rate) (safe: m ≥ 0).

    The margins on the scanned ``rates`` select each key's widest safe run; each end inside the scan is
    bracketed by the last unsafe and first safe rate, ``bisections`` geometric-mean bisections narrow
    every bracket (all keys' midpoints in one ``evaluate`` call), and the bound is the crossing of the
    margin, linear in log rate, inside the final bracket.

    Args:
        evaluate: ``[(key, rate), ...] -> [margin, ...]``, called batched.
        keys: one window each (e.g. (candidate, size, direction)).
        rates: the scanned rates, ascending.
        bisections: simulated bisection steps per bracket.

    Returns:
        ``{key: (min_safe, max_safe, note)}``; an end outside the scan is NaN with a note, and both are
        NaN when no scanned rate is safe.
    """
    rates = [float(r) for r in rates]
    grid = evaluate([(k, r) for k in keys for r in rates])
    margins = {k: grid[i * len(rates):(i + 1) * len(rates)] for i, k in enumerate(keys)}
    out: dict[object, list] = {}
    brackets = []  # [key, side, r_unsafe, m_unsafe, r_safe, m_safe]
    for k in keys:
        run = window_from_margins(rates, margins[k])
        if run is None:
            out[k] = [math.nan, math.nan, f"no scanned rate ({rates[0]:g}–{rates[-1]:g}C) is safe"]
            continue
        lo, hi = run
        notes = []
        out[k] = [math.nan, math.nan, ""]
        if lo == 0:
            notes.append(f"lower end open: safe at the slowest scanned rate {rates[0]:g}C")
        else:
            brackets.append([k, 0, rates[lo - 1], margins[k][lo - 1], rates[lo], margins[k][lo]])
        if hi == len(rates) - 1:
            notes.append(f"upper end open: safe at the fastest scanned rate {rates[-1]:g}C")
        else:
            brackets.append([k, 1, rates[hi + 1], margins[k][hi + 1], rates[hi], margins[k][hi]])
        out[k][2] = "; ".join(notes)
    for _ in range(bisections):
        if not brackets:
            break
        mids = [math.sqrt(b[2] * b[4]) for b in brackets]
        values = evaluate([(b[0], m) for b, m in zip(brackets, mids)])
        for b, m, v in zip(brackets, mids, values):
            if v >= 0:
                b[4], b[5] = m, v
            else:
                b[2], b[3] = m, v
    for k, side, r_u, m_u, r_s, m_s in brackets:
        out[k][side] = _crossing(r_u, m_u, r_s, m_s)
    return {k: tuple(v) for k, v in out.items()}


def critical_size(sizes: Sequence[float], margins: Sequence[float],
                  closed_form: Sequence[float | None] | None = None) -> tuple[float, str]:
    """Largest size safe at a fixed rate: where the margin changes sign after the run of safe sizes that
    starts at the smallest; NaN with a note when the smallest is unsafe or every size is safe.

    Two sizes in the regularised range run the same simulation (same driving stress and |η|), so between
    them only σ_c ∝ 1/√L changes and the crossing is exact:
    L_c = (K_Ic/(s·σ_d·Y))²/(π f) (:func:`mechanics.fracture.critical_size_nm`). Elsewhere the crossing
    is interpolated, linear in log size.

    Args:
        sizes: the scanned sizes L, ascending (nm).
        margins: the margin of each size (safe: ≥ 0).
        closed_form: per size, L_c from that size's driving stress where the size is in the regularised
            range, None elsewhere; used where both sizes around the crossing have one.

    Returns:
        ``(L_c in nm, note)``.
    """
    if margins[0] < 0:
        return math.nan, f"unsafe at 1C already at the smallest scanned size {sizes[0]:g} nm"
    for i in range(1, len(sizes)):
        if margins[i] < 0:
            if closed_form is not None and closed_form[i - 1] is not None and closed_form[i] is not None:
                return float(closed_form[i]), ""
            return _crossing(sizes[i - 1], margins[i - 1], sizes[i], margins[i]), ""
    return math.nan, f"safe at 1C at every scanned size up to {sizes[-1]:g} nm"


# ---------------------------------------------------------------------------------------------------
# simulations with a cache


@dataclass(frozen=True)
class _Spec:
    """One simulation: a candidate (index), a size, a rate schedule (K window rates), a direction, a
    seed."""

    cand: int
    size_nm: float
    schedule: tuple[float, ...]
    direction: str
    seed: int


@dataclass
class _Runner:
    items: list
    settings: object
    law: object
    law_label: str
    env: EnvelopeSettings
    cache_path: Path | None
    device: str = "cpu"
    progress: bool = False
    cache: dict = field(default_factory=dict)
    simulated: int = 0

    def __post_init__(self) -> None:
        if self.cache_path is not None and self.cache_path.exists():
            for line in self.cache_path.read_text().splitlines():
                if line.strip():
                    record = json.loads(line)
                    self.cache[record["key"]] = record

    def key(self, spec: _Spec) -> str:
        """The cache key of one simulation, in grid units: two sizes whose model runs the same problem on
        the shared grid (κ per cell², the rest scale-free) share one key, so they are simulated once."""
        from screening.ids import composition_key

        item = self.items[spec.cand]
        n = self.settings.grid_points
        params = self.model_params(spec)
        per_cell = tuple(float(f"{k * (n / spec.size_nm) ** 2:.10g}") for k in params.kappa_aJ_per_nm)
        grid_params = dataclasses.replace(params, kappa_aJ_per_nm=per_cell)
        settings = dataclasses.replace(self.settings, direction=spec.direction).as_dict()
        settings.pop("particle_size_nm")
        payload = {"composition": composition_key(item.fractions), "source": item.source,
                   "params": params_digest(grid_params), "settings": settings,
                   "law": self.law_label, "schedule": [round(r, 12) for r in spec.schedule],
                   "seed": spec.seed,
                   "flaw_fraction": self.env.flaw_fraction, "windows": self.env.soc_windows,
                   "noise_reference_grid": self.env.noise_reference_grid}
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def model_params(self, spec: _Spec):
        """The candidate's parameters with the interface length raised to ``interface_fraction``·L."""
        return model_parameters(self.items[spec.cand].params, spec.size_nm, self.env.interface_fraction)

    def run(self, specs: Sequence[_Spec]) -> list[dict]:
        """Records (metrics, per-window driving stress and |η|) of every spec, simulating the missing
        ones batched by (direction, schedule length)."""
        from mechanics.screen import simulate_conditions

        keys = [self.key(s) for s in specs]
        todo: dict[str, _Spec] = {}
        for k, s in zip(keys, specs):
            if k not in self.cache and k not in todo:
                todo[k] = s
        groups: dict[tuple, list] = {}
        for k, s in todo.items():
            groups.setdefault((s.direction, len(s.schedule)), []).append((k, s))
        from tqdm.auto import tqdm

        # one bar on a terminal, nothing in logs and CI (disable=None)
        bar = tqdm(total=len(todo), desc="envelope simulations", unit="sim",
                   disable=None if self.progress and todo else True)
        for (direction, _), members in groups.items():
            settings = dataclasses.replace(self.settings, direction=direction)
            # a batch steps until its slowest element is done and every element costs the same per step, so
            # elements of like step counts share a batch: slowest schedule first (the step count grows as
            # 1/C below 1C), then size
            members.sort(key=lambda m: (min(m[1].schedule), sum(1 / r for r in m[1].schedule), m[1].size_nm))
            for start in range(0, len(members), self.env.batch_elements):
                chunk = members[start:start + self.env.batch_elements]
                results = simulate_conditions(
                    [self.model_params(s) for _, s in chunk], settings, self.law, self.device,
                    c_rates=[list(s.schedule) for _, s in chunk], sizes_nm=[s.size_nm for _, s in chunk],
                    seeds=[s.seed for _, s in chunk], flaw_fraction=self.env.flaw_fraction,
                    noise_reference_grid=self.env.noise_reference_grid)
                records = [self._record(k, r, s) for (k, s), r in zip(chunk, results)]
                self.simulated += len(records)
                for rec in records:
                    self.cache[rec["key"]] = rec
                if self.cache_path is not None:
                    with self.cache_path.open("a") as fh:
                        fh.writelines(json.dumps(rec) + "\n" for rec in records)
                bar.update(len(records))
        bar.close()
        return [self.cache[k] for k in keys]

    def _record(self, key: str, result, spec: _Spec) -> dict:
        windows = self.env.soc_windows
        obs = result.observed
        n_obs = len(obs.get("driving_stress_MPa", []))
        per = max(1, n_obs // windows)
        stress = [_finite_max(obs["driving_stress_MPa"][w * per:(w + 1) * per]) for w in range(windows)]
        v0 = self.items[spec.cand].params.voltage_V
        curve = result.voltage_curve
        eta = []
        if len(curve):
            x = curve[:, 0]
            lo, hi = self.settings.soc_start, self.settings.soc_end
            progress = (x - lo) / (hi - lo) if spec.direction == "discharge" else (hi - x) / (hi - lo)
            win = np.clip(np.floor(progress * windows), 0, windows - 1)
            for w in range(windows):
                sel = win == w
                eta.append(float(np.abs(curve[sel, 1] - v0).max() * 1e3) if sel.any() else math.nan)
        else:
            eta = [math.nan] * windows
        metrics = {k: float(v) for k, v in result.metrics.items()}
        return {"key": key, "status": result.status, "reason": result.reason, "metrics": metrics,
                "window_stress_MPa": stress, "window_overpotential_mV": eta}


def _finite_max(values) -> float:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return float(values.max()) if values.size else math.nan


def _kappa_floor(params, size_nm: float, interface_fraction: float) -> float:
    """ρ_s Ω (f_λ L)²: the gradient coefficient whose interface length is f_λ·L (aJ/nm)."""
    from mechanics import units

    energy_aJ_per_nm3 = params.site_density_per_nm3 * params.omega_eV * units.AJ_PER_EV
    return energy_aJ_per_nm3 * (interface_fraction * size_nm) ** 2


def model_parameters(params, size_nm: float, interface_fraction: float):
    """``params`` with its gradient energy raised so that the interface length λ = √(κ/(ρ_s Ω)) along each
    axis is at least ``interface_fraction``·L: κ → max(κ, ρ_s Ω (f_λ L)²).

    Linear elasticity has no length scale, so once λ/L is fixed the platelet's problem is the same for
    every size L on a grid of N cells (a regularised, sharp-interface-limit model of the larger sizes;
    docs/envelope.md); the material's own κ is kept where it is already wider.
    """
    floor = _kappa_floor(params, size_nm, interface_fraction)
    kappa = tuple(max(float(k), floor) for k in params.kappa_aJ_per_nm)
    if kappa == tuple(params.kappa_aJ_per_nm):
        return params
    return dataclasses.replace(params, kappa_aJ_per_nm=kappa)


def is_regularised(params, size_nm: float, interface_fraction: float) -> bool:
    """Whether size L is in the regularised range: every axis runs the raised λ = f_λ·L (none keeps the
    material's wider interface), so all such sizes run one problem on the grid."""
    floor = _kappa_floor(params, size_nm, interface_fraction)
    return all(float(k) <= floor for k in params.kappa_aJ_per_nm)


def params_digest(params) -> str:
    """A hash of a candidate's parameters: two candidates of one composition with other parameters (a
    property source, a variant) are other simulations."""
    text = json.dumps(dataclasses.asdict(params), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def envelope_id(item, settings, law_label: str) -> str:
    """The envelope's ``candidate_id``: :func:`screening.ids.candidate_id` over the composition, the
    envelope's simulation settings (with the parameters' hash) and the law."""
    from screening.ids import candidate_id

    return candidate_id(item.fractions, {**settings.as_dict(), "params": params_digest(item.params)},
                        law_label, item.source)


def _quantile(values, q: float) -> float:
    values = [v for v in values if math.isfinite(v)]
    return float(np.quantile(values, q)) if values else math.nan


# ---------------------------------------------------------------------------------------------------
# the envelope


@dataclass
class EnvelopeResult:
    """``table``: envelope.csv rows; ``summary``: envelope_summary.csv rows; ``protocols``: per
    (candidate_id, size_nm) the two schedules as DataFrames (soc_start, soc_end, c_rate) under
    ``"fixed_time"`` (b) and ``"fastest"`` (a); ``simulated``: simulations run (0 on a full resume);
    ``files``: what was written."""

    table: pd.DataFrame
    summary: pd.DataFrame
    protocols: dict = field(default_factory=dict)
    simulated: int = 0
    files: list = field(default_factory=list)


def simulation_settings(settings, env: EnvelopeSettings):
    """The settings the envelope simulates with: no snapshots, and a whole number of observations per
    protocol window (so each window's driving stress is the maximum over its own observations)."""
    per_window = max(1, math.ceil(settings.observations / env.soc_windows))
    return dataclasses.replace(settings, snapshots=0, observations=env.soc_windows * per_window)


def _check_inputs(env: EnvelopeSettings, settings) -> None:
    from mechanics.screen import ScreeningSettings

    if not isinstance(settings, ScreeningSettings):
        raise InputError("settings", "a mechanics.screen.ScreeningSettings", type(settings).__name__)
    if settings.grid_points * env.flaw_fraction < MIN_FLAW_CELLS:
        need = math.ceil(MIN_FLAW_CELLS / env.flaw_fraction)
        raise InputError("--grid-points", f"enough cells for the flaw a₀ = {env.flaw_fraction:g}·L to span "
                         f"≥ {MIN_FLAW_CELLS:g} cells (grid_points ≥ {need})", settings.grid_points)
    if settings.grid_points * env.interface_fraction < MIN_INTERFACE_CELLS - 1e-9:
        need = math.ceil(MIN_INTERFACE_CELLS / env.interface_fraction)
        raise InputError("--grid-points", f"cells enough for the interface λ = {env.interface_fraction:.3g}L "
                         f"to span ≥ {MIN_INTERFACE_CELLS:g} cells (grid_points ≥ {need})",
                         settings.grid_points)


def charging_envelope(
    candidates: Iterable,
    law="vegard",
    c_rates: Sequence[float] | None = None,
    sizes_nm: Sequence[float] | None = None,
    settings=None,
    *,
    envelope: EnvelopeSettings | None = None,
    out: str | os.PathLike | None = None,
    source: str = "literature",
    device: str = "cpu",
    tracking_uri: str | None = None,
    progress: bool = False,
) -> EnvelopeResult:
    """Safe C-rate window, critical size and two charging protocols per candidate × size × direction.

    Args:
        candidates: ``candidates.Candidate`` objects (or :class:`screening.driver.SweepItem`).
        law: the eigenstrain law (see :func:`screening.api.resolve_law`): ``"vegard"``, a module, a URI.
        c_rates: override ``envelope.c_rates``.
        sizes_nm: override ``envelope.sizes_nm``.
        settings: the simulation's :class:`mechanics.screen.ScreeningSettings` (default
            :func:`default_simulation_settings`, the free platelet); its ``c_rate``,
            ``particle_size_nm`` and ``direction`` are replaced by the scan.
        envelope: :class:`EnvelopeSettings` (default: its defaults).
        out: directory for the files of docs/envelope.md and the cache (None: nothing written).
        source: end-member property source.
        device: torch device of the simulations.
        tracking_uri: the MLflow store of a model URI ``law``.
        progress: a progress bar over the simulations (on a terminal; quiet in logs).

    Returns:
        :class:`EnvelopeResult`.

    Raises:
        InputError: bad input, named by its field or flag, before any simulation or file.
    """
    from mechanics.parameters.fracture_toughness import fracture_toughness
    from screening.api import prepare_items, resolve_law
    from screening.driver import SweepItem

    env = envelope if envelope is not None else EnvelopeSettings()
    if not isinstance(env, EnvelopeSettings):
        raise InputError("envelope", "a screening.envelope.EnvelopeSettings", type(env).__name__)
    changes = {}
    if c_rates is not None:
        changes["c_rates"] = c_rates
    if sizes_nm is not None:
        changes["sizes_nm"] = sizes_nm
    env = dataclasses.replace(env, **changes) if changes else env
    settings = default_simulation_settings() if settings is None else settings
    _check_inputs(env, settings)
    windows = env.soc_windows
    settings = simulation_settings(settings, env)
    space = list(candidates)
    if not space:
        raise InputError("candidates", "at least one candidate", space)
    items = space if all(isinstance(c, SweepItem) for c in space) else prepare_items(space, source)
    toughness = [fracture_toughness(it.params, it.fractions) for it in items]  # InputError k_ic first
    module, label = resolve_law(law, tracking_uri)
    out_dir = None if out is None else Path(out)
    if out_dir is not None:
        if out_dir.exists() and not out_dir.is_dir():
            raise InputError("--out", "a directory", str(out_dir))
        out_dir.mkdir(parents=True, exist_ok=True)
    runner = _Runner(items, settings, module, label, env, None if out_dir is None else out_dir / CACHE_FILE,
                     device=device, progress=progress)
    ids = [envelope_id(it, settings, label) for it in items]
    rates = sorted(set(env.c_rates) | {1.0})  # 1C is needed for the critical size
    seeds = [settings.seed + k for k in range(env.seeds)]  # noise seeds seed, seed + 1, ...
    sizes = list(env.sizes_nm)
    sigma_c = {(i, L): critical_stress_MPa(t.k_ic_MPa_sqrt_m, env.flaw_fraction * L, env.geometry_factor)
               for i, t in enumerate(toughness) for L in sizes}

    def stats(recs):
        q = env.seed_quantile
        m = [r["metrics"] for r in recs if r["status"] == "FINISHED"]
        if not m:
            return None
        return {
            "peak_tensile_stress_MPa": _quantile([x["peak_tensile_stress_MPa"] for x in m], q),
            "driving_stress_MPa": _quantile([x["driving_stress_MPa"] for x in m], q),
            "overpotential_mV": _quantile([x.get("max_overpotential_mV", math.nan) for x in m], q),
            "phase_separation": float(np.mean([x["phase_separation"] for x in m])),
            "window_stress_MPa": [_quantile([r["window_stress_MPa"][w] for r in recs], q)
                                  for w in range(windows)],
            "window_overpotential_mV": [_quantile([r["window_overpotential_mV"][w] for r in recs], q)
                                        for w in range(windows)],
        }

    # every scanned condition in one batched pass (the cache serves everything after)
    runner.run([_Spec(i, L, (r,), d, s) for d in env.directions for i in range(len(items)) for L in sizes
                for r in rates for s in seeds])

    def margin(key_rate) -> float:
        (i, L, d), r = key_rate
        st = stats(runner.run([_Spec(i, L, (r,), d, s) for s in seeds]))
        if st is None:
            return -1.0
        sf = sigma_c[(i, L)] / max(st["driving_stress_MPa"], 1e-9)
        return min(sf / env.safety_factor - 1.0, 1.0 - st["overpotential_mV"] / env.max_overpotential_mV)

    def evaluate(pairs):
        runner.run([_Spec(k[0], k[1], (r,), k[2], s) for k, r in pairs for s in seeds])
        return [margin(p) for p in pairs]

    def closed_form_size(i, L, d) -> float | None:
        """L_c from the driving stress at 1C where L is in the regularised range (None elsewhere)."""
        if not is_regularised(items[i].params, L, env.interface_fraction):
            return None
        st = stats(runner.run([_Spec(i, L, (1.0,), d, s) for s in seeds]))
        if st is None or not st["driving_stress_MPa"] > 0:  # compressive or NaN: no finite L_c
            return None
        return critical_size_nm(toughness[i].k_ic_MPa_sqrt_m, st["driving_stress_MPa"], env.flaw_fraction,
                                env.safety_factor, env.geometry_factor)

    keys = [(i, L, d) for i in range(len(items)) for L in sizes for d in env.directions]
    window = safe_windows(evaluate, keys, rates, env.bisections)

    rows, failures = [], {}
    for d in env.directions:
        for i, it in enumerate(items):
            for L in sizes:
                for r in rates:
                    recs = runner.run([_Spec(i, L, (r,), d, s) for s in seeds])
                    for rec in recs:
                        if rec["status"] != "FINISHED":
                            failures.setdefault((i, L, d), f"{r:g}C failed: {rec['reason']}")
                    st = stats(recs)
                    st = st or {k: math.nan for k in ("peak_tensile_stress_MPa", "driving_stress_MPa",
                                                       "overpotential_mV", "phase_separation")}
                    drive = st["driving_stress_MPa"]
                    sf = sigma_c[(i, L)] / drive if drive > 0 else (math.inf if drive <= 0 else math.nan)
                    rows.append({"candidate_id": ids[i], "formula": it.formula, "size_nm": L, "c_rate": r,
                                 "direction": d, "peak_tensile_stress_MPa": st["peak_tensile_stress_MPa"],
                                 "driving_stress_MPa": st["driving_stress_MPa"],
                                 "critical_stress_MPa": sigma_c[(i, L)], "safety_factor": sf,
                                 "fractured": bool(sf < 1.0), "overpotential_mV": st["overpotential_mV"],
                                 "phase_separation": st["phase_separation"]})
    table = pd.DataFrame(rows, columns=ENVELOPE_COLUMNS)

    protocols, summary_rows = {}, []
    plan = _protocols(items, sizes, rates, env, settings, sigma_c, runner, stats, seeds) \
        if "charge" in env.directions else {}
    for i, it in enumerate(items):
        for d in env.directions:
            size_margins = [margin(((i, L, d), 1.0)) for L in sizes]
            crit, crit_note = critical_size(sizes, size_margins, [closed_form_size(i, L, d) for L in sizes])
            for L in sizes:
                lo, hi, note = window[(i, L, d)]
                p = plan.get((i, L), {}) if d == "charge" else {}
                notes = [n for n in (note, crit_note, p.get("note", ""), failures.get((i, L, d), "")) if n]
                summary_rows.append({
                    "candidate_id": ids[i], "formula": it.formula, "size_nm": L, "direction": d,
                    "min_safe_C_rate": lo, "max_safe_C_rate": hi, "critical_size_nm_at_1C": crit,
                    "fastest_time_min": p.get("fastest_time_min", math.nan),
                    "protocol_time_min": p.get("protocol_time_min", math.nan),
                    "protocol_peak_stress_MPa": p.get("protocol_peak_stress_MPa", math.nan),
                    "constant_peak_stress_MPa": p.get("constant_peak_stress_MPa", math.nan),
                    "k_ic_source": toughness[i].source, "note": "; ".join(notes)})
                if "fixed_time" in p:
                    protocols[(ids[i], L)] = {"fixed_time": p["fixed_time"], "fastest": p.get("fastest")}
    summary = pd.DataFrame(summary_rows, columns=SUMMARY_COLUMNS)
    result = EnvelopeResult(table, summary, protocols, simulated=runner.simulated)
    if out_dir is not None:
        result.files = _write(out_dir, result, sigma_c, ids, items, sizes, plan)
    return result


# ---------------------------------------------------------------------------------------------------
# protocols (charge): piecewise-constant current over K windows of equal ΔX, verified by simulation


def _interp_log(rates: Sequence[float], values: Sequence[float], r: float) -> float:
    """A per-window table over the scanned rates, linear in log rate (clamped at the scanned ends)."""
    return float(np.interp(math.log(r), np.log(rates), values))


def fixed_time_schedule(rates: Sequence[float], window_stress: Sequence[Sequence[float]], span: float,
                        hours: float) -> tuple[list[float], float]:
    """The two-rate schedule of total time ``hours`` with the smallest predicted driving stress.

    The windows most stressed at the constant current r_T = span/hours run at a fast scanned rate r_f,
    the rest at the slow rate r_s that makes the total time exactly ``hours``; n_f = 0 is the constant
    current itself, so the prediction is never worse than it. ``window_stress[k][w]`` is the driving
    stress of window w in the constant-current run at ``rates[k]``.

    Returns:
        (window rates, predicted driving stress).
    """
    table = np.asarray(window_stress, dtype=float)  # (rates, K)
    k_windows = table.shape[1]
    delta = span / k_windows
    r_t = span / hours

    def predict(schedule):
        return max(_interp_log(rates, table[:, w], schedule[w]) for w in range(k_windows))

    best = ([r_t] * k_windows, predict([r_t] * k_windows))
    order = np.argsort([-_interp_log(rates, table[:, w], r_t) for w in range(k_windows)])
    for r_f in rates:
        if r_f <= r_t:
            continue
        for n_f in range(1, k_windows):
            rest = hours - n_f * delta / r_f
            if rest <= 0:
                break
            r_s = (k_windows - n_f) * delta / rest
            schedule = [r_s] * k_windows
            for w in order[:n_f]:
                schedule[int(w)] = r_f
            value = predict(schedule)
            if value < best[1]:
                best = (schedule, value)
    return best


def _protocols(items, sizes, rates, env, settings, sigma_c, runner, stats, seeds) -> dict:
    k_windows = env.soc_windows
    span = settings.soc_end - settings.soc_start
    delta = span / k_windows
    hours = env.target_min / 60.0
    plans = {}
    for i in range(len(items)):
        for L in sizes:
            cc = [stats(runner.run([_Spec(i, L, (r,), "charge", s) for s in seeds])) for r in rates]
            if any(c is None for c in cc):
                plans[(i, L)] = {"note": "protocol skipped: a constant-current run failed"}
                continue
            stress = [c["window_stress_MPa"] for c in cc]
            eta = [c["window_overpotential_mV"] for c in cc]
            limit = sigma_c[(i, L)] / env.safety_factor
            fastest = []
            for w in range(k_windows):
                ok = [r for k, r in enumerate(rates)
                      if stress[k][w] <= limit and eta[k][w] <= env.max_overpotential_mV]
                fastest.append(max(ok) if ok else math.nan)
            schedule, _ = fixed_time_schedule(rates, stress, span, hours)
            plans[(i, L)] = {"fastest_plan": fastest, "fixed_plan": schedule,
                             "constant": [span / hours] * k_windows, "limit": limit, "note": ""}
    # verify every schedule by one continuous simulation (all of them batched)
    specs = []
    for (i, L), p in plans.items():
        for name in ("fastest_plan", "fixed_plan", "constant"):
            if name in p and all(math.isfinite(r) for r in p[name]):
                specs += [_Spec(i, L, tuple(p[name]), "charge", s) for s in seeds]
    runner.run(specs)
    out = {}
    for (i, L), p in plans.items():
        if "fixed_plan" not in p:
            out[(i, L)] = {"note": p["note"]}
            continue
        verified = {name: stats(runner.run([_Spec(i, L, tuple(p[name]), "charge", s) for s in seeds]))
                    for name in ("fixed_plan", "constant")}
        notes = []
        fixed, const = verified["fixed_plan"], verified["constant"]
        chosen, chosen_stats = p["fixed_plan"], fixed
        if fixed is None or (const is not None
                             and fixed["driving_stress_MPa"] >= const["driving_stress_MPa"]):
            chosen, chosen_stats = p["constant"], const
            notes.append("protocol (b) = constant current (no verified improvement)")
        entry = {
            "fixed_time": _schedule_frame(chosen, settings, k_windows),
            "fixed_time_rates": chosen, "constant_rates": p["constant"],
            "protocol_time_min": 60.0 * sum(delta / r for r in chosen),
            "protocol_peak_stress_MPa": chosen_stats["driving_stress_MPa"] if chosen_stats else math.nan,
            "constant_peak_stress_MPa": const["driving_stress_MPa"] if const else math.nan,
            "window_stress": chosen_stats["window_stress_MPa"] if chosen_stats else None,
            "constant_window_stress": const["window_stress_MPa"] if const else None,
            "limit": p["limit"],
        }
        if all(math.isfinite(r) for r in p["fastest_plan"]):
            fast = stats(runner.run([_Spec(i, L, tuple(p["fastest_plan"]), "charge", s) for s in seeds]))
            ok = fast is not None and fast["driving_stress_MPa"] <= p["limit"] \
                and fast["overpotential_mV"] <= env.max_overpotential_mV
            entry["fastest"] = _schedule_frame(p["fastest_plan"], settings, k_windows)
            entry["fastest_time_min"] = 60.0 * sum(delta / r for r in p["fastest_plan"])
            if not ok:
                got = math.nan if fast is None else fast["driving_stress_MPa"]
                notes.append(f"fastest protocol (a) failed its verification (driving stress {got:.0f} MPa > "
                             f"σ_c/s = {p['limit']:.0f} MPa or |η| over the limit): treat it as unsafe")
        else:
            notes.append("no fastest protocol (a): some window is unsafe at every scanned rate")
        entry["note"] = "; ".join(notes)
        out[(i, L)] = entry
    return out


def _schedule_frame(schedule, settings, k_windows) -> pd.DataFrame:
    hi, delta = settings.soc_end, (settings.soc_end - settings.soc_start) / k_windows
    return pd.DataFrame({"soc_start": [round(hi - w * delta, 9) for w in range(k_windows)],
                         "soc_end": [round(hi - (w + 1) * delta, 9) for w in range(k_windows)],
                         "c_rate": list(schedule)})


# ---------------------------------------------------------------------------------------------------
# files


def _write(out_dir: Path, result: EnvelopeResult, sigma_c, ids, items, sizes, plan) -> list[Path]:
    """Write the contract's files, each through a temporary name and an atomic rename."""
    written = []

    def save_csv(frame: pd.DataFrame, name: str) -> None:
        path = out_dir / name
        tmp = path.with_name(path.name + ".tmp")
        frame.to_csv(tmp, index=False)
        os.replace(tmp, path)
        written.append(path)

    save_csv(result.table, "envelope.csv")
    save_csv(result.summary, "envelope_summary.csv")
    for (cid, L), prot in result.protocols.items():
        save_csv(prot["fixed_time"], f"protocol_{cid}_{L:g}.csv")
        if prot.get("fastest") is not None:
            save_csv(prot["fastest"], f"protocol_{cid}_{L:g}_fastest.csv")
    written += _plots(out_dir, result, sigma_c, ids, items, sizes, plan)
    return written


def _plots(out_dir, result, sigma_c, ids, items, sizes, plan) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    table = result.table
    for i, cid in enumerate(ids):
        sub = table[table["candidate_id"] == cid]
        directions = list(dict.fromkeys(sub["direction"]))
        fig, axes = plt.subplots(1, len(directions), figsize=(5 * len(directions), 4), squeeze=False)
        for ax, d in zip(axes[0], directions):
            part = sub[sub["direction"] == d].pivot(index="size_nm", columns="c_rate", values="safety_factor")
            mesh = ax.pcolormesh(part.columns, part.index, np.log10(part.values.astype(float)),
                                 shading="nearest", cmap="RdYlGn", vmin=-1, vmax=1)
            if part.shape[0] > 1 and part.shape[1] > 1:
                ax.contour(part.columns, part.index, part.values.astype(float), levels=[1.0], colors="k")
            ax.set(xscale="log", yscale="log", xlabel="C-rate", ylabel="particle size (nm)",
                   title=f"{items[i].formula} {d}: log10 σ_c/σ (black: σ = σ_c)")
            fig.colorbar(mesh, ax=ax)
        path = out_dir / f"map_{cid}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
        for L in sizes:
            p = plan.get((i, L), {})
            if "fixed_time" not in p or p.get("window_stress") is None:
                continue
            frame = p["fixed_time"]
            mid = 0.5 * (frame["soc_start"] + frame["soc_end"])
            fig, (a1, a2) = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
            a1.step(mid, frame["c_rate"], where="mid", label="protocol (b)")
            a1.step(mid, p["constant_rates"], where="mid", label="constant current", linestyle="--")
            a1.set(yscale="log", ylabel="C-rate", title=f"{items[i].formula}, {L:g} nm, charge")
            a1.legend()
            a2.plot(mid, p["window_stress"], "o-", label="protocol (b)")
            if p.get("constant_window_stress") is not None:
                a2.plot(mid, p["constant_window_stress"], "s--", label="constant current")
            a2.axhline(sigma_c[(i, L)], color="k", label="σ_c")
            a2.axhline(p["limit"], color="k", linestyle=":", label="σ_c / s")
            a2.set(xlabel="Li fraction X (charge runs right to left)", ylabel="driving stress (MPa)")
            a2.invert_xaxis()
            a2.legend()
            path = out_dir / f"protocol_{ids[i]}_{L:g}.png"
            fig.tight_layout()
            fig.savefig(path, dpi=90)
            plt.close(fig)
            written.append(path)
    return written


__all__ = ["EnvelopeResult", "EnvelopeSettings", "charging_envelope", "critical_size", "fixed_time_schedule",
           "is_regularised", "model_parameters", "print_envelope", "safe_windows", "window_from_margins"]


# ---------------------------------------------------------------------------------------------------
# the sweep's --envelope: window and protocol figures as metrics of each candidate's MLflow run

SWEEP_METRICS = ("min_safe_C_rate", "max_safe_C_rate", "critical_size_nm_at_1C", "fastest_time_min",
                 "protocol_time_min", "protocol_peak_stress_MPa", "constant_peak_stress_MPa")


def sweep_metrics(summary: pd.DataFrame, candidate_id: str, size_nm: float,
                  scanned: tuple[float, float]) -> dict[str, float]:
    """The finite envelope figures of one candidate as metrics ``<name>_<direction>_<size>nm``, plus the
    ranking objective ``safe_window_decades`` (charge, at ``size_nm``; :mod:`screening.ranking`)."""
    from screening.ranking import safe_window_decades

    rows = summary[(summary["candidate_id"] == candidate_id) & (summary["size_nm"] == size_nm)]
    out = {}
    for row in rows.itertuples():
        for name in SWEEP_METRICS:
            value = float(getattr(row, name))
            if math.isfinite(value):
                out[f"{name}_{row.direction}_{size_nm:g}nm"] = value
        if row.direction == "charge":
            any_safe = "no scanned rate" not in str(row.note)
            out["safe_window_decades"] = safe_window_decades(row.min_safe_C_rate, row.max_safe_C_rate,
                                                             *scanned, any_safe=any_safe)
    return out


def log_sweep_envelope(outcome, space, law, settings, *, source: str = "literature",
                       envelope: EnvelopeSettings | None = None,
                       out: str | os.PathLike | None = None) -> Path:
    """``chemoscreen sweep --envelope``: the envelope of the swept candidates at the sweep's
    ``particle_size_nm`` and fidelity, logged on each finished candidate's child run (metrics above,
    artifacts under ``envelope/``: the map, the protocol CSV and PNG).

    Returns:
        The directory holding the envelope's files (``out``, default ``envelope-<sweep_id>``).
    """
    from chemoscreen import store
    from screening import tracking
    from screening.api import prepare_items
    from screening.ids import candidate_id

    env = envelope if envelope is not None else EnvelopeSettings()
    size = float(settings.particle_size_nm)
    out_dir = Path(out) if out is not None else Path(f"envelope-{outcome.sweep_id}")
    items = prepare_items(space, source)
    result = charging_envelope(items, law, sizes_nm=(size,), settings=settings, envelope=env, out=out_dir,
                               source=source, tracking_uri=outcome.tracking_uri)
    client = store.open_store(outcome.tracking_uri)
    runs = dict(zip(outcome.table["candidate_id"], outcome.table["run_id"]))
    env_settings = simulation_settings(settings, env)
    scanned = (min(env.c_rates), max(env.c_rates))
    for item in items:
        run_id = runs.get(candidate_id(item.fractions, settings.as_dict(), outcome.model_uri, item.source))
        env_id = envelope_id(item, env_settings, outcome.model_uri)
        if not isinstance(run_id, str):
            continue
        tracking.log_metrics(client, run_id, sweep_metrics(result.summary, env_id, size, scanned))
        for path in (out_dir / f"map_{env_id}.png", out_dir / f"protocol_{env_id}_{size:g}.png",
                     out_dir / f"protocol_{env_id}_{size:g}.csv"):
            if path.exists():
                client.log_artifact(run_id, str(path), "envelope")
    return out_dir


def print_envelope(result: EnvelopeResult, file=None) -> None:
    """Print the window of every candidate × size × direction and the charging protocols (rate per SOC
    window) of an :class:`EnvelopeResult` (the demo's last step)."""
    import sys

    out = file or sys.stdout
    columns = ["formula", "size_nm", "direction", "min_safe_C_rate", "max_safe_C_rate",
               "critical_size_nm_at_1C", "fastest_time_min", "protocol_peak_stress_MPa",
               "constant_peak_stress_MPa", "note"]
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 70,
                           "display.float_format", "{:.4g}".format):
        print(result.summary[columns].to_string(index=False), file=out)
    formulas = dict(zip(result.summary["candidate_id"], result.summary["formula"]))
    for (cid, size), protocol in result.protocols.items():
        for name, label in (("fastest", "(a) fastest safe"), ("fixed_time", "(b) fixed time")):
            frame = protocol.get(name)
            if frame is None:
                continue
            rates = ", ".join(f"{r:.3g}" for r in frame["c_rate"])
            print(f"{formulas.get(cid, cid)} {size:g} nm, protocol {label}: C-rate per window of X from "
                  f"{frame['soc_start'].iloc[0]:g} down to {frame['soc_end'].iloc[-1]:g}: {rates}", file=out)
