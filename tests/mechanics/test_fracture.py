"""Fracture criterion against hand values and limits; every K_Ic has a source or an estimated flag."""

import math

import numpy as np
import pytest
import torch

from mechanics.errors import InputError
from mechanics.fracture import (
    EDGE_GEOMETRY_FACTOR,
    critical_stress_MPa,
    flaw_averaged_stress,
    griffith_k_ic_MPa_sqrt_m,
    isotropic_moduli,
)
from mechanics.parameters.fracture_toughness import SURFACE_ENERGIES, fracture_toughness
from mechanics.parameters.lfp import lfp_params


def test_critical_stress_hand_values():
    """σ_c = K/(Y√(πa)): K = 1 MPa√m, a = 1 µm, Y = 1 → 1/√(π·1e-6) = 564.19 MPa; Y = 1.12 and a 100×
    smaller flaw: ×10/1.12 (exact arithmetic, float round-off only)."""
    assert critical_stress_MPa(1.0, 1000.0, 1.0) == pytest.approx(564.1895835, rel=1e-9)
    assert critical_stress_MPa(1.0, 10.0) == pytest.approx(5641.895835 / 1.12, rel=1e-9)
    assert EDGE_GEOMETRY_FACTOR == 1.12
    # doubling the flaw lowers σ_c by √2
    assert critical_stress_MPa(0.5, 20.0) / critical_stress_MPa(0.5, 40.0) == pytest.approx(math.sqrt(2))


def test_griffith_hand_value():
    """E = 100 GPa, ν = 0, γ = 1 J/m² → K = √(2·1e11) Pa√m = 0.4472 MPa√m."""
    assert griffith_k_ic_MPa_sqrt_m(100.0, 0.0, 1.0) == pytest.approx(math.sqrt(2e11) / 1e6, rel=1e-12)
    # ν = 0.3 raises it by 1/√(1 − 0.09)
    ratio = griffith_k_ic_MPa_sqrt_m(100.0, 0.3, 1.0) / griffith_k_ic_MPa_sqrt_m(100.0, 0.0, 1.0)
    assert ratio == pytest.approx(1 / math.sqrt(0.91), rel=1e-12)


def test_hill_moduli_of_an_isotropic_stiffness_are_exact():
    """For an isotropic Voigt matrix the Voigt and Reuss bounds coincide: E and ν come back exactly."""
    E, nu = 120.0, 0.25
    lam, mu = E * nu / ((1 + nu) * (1 - 2 * nu)), E / (2 * (1 + nu))
    c = np.zeros((6, 6))
    c[:3, :3] = lam
    c[np.arange(3), np.arange(3)] = lam + 2 * mu
    c[np.arange(3, 6), np.arange(3, 6)] = mu
    E2, nu2 = isotropic_moduli(c)
    assert E2 == pytest.approx(E, rel=1e-12) and nu2 == pytest.approx(nu, rel=1e-12)


def test_every_toughness_has_a_source_or_an_estimated_flag():
    for metal, record in SURFACE_ENERGIES.items():
        assert record.source and (record.estimated or "Phys. Rev." in record.source), metal
        assert record.low_J_m2 <= record.surface_energy_J_m2 <= record.high_J_m2
    tough = fracture_toughness(lfp_params(), {"Fe": 1.0})
    assert tough.estimated and tough.source.startswith("estimated")
    assert tough.low_MPa_sqrt_m < tough.k_ic_MPa_sqrt_m < tough.high_MPa_sqrt_m
    # the Griffith estimate for LFP lies in the range measured for oxide cathode particles
    # (0.24–0.81 MPa√m for LiMn2O4, Mughal et al. 2017) within a factor 2
    assert 0.12 < tough.k_ic_MPa_sqrt_m < 1.6
    mixed = fracture_toughness(lfp_params(), {"Fe": 0.5, "Mn": 0.5})
    assert "assumed" in mixed.source


