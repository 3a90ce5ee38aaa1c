"""Limits of the envelope's physics through the simulator (slow: minutes on 2 cores): the driving stress
converges on grid refinement, the slow-rate stress tends to the quasi-static two-phase particle solved
directly with the elasticity core, and a larger misfit gives a smaller critical size."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from mechanics.fracture import flaw_averaged_stress
from mechanics.parameters.lfp import lfp_params
from screening.envelope import model_parameters


def _settings(**changes):
    from mechanics.screen import ScreeningSettings

    base = dict(fidelity="particle", direction="charge", observations=30, snapshots=0)
    return ScreeningSettings(**{**base, **changes})


@pytest.mark.slow
def test_driving_stress_converges_on_grid_refinement():
    """The envelope's driving stress (flaw a₀ = 0.1·L, interface λ = L/16, upper quartile over 32 seeds,
    the noise at a fixed intensity per platelet area) of LiFePO4 at 5C, 200 nm, charge changes by ≤ 10 %
    from 32² to 64² (the issue's criterion; λ spans 2 then 4 cells, a₀ 3.2 then 6.4). 5C: the platelet
    phase-separates partly (index ≈ 0.3), where the stress is largest among the rates that take seconds
    here. 32 seeds: one platelet's driving stress varies by ±30 % between seeds, and the upper quartile of
    16 seeds scattered by ±11 % (seeds 0–15 and 16–31 gave 583 and 729 MPa at 64²), more than the
    criterion. Measured 2026-12-07 with the screening's 6 correctors: 693 → 717 MPa (3.4 %), with the
    plain step 695 → 689 MPa (0.9 %). With the noise per cell instead (the amplitude not scaled with the grid)
    the 16-seed quartile went 677 → 501 MPa (35 %): a finer grid then weakens the fluctuations that
    seed phase separation, and that, not the stress measure, was the grid dependence (docs/envelope.md)."""
    from mechanics.screen import simulate_conditions

    size, seeds = 200.0, list(range(32))
    p = model_parameters(lfp_params(), size, 1 / 16)
    values = []
    for n in (32, 64):
        settings = _settings(grid_points=n, particle_size_nm=size, c_rate=5.0)
        res = simulate_conditions([p] * len(seeds), settings, seeds=seeds, flaw_fraction=0.1,
                                  noise_reference_grid=32)
        values.append(float(np.quantile([r.metrics["driving_stress_MPa"] for r in res], 0.75)))
    assert abs(values[1] - values[0]) <= 0.10 * values[1], values


def _binodal(params) -> float:
    """Li-poor binodal x_α of the regular solution: ln((1 − x)/x) = (Ω/kT)(1 − 2x), x < ½ (bisection)."""
    from mechanics import units

    w = params.omega_eV * units.AJ_PER_EV / units.kT_aJ(params.temperature_K)
    lo, hi = 1e-12, 0.5 - 1e-6
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if math.log((1 - mid) / mid) - w * (1 - 2 * mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def _interface_profile(params, lam_nm: float) -> tuple[np.ndarray, np.ndarray]:
    """The equilibrium 1-D interface between the two binodal phases of the regular solution with the
    model's gradient energy: the profile c(x) (x in nm, centred where c = ½) minimising
    ∫ [f(c) − f(x_α) + κ/2 c'²] dx with c = x_α and 1 − x_α at the ends (±12 λ), by L-BFGS on 801 points;
    independent of the phase-field stepper."""
    from scipy.optimize import minimize

    from mechanics import units

    kT = units.kT_aJ(params.temperature_K)
    rho, omega = params.site_density_per_nm3, params.omega_eV * units.AJ_PER_EV
    kappa = float(params.kappa_aJ_per_nm[0])
    x_a = _binodal(params)

    def f(c):
        c = np.clip(c, 1e-12, 1 - 1e-12)
        return rho * (kT * (c * np.log(c) + (1 - c) * np.log1p(-c)) + omega * c * (1 - c))

    xs = np.linspace(-12 * lam_nm, 12 * lam_nm, 801)
    h = xs[1] - xs[0]

    def energy(inner):
        c = np.concatenate([[x_a], inner, [1 - x_a]])
        cc = np.clip(c, 1e-12, 1 - 1e-12)
        mu = rho * (kT * (np.log(cc) - np.log1p(-cc)) + omega * (1 - 2 * cc))
        value = (f(c) - f(x_a)).sum() * h + 0.5 * kappa * (np.diff(c) ** 2).sum() / h
        return value, mu[1:-1] * h + kappa * (2 * c[1:-1] - c[:-2] - c[2:]) / h

    start = x_a + (1 - 2 * x_a) * 0.5 * (1 + np.tanh(xs / (2 * lam_nm)))
    sol = minimize(energy, start[1:-1], jac=True, method="L-BFGS-B", bounds=[(1e-9, 1 - 1e-9)] * 799,
                   options={"maxiter": 20000, "ftol": 1e-15, "gtol": 1e-12})
    profile = np.concatenate([[x_a], sol.x, [1 - x_a]])
    return xs - np.interp(0.5, profile, xs), profile


SUBCELL = 7  # supersampling of the reference's interface placement (odd: cell centres on fine cells)


def _signed_distance_nm(composition: np.ndarray, size_nm: float, sub: int = SUBCELL) -> np.ndarray:
    """Each cell centre's signed distance (nm, > 0 in the Li-rich phase) to the arrangement's interface,
    the X = ½ level set of the composition interpolated bilinearly on a grid ``sub`` times finer: the
    interface is placed to 1/sub of a cell. (Thresholding the cells themselves puts it on a cell edge,
    ±½ cell: a quarter of λ at 2 cells across it, and the flaw-averaged stress, set where the interface
    meets the free edge, then moved by ±20 % between seeds whose simulated stress agreed to 5 %.)"""
    from scipy import ndimage

    n = composition.shape[0]
    fine = ndimage.zoom(np.asarray(composition, dtype=float), sub, order=1, grid_mode=True, mode="nearest")
    beta = fine > 0.5
    cells = ndimage.distance_transform_edt(beta) - ndimage.distance_transform_edt(~beta)
    # the interface lies between fine cells
    distance = np.where(beta, cells - 0.5, cells + 0.5) * (size_nm / (n * sub))
    return distance[sub // 2::sub, sub // 2::sub]


def _quasi_static_driving_stress(params, composition: np.ndarray, size_nm: float, flaw_cells: float) -> float:
    """The coherent two-phase platelet of the same phase arrangement at equilibrium: the binodal phases
    of the regular solution joined by the equilibrium interface of the model's λ (each cell's signed
    distance to the arrangement's interface, :func:`_signed_distance_nm`, mapped through
    :func:`_interface_profile`), Vegard eigenstrain, traction-free edges, solved directly by
    :func:`mechanics.elasticity.solve.solve_elasticity` (plane stress, a–c plane)."""
    from mechanics import units
    from mechanics.elasticity.solve import solve_elasticity
    from mechanics.grid import Grid
    from mechanics.stiffness import Stiffness

    n, pad = composition.shape[0], 8
    omega = params.omega_eV * units.AJ_PER_EV
    lam = math.sqrt(params.kappa_aJ_per_nm[0] / (params.site_density_per_nm3 * omega))  # λ = √(κ/ρΩ)
    xs, profile = _interface_profile(params, lam)
    distance = _signed_distance_nm(composition, size_nm)
    c = torch.as_tensor(np.interp(distance, xs, profile)).double()
    c = torch.nn.functional.pad(c, [pad] * 4)
    mask = torch.zeros(c.shape, dtype=torch.bool)
    mask[pad:pad + n, pad:pad + n] = True
    eps = torch.zeros((*c.shape, 2, 2), dtype=torch.float64)
    eps[..., 0, 0] = params.misfit[0] * c  # grid axes carry crystal a and c
    eps[..., 1, 1] = params.misfit[2] * c
    stiffness = Stiffness.from_voigt(torch.tensor(params.stiffness_voigt(), dtype=torch.float64))
    result = solve_elasticity(Grid(c.shape, spacing_nm=size_nm / n), stiffness, eps, mask=mask,
                              plane="stress", axes=(0, 2))
    return 1e3 * float(flaw_averaged_stress(result.stress[pad:pad + n, pad:pad + n], flaw_cells))


QS_RATES = (20.0, 1.0, 0.2)
QS_SEEDS = (0, 1, 2, 3)


@pytest.fixture(scope="module")
def half_lithiated():
    """LiFePO4, 50 nm free platelet, 32² (λ = L/16 over 2 cells), discharged at QS_RATES with QS_SEEDS,
    the composition and the driving stress (flaw a₀ = 0.2·L, 6.4 cells) at X = ½ of each (rate-major)."""
    from mechanics.screen import simulate_conditions

    size, flaw = 50.0, 0.2
    p = model_parameters(lfp_params(), size, 1 / 16)
    settings = _settings(grid_points=32, particle_size_nm=size, direction="discharge", observations=2,
                         snapshots=1, dtype="float64")
    rates = [r for r in QS_RATES for _ in QS_SEEDS]
    res = simulate_conditions([p] * len(rates), settings, c_rates=rates, seeds=list(QS_SEEDS) * len(QS_RATES),
                              flaw_fraction=flaw)
    return p, size, flaw * 32, res


@pytest.mark.slow
def test_slow_rate_driving_stress_tends_to_the_quasi_static_two_phase_particle(half_lithiated):
    """At X = ½ the slowly discharged platelet is two pure phases (separation index ≥ 0.4 of ½) and its
    driving stress is, seed by seed, within 10 % of the coherent two-phase particle of the same
    arrangement at equilibrium (binodal phases, the equilibrium interface of the model's λ placed to ⅐
    cell), solved directly; the gap shrinks as the rate falls, and at 20C the platelet is nearly uniform
    and far from any two-phase particle. 10 %: the 0.2C run still moves (its interface sweeps the
    platelet over the 5 h of the discharge) and the reference places its interface to ⅐ cell. Measured
    2026-12-07 (32², λ = L/16, a₀ = 0.2·L, seeds 0-7): 0.2C within 0–6 % on both the plain and the
    corrected step (median 3 % / 2 %), 1C −1 to −16 % (median −13 %), 20C −99 %. Against a *sharp*
    interface at the binodal compositions the gap levelled off near 40 %: the diffuse interface, not the
    phases' compositions, separates the model from the sharp-interface particle (docs/envelope.md)."""
    p, size, flaw_cells, res = half_lithiated
    gaps = {}
    for i, r in enumerate(res):
        simulated = float(r.observed["driving_stress_MPa"][0])  # the observation at X = ½
        quasi_static = _quasi_static_driving_stress(p, r.snapshots["composition"][0], size, flaw_cells)
        gaps.setdefault(QS_RATES[i // len(QS_SEEDS)], []).append(abs(simulated - quasi_static) / quasi_static)
    per_rate = len(QS_SEEDS)
    separation = {rate: [r.metrics["phase_separation"] for r in res[k * per_rate:(k + 1) * per_rate]]
                  for k, rate in enumerate(QS_RATES)}
    print(f"quasi-static gaps {gaps}, separation {separation}")
    assert min(separation[0.2]) >= 0.4 and max(separation[20.0]) < 0.1, separation
    assert max(gaps[0.2]) <= 0.10, gaps
    assert np.median(gaps[0.2]) < np.median(gaps[1.0]) < np.median(gaps[20.0]), gaps


def _with_misfit(params, misfit, name: str):
    """``params`` with the lithiated lattice moved to the given misfit (a, b, c) from the delithiated one."""
    from mechanics.parameters.base import OrthorhombicLattice

    edges = params.delithiated.edges_A
    return dataclasses.replace(params, name=name,
                               lithiated=OrthorhombicLattice(*[d * (1 + m) for d, m in zip(edges, misfit)]))


def _scaled_misfit(params, factor: float, name: str):
    """``params`` with its misfit scaled by ``factor`` (the lithiated lattice moved, the delithiated kept)."""
    return _with_misfit(params, [factor * m for m in params.misfit], name)


@pytest.fixture(scope="module")
def misfit_envelope():
    """LiFePO4, the same with its misfit doubled and with none, through the envelope (discharge, 1C,
    a₀ = 0.2·L, λ = L/16).

    Affordable settings: every size is in the regularised range (L ≥ 22.4 nm), so each candidate is one
    simulation and L_c is the closed form (K_Ic/(s σ_d Y))²/(π f); 32² is the coarsest grid that puts 2
    cells across λ; one noise seed (the comparison is seed for seed, the same noise in all three)."""
    from mechanics.screen import ScreeningSettings
    from screening.driver import SweepItem
    from screening.envelope import EnvelopeSettings, charging_envelope

    base = lfp_params()
    items = [SweepItem(composition_id=name, formula=name, fractions={"Fe": 1.0}, params=params,
                       descriptors={}, source="literature")
             for name, params in (("single", base), ("double", _scaled_misfit(base, 2.0, "double")),
                                  ("zero", _scaled_misfit(base, 0.0, "zero")))]
    env = EnvelopeSettings(c_rates=(1.0,), sizes_nm=(30.0, 100.0, 300.0, 1000.0, 3000.0), seeds=1,
                           bisections=0, directions=("discharge",), flaw_fraction=0.2,
                           interface_fraction=1 / 16)
    settings = ScreeningSettings(grid_points=32, fidelity="particle", observations=10)
    result = charging_envelope(items, "vegard", settings=settings, envelope=env)
    summary = result.summary.drop_duplicates("formula").set_index("formula")  # one row per size: equal L_c
    return base, env, result, summary["critical_size_nm_at_1C"].to_dict(), summary


@pytest.mark.slow
def test_zero_misfit_never_fractures_and_the_critical_size_is_the_closed_form(misfit_envelope):
    """Without misfit there is no coherency stress and nothing fractures at any size; with misfit the
    reported L_c is (K_Ic/(s σ_d Y))²/(π f) of the simulated driving stress, and the peak pixel stress
    rises with the misfit (linear elasticity at a given composition field)."""
    from mechanics.fracture import critical_size_nm
    from mechanics.parameters.fracture_toughness import fracture_toughness

    base, env, result, crit, summary = misfit_envelope
    assert result.simulated == 3  # one simulation per candidate serves every size
    assert math.isfinite(crit["single"]) and math.isfinite(crit["double"]), summary["note"].tolist()
    k_ic = fracture_toughness(base, {"Fe": 1.0}).k_ic_MPa_sqrt_m
    table = result.table.set_index("formula")
    for name in ("single", "double"):
        drive = table.loc[name, "driving_stress_MPa"].iloc[0]
        assert crit[name] == pytest.approx(critical_size_nm(k_ic, drive, 0.2, env.safety_factor), rel=1e-12)
    peak = {name: table.loc[name, "peak_tensile_stress_MPa"].iloc[0] for name in ("single", "double")}
    assert peak["double"] > peak["single"], peak
    zero = result.table[result.table["formula"] == "zero"]
    assert (zero["driving_stress_MPa"].abs() < 1e-6).all() and not zero["fractured"].any()
    assert math.isnan(crit["zero"]) and "safe at 1C at every scanned size" in summary.loc["zero", "note"]


@pytest.mark.slow
def test_doubled_misfit_gives_a_smaller_critical_size_without_an_invariant_line():
    """With a misfit of one sign in the a–c plane (2 % along a, b and c: no direction is free of misfit)
    no phase arrangement escapes coherency stress, so doubling the misfit raises the driving stress and
    the critical size at 1C shrinks (σ_c ∝ 1/√L against a size-independent driving stress). Through the
    envelope: 32², discharge, a₀ = 0.2·L, 4 seeds, sizes 30 nm to 3 µm (every size is in the regularised
    range, so L_c is the closed form of the driving stress and lies inside the scan; the single misfit's
    L_c is near 300 nm, so a scan ending there would make the test a coin toss on the seeds' spread).
    Measured 2026-12-07 at 48², a₀ = 0.1·L, 4 seeds: the driving stress 736 → 1029 MPa, every seed
    higher. LiFePO4's own misfit has opposite signs along a and c (+5.2 %, −2.0 %) and behaves otherwise:
    see the next test."""
    from mechanics.screen import ScreeningSettings
    from screening.driver import SweepItem
    from screening.envelope import EnvelopeSettings, charging_envelope

    base = lfp_params()
    items = [SweepItem(composition_id=name, formula=name, fractions={"Fe": 1.0},
                       params=_with_misfit(base, (m, m, m), name), descriptors={}, source="literature")
             for name, m in (("single", 0.02), ("double", 0.04))]
    env = EnvelopeSettings(c_rates=(1.0,), sizes_nm=(30.0, 100.0, 300.0, 1000.0, 3000.0), seeds=4,
                           bisections=0, directions=("discharge",), flaw_fraction=0.2,
                           interface_fraction=1 / 16)
    settings = ScreeningSettings(grid_points=32, fidelity="particle", observations=10)
    result = charging_envelope(items, "vegard", settings=settings, envelope=env)
    summary = result.summary.drop_duplicates("formula").set_index("formula")
    crit = summary["critical_size_nm_at_1C"].to_dict()
    drive = result.table.groupby("formula")["driving_stress_MPa"].max().to_dict()
    print(f"isotropic misfit: L_c {crit}, driving stress {drive}")
    assert drive["double"] > drive["single"], drive
    assert crit["double"] < crit["single"], crit


def _invariant_line_normal_deg(misfit) -> float:
    """Angle from grid axis 0 (crystal a) of the normal to the in-plane invariant line of a misfit with
    ε_a ε_c < 0: the line t with tᵀεt = 0, tan²θ = −ε_a/ε_c; an interface along it joins the two phases
    without misfit, so a free platelet can hold them nearly stress-free."""
    theta = math.degrees(math.atan(math.sqrt(-misfit[0] / misfit[2])))
    return 90.0 - theta


def _interface_normals(composition: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The interface cells (|∇X| above half its maximum): the angle (0–90°) of each one's normal from grid
    axis 0, and its weight |∇X|."""
    g0, g1 = np.gradient(np.asarray(composition, dtype=float))
    w = np.hypot(g0, g1)
    sharp = w > 0.5 * w.max()
    return np.degrees(np.arctan2(np.abs(g1[sharp]), np.abs(g0[sharp]))), w[sharp]


def _mean_normal_angle_deg(composition: np.ndarray) -> float:
    """|∇X|-weighted mean angle of the interface normal from grid axis 0."""
    angle, weight = _interface_normals(composition)
    return float(np.average(angle, weights=weight))


def _normal_share_along_axis1(composition: np.ndarray) -> float:
    """Share of the interface (|∇X|-weighted) whose normal lies within 30° of grid axis 1."""
    angle, weight = _interface_normals(composition)
    return float(np.average(angle > 60.0, weights=weight))


@pytest.mark.slow
def test_doubled_lfp_misfit_aligns_the_interfaces_with_the_invariant_line():
    """LiFePO4's misfit changes sign between a (+5.2 %) and c (−2.0 %), so the a–c plane has an invariant
    line (58° from a; its normal 32° from a) along which the two phases fit without misfit. Doubling the
    misfit quadruples the elastic energy of every other arrangement, and the two-phase pattern at X = ½
    turns its interfaces onto that line: the interfaces whose normal lies near grid axis 1 (c) nearly
    vanish and the mean normal moves to the invariant line's. An aligned pattern carries less stress,
    which is why doubling LiFePO4's misfit lowers its flaw-averaged driving stress (809 → 659 MPa, 48²,
    100 nm, 1C, 4 seeds; peak 1530 → 1635 MPa) and lengthens its critical size, while a misfit without
    an invariant line behaves as expected (the test above). Measured (free platelet, 100 nm, 48², 1C
    discharge, λ = L/16, seeds 0-3): interface with its normal within 30° of axis 1, 16-23 % → 0-9 %."""
    from mechanics.screen import simulate_conditions

    base = lfp_params()
    target = _invariant_line_normal_deg(base.misfit)
    shares, angles = {}, {}
    for factor in (1.0, 2.0):
        p = model_parameters(_scaled_misfit(base, factor, f"x{factor:g}"), 100.0, 1 / 16)
        settings = _settings(grid_points=48, particle_size_nm=100.0, c_rate=1.0, direction="discharge",
                             snapshots=1, observations=10)
        res = simulate_conditions([p] * 4, settings, seeds=[0, 1, 2, 3], flaw_fraction=0.1)
        shares[factor] = [_normal_share_along_axis1(r.snapshots["composition"][0]) for r in res]
        angles[factor] = [_mean_normal_angle_deg(r.snapshots["composition"][0]) for r in res]
    print(f"invariant-line normal {target:.1f}°; mean normal angles {angles}; shares near axis 1 {shares}")
    assert np.median(shares[2.0]) <= 0.5 * np.median(shares[1.0]), shares
    off = {f: abs(np.median(a) - target) for f, a in angles.items()}
    assert off[2.0] < off[1.0] and off[2.0] <= 6.0, (off, angles)