def test_toughness_that_can_be_neither_found_nor_estimated():
    with pytest.raises(InputError, match="k_ic"):
        fracture_toughness(lfp_params(), {"Fe": 0.5, "V": 0.5})
    with pytest.raises(InputError, match="k_ic"):
        fracture_toughness(lfp_params(), {"Fe": 0.5})


def _field(s00, s11):
    return torch.stack([torch.stack([s00, torch.zeros_like(s00)], -1),
                        torch.stack([torch.zeros_like(s00), s11], -1)], -2)


def test_flaw_average_limits():
    """Uniform tension → that tension for any flaw length; a one-cell flaw → the largest normal stress
    of any cell; a flaw longer than a tensile spike dilutes it by the length ratio (exact arithmetic)."""
    h = w = 12
    full = torch.full((h, w), 1.0, dtype=torch.float64)
    uniform = _field(0.7 * full, -0.2 * full)
    for cells in (1.0, 2.5, 7.0, 12.0):
        assert float(flaw_averaged_stress(uniform, cells)) == pytest.approx(0.7, rel=1e-12)
    s00 = torch.zeros((h, w), dtype=torch.float64)
    s00[5, 0] = 2.0  # a spike at the surface, opening flaws along axis 1
    spiky = _field(s00, torch.zeros_like(s00))
    assert float(flaw_averaged_stress(spiky, 1.0)) == pytest.approx(2.0)
    assert float(flaw_averaged_stress(spiky, 4.0)) == pytest.approx(0.5)
    assert float(flaw_averaged_stress(spiky, 2.5)) == pytest.approx(0.8)
    # σ₁₁ opens flaws along axis 0: a spike row in σ₁₁ is averaged down the columns
    s11 = torch.zeros((h, w), dtype=torch.float64)
    s11[0:3, 4] = 1.0
    assert float(flaw_averaged_stress(_field(torch.zeros_like(s11), s11), 6.0)) == pytest.approx(0.5)
    # compressive everywhere → negative
    assert float(flaw_averaged_stress(-uniform.abs(), 3.0)) < 0
    with pytest.raises(InputError, match="flaw_cells"):
        flaw_averaged_stress(uniform, 0.5)


# --- the simulator's side: delithiation, per-element conditions, the driving-stress metric ---------------

def _tiny(**changes):
    from mechanics.screen import ScreeningSettings

    base = dict(grid_points=16, particle_size_nm=50.0, observations=4, snapshots=2, fidelity="periodic",
                soc_step_max=0.05, dtype="float64")
    return ScreeningSettings(**{**base, **changes})


def test_per_element_rates_sizes_seeds_equal_separate_runs():
    """An element with its own C-rate, size (κ rescaled to the shared grid) and noise seed reproduces the
    run with those settings alone to round-off (float64: 1e-9 relative)."""
    import dataclasses

    from mechanics.screen import simulate_candidates, simulate_conditions

    p = lfp_params()
    s = _tiny(direction="charge")
    batched = simulate_conditions([p, p], s, c_rates=[20.0, 50.0], sizes_nm=[50.0, 120.0], seeds=[0, 3])
    for r, (rate, size, seed) in zip(batched, ((20.0, 50.0, 0), (50.0, 120.0, 3))):
        alone_settings = dataclasses.replace(s, c_rate=rate, particle_size_nm=size, seed=seed)
        (alone,) = simulate_candidates([p], alone_settings)
        for key in ("peak_tensile_stress_MPa", "driving_stress_MPa", "voltage_V", "max_overpotential_mV"):
            assert r.metrics[key] == pytest.approx(alone.metrics[key], rel=1e-9), key


def test_noise_reference_grid_scales_the_amplitude_with_the_grid():
    """``noise_reference_grid`` N_ref makes the per-cell amplitude noise·N/N_ref (a fixed white-noise
    intensity per platelet area): on 16² with N_ref = 8 the run equals the per-cell run with twice the
    amplitude, with N_ref = 16 the per-cell run itself (float64, to round-off); a bad value names the
    field."""
    import dataclasses

    from mechanics.screen import simulate_conditions

    p = lfp_params()
    s = _tiny(direction="charge", c_rate=5.0)
    doubled = dataclasses.replace(s, noise_per_sqrt_s=2 * s.noise_per_sqrt_s)
    pairs = (((s, 8), (doubled, None)), ((s, 16), (s, None)))
    for (s_a, ref_a), (s_b, ref_b) in pairs:
        (a,) = simulate_conditions([p], s_a, noise_reference_grid=ref_a)
        (b,) = simulate_conditions([p], s_b, noise_reference_grid=ref_b)
        for key in ("driving_stress_MPa", "phase_separation", "voltage_V"):
            assert a.metrics[key] == pytest.approx(b.metrics[key], rel=1e-9), key
    # and the scaling matters: half the amplitude (N_ref = 32) is another run
    (weak,) = simulate_conditions([p], s, noise_reference_grid=32)
    assert weak.metrics["driving_stress_MPa"] != pytest.approx(b.metrics["driving_stress_MPa"], rel=1e-6)
    with pytest.raises(InputError, match="noise_reference_grid"):
        simulate_conditions([p], s, noise_reference_grid=0)


def test_the_step_cap_grows_as_the_rate_falls_below_1c():
    """``max_steps`` caps a run at 1C and faster; slower runs need proportionally more steps (a charge at
    0.05C on the envelope's 32² platelet took all 20 000 steps and failed), so an element at n < 1C gets
    max_steps/n. Both elements here are stopped by the cap, at 5 and at 50 steps."""
    from mechanics.screen import simulate_conditions

    res = simulate_conditions([lfp_params()] * 3, _tiny(max_steps=5), c_rates=[1.0, 0.1, 4.0])
    assert [r.status for r in res] == ["FAILED"] * 3
    assert [r.metrics["steps"] for r in res] == [5, 50, 5]
    assert all("max_steps" in r.reason for r in res)


def test_charge_delithiates_above_the_plateau():
    """Charge runs X from soc_end down to soc_start with the voltage above the plateau (positive
    overpotential reported); discharge runs up with the voltage below it."""
    from mechanics.screen import simulate_candidates

    p = lfp_params()
    (charge,) = simulate_candidates([p], _tiny(direction="charge", c_rate=10.0))
    (discharge,) = simulate_candidates([p], _tiny(direction="discharge", c_rate=10.0))
    x = charge.voltage_curve[:, 0]
    assert x[0] > 0.9 and x[-1] < 0.1 and np.all(np.diff(x) < 0)
    assert charge.metrics["voltage_V"] > p.voltage_V > discharge.metrics["voltage_V"]
    assert charge.metrics["overpotential_mV"] > 0 and discharge.metrics["overpotential_mV"] > 0
    assert charge.observed["soc"][0] > charge.observed["soc"][-1]
    # the flaw average never exceeds the largest principal stress of any cell
    for r in (charge, discharge):
        assert r.metrics["driving_stress_MPa"] <= r.metrics["peak_tensile_stress_MPa"] * (1 + 1e-9)
    with pytest.raises(InputError, match="direction"):
        simulate_candidates([p], _tiny(direction="sideways"))


def test_high_rate_suppresses_phase_separation():
    """Reaction-limited LFP: at 200C the platelet fills uniformly (separation index < 0.05, against ~0.45
    for two equal pure phases at slow rates; Bazant, Acc. Chem. Res. 46, 1144 (2013)) and the driving
    stress is far below its 5C value (separation ≈ 0.15 at 5C, 50 nm; the issue measured 0.13)."""
    from mechanics.screen import simulate_conditions

    p = lfp_params()
    slow, fast = simulate_conditions([p, p], _tiny(direction="charge"), c_rates=[5.0, 200.0])
    assert fast.metrics["phase_separation"] < 0.05 < 0.1 < slow.metrics["phase_separation"]
    assert fast.metrics["driving_stress_MPa"] < 0.2 * slow.metrics["driving_stress_MPa"]
