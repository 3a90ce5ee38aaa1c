"""The batched screening entry point: batching is exact, failures stay local, LFP gives its plateau."""

import dataclasses
import json
import math

import numpy as np
import pytest

from mechanics.errors import InputError
from mechanics.laws import PiecewiseLinearLaw
from mechanics.parameters.base import OrthorhombicLattice
from mechanics.parameters.lfp import lfp_params
from mechanics.screen import ScreeningSettings, simulate_candidates

SMALL = ScreeningSettings(grid_points=16, particle_size_nm=50.0, dtype="float64", observations=4, snapshots=2)


def _variant(**changes):
    return dataclasses.replace(lfp_params(), **changes)


def _candidates():
    lfp = lfp_params()
    # a Mn-rich-like variant: larger a-misfit, higher voltage, stronger interaction
    mn = _variant(name="variant", lithiated=OrthorhombicLattice(10.40, 6.06, 4.72), omega_eV=0.14,
                  voltage_V=4.0)
    soft = _variant(name="soft", omega_eV=0.04)  # Ω < 2kT: a solid solution
    return [lfp, mn, soft]


def test_batched_equals_one_by_one():
    """Every element of the batch is independent (own adaptive Δt, own noise index): the batched run
    reproduces single runs to 1e-8 relative (float64; FFT batching changes round-off only)."""
    params = _candidates()
    batched = simulate_candidates(params, SMALL)
    for p, r in zip(params, batched):
        (single,) = simulate_candidates([p], SMALL)
        assert r.status == single.status == "FINISHED"
        for key, value in single.metrics.items():
            assert r.metrics[key] == pytest.approx(value, rel=1e-8, abs=1e-10), key
        np.testing.assert_allclose(r.voltage_curve, single.voltage_curve, rtol=1e-8)
        np.testing.assert_allclose(r.snapshots["composition"], single.snapshots["composition"], atol=1e-8)


def test_failed_element_does_not_hurt_the_others():
    """An exchange current of 1e-30 A/m² cannot carry 1 C within floating point (|η| > 60 kT): that
    candidate is FAILED with the reason; the others equal their runs without it."""
    params = _candidates()
    broken = _variant(name="broken", exchange_rate_A_m2=1e-30)
    results = simulate_candidates([params[0], broken, params[2]], SMALL)
    assert results[1].status == "FAILED" and "overpotential" in results[1].reason
    alone = simulate_candidates([params[0], params[2]], SMALL)
    for r, a in zip((results[0], results[2]), alone):
        assert r.status == "FINISHED" and r.reason == ""
        assert r.metrics["voltage_V"] == pytest.approx(a.metrics["voltage_V"], rel=1e-10)
        key = "peak_tensile_stress_MPa"
        assert r.metrics[key] == pytest.approx(a.metrics[key], rel=1e-8)


def test_lfp_voltage_near_plateau_and_physical_metrics():
    """LiFePO4 at 1C: the mean discharge voltage lies below the 3.43 V plateau by less than 60 mV
    (Butler-Volmer at I/I₀ ≈ 0.04 plus the elastic and interfacial penalties; the measured 1C discharge
    plateau of LFP is ~3.40 V); it phase separates (Ω = 4.5 kT > 2 kT) and carries GPa-scale coherency
    stress (misfit ~5 %, modulus ~100 GPa); the solid-solution variant does not phase separate."""
    lfp, _, soft = _candidates()
    settings = dataclasses.replace(SMALL, dtype="float32", grid_points=32, particle_size_nm=100.0)
    r_lfp, r_soft = simulate_candidates([lfp, soft], settings)
    assert r_lfp.status == "FINISHED"
    v = r_lfp.metrics["voltage_V"]
    assert 3.43 - 0.06 < v < 3.43
    assert r_lfp.metrics["phase_separation"] > 0.3
    assert 100.0 < r_lfp.metrics["peak_tensile_stress_MPa"] < 10_000.0
    assert r_lfp.metrics["peak_elastic_energy_MJ_m3"] > 0
    assert r_soft.metrics["phase_separation"] < 0.05
    # a thin platelet (plane stress) relaxes coherency strain completely on an invariant line: interfaces
    # whose tangent t has ε*:t⊗t = 0, i.e. a normal at 90° − atan(√(−ε_a/ε_c)) ≈ 32° from a (B = 0 there).
    # The periodic cell allows only commensurate stripe directions: 10° tolerance.
    eps_a, _, eps_c = lfp.misfit
    invariant_normal = 90.0 - math.degrees(math.atan(math.sqrt(-eps_a / eps_c)))
    assert abs(r_lfp.metrics["interface_angle_deg"] - invariant_normal) < 10.0, r_lfp.metrics
    curve = r_lfp.voltage_curve
    # each potential is paired with the filling of the state it was solved from: the first is X₀ = 0.02,
    # the last the start of the final step (below 0.98 by that step's ΔX ≤ soc_step_max)
    assert curve.shape[1] == 2 and curve[0, 0] == pytest.approx(0.02, abs=1e-5)
    assert 0.98 - SMALL.soc_step_max - 1e-6 <= curve[-1, 0] < 0.98
    assert bool(np.all(np.diff(curve[:, 0]) > 0))
    assert r_lfp.snapshots["composition"].shape == (2, 32, 32)
    assert r_lfp.snapshots["max_principal_stress_GPa"].shape == (2, 32, 32)
    np.testing.assert_allclose(r_lfp.snapshots["soc"], [0.02 + 0.96 / 3, 0.02 + 0.96 * 2 / 3], atol=1e-4)


def test_linear_law_through_the_stress_path_equals_the_kernel_path():
    """A piecewise-linear law that is exactly Vegard goes through the nonlinear-law path (μ_el from the
    solver's stress minus the implicit kernel term); it must reproduce the kernel-only run (1e-6:
    the spectral solver and the kernel are the same operator up to round-off)."""
    lfp = lfp_params()
    law = PiecewiseLinearLaw.from_vegard(lfp.misfit, n_knots=5)
    settings = dataclasses.replace(SMALL, grid_points=16)
    (a,) = simulate_candidates([lfp], settings)
    (b,) = simulate_candidates([lfp], settings, law=law)
    for key in ("voltage_V", "phase_separation", "peak_tensile_stress_MPa", "peak_elastic_energy_MJ_m3"):
        assert b.metrics[key] == pytest.approx(a.metrics[key], rel=1e-6), key


def test_settings_validation_and_json():
    json.dumps(ScreeningSettings().as_dict())
    for law in ("butler-volmer", "butler-volmer-activity", "ciet"):
        assert ScreeningSettings(rate_law=law).rate_law == law
    for bad in ({"grid_points": 4}, {"c_rate": 0}, {"soc_start": 0.9, "soc_end": 0.5}, {"dtype": "float16"},
                {"fidelity": "3d"}, {"rate_law": "tafel"}):
        with pytest.raises(InputError) as info:
            ScreeningSettings(**bad)
        assert next(iter(bad)).split("_")[0] in str(info.value)
    with pytest.raises(InputError):
        simulate_candidates([], ScreeningSettings())


@pytest.mark.slow
def test_free_particle_fidelity_runs():
    """The free-standing platelet (traction-free edges, PCG solver every step) finishes with finite
    metrics and a voltage below the plateau (minutes on 2 CPU cores: the solver runs every step)."""
    lfp = lfp_params()
    settings = dataclasses.replace(SMALL, fidelity="particle", grid_points=16, dtype="float32")
    (r,) = simulate_candidates([lfp], settings)
    assert r.status == "FINISHED", r.reason
    assert math.isfinite(r.metrics["peak_tensile_stress_MPa"]) and 3.3 < r.metrics["voltage_V"] < 3.43


@pytest.mark.slow
def test_free_particle_screening_is_the_same_on_the_fused_solver(monkeypatch):
    """The screening's free platelet with its CG on the fused real-space path (the path of the charging
    envelope's large batches) against the Fourier path: the same CG iterates (tests/mechanics/
    test_particle.py), so in float64 the same accepted steps and metrics to 1e-9 relative (round-off
    through a few hundred steps; a wrong warm start or carry between steps would show at O(1))."""
    from mechanics.elasticity import particle

    params = _candidates()[:2]
    settings = dataclasses.replace(SMALL, fidelity="particle", c_rate=5.0, snapshots=0)
    monkeypatch.setattr(particle, "COMPILE", False)
    fourier = simulate_candidates(params, settings)
    monkeypatch.setattr(particle, "COMPILE", True)
    fused = simulate_candidates(params, settings)
    assert particle._compiled and not particle._compile_failed
    for a, b in zip(fourier, fused):
        assert a.status == b.status == "FINISHED"
        assert a.metrics["steps"] == b.metrics["steps"]
        for key, value in a.metrics.items():
            if math.isfinite(value):
                assert b.metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key


def test_free_platelet_elements_step_through_their_own_events():
    """A free platelet's batch no longer waits at each observation for its slowest element: every element
    steps through its own switch and observation times, observed from the next step's elastic solve. So
    an element's run does not depend on its batch mates: three elements with their own two-window
    schedules (one switch) equal their runs alone, in float64, to 1e-6 relative (a batched FFT rounds
    differently from a single one, which can move a CG stop by one iteration at its tolerance 1e-5;
    measured ≤ 2e-5 on 32² at 1C, usually 1e-13; a wrong switch, observation time or solution would show
    at O(1)); every element is observed at each of its observation times, in order."""
    from mechanics.screen import simulate_conditions

    lfp = lfp_params()
    settings = dataclasses.replace(SMALL, fidelity="particle", direction="charge", observations=6,
                                   snapshots=1)
    schedules, seeds = [(5.0, 20.0), (20.0, 5.0), (50.0, 50.0)], [0, 1, 2]
    batch = simulate_conditions([lfp] * 3, settings, c_rates=schedules, seeds=seeds)
    steps = [r.metrics["steps"] for r in batch]
    assert len(set(steps)) == 3, steps  # the elements need different numbers of steps
    for r, rates, seed in zip(batch, schedules, seeds):
        (alone,) = simulate_conditions([lfp], settings, c_rates=[rates], seeds=[seed])
        assert r.status == alone.status == "FINISHED"
        assert r.metrics["steps"] == alone.metrics["steps"]
        for key, value in alone.metrics.items():
            assert r.metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
        np.testing.assert_allclose(r.observed["driving_stress_MPa"], alone.observed["driving_stress_MPa"],
                                   rtol=1e-6)
        np.testing.assert_allclose(r.snapshots["composition"], alone.snapshots["composition"], atol=1e-6)
        assert r.snapshots["composition"].dtype == np.float64  # the run's precision
        soc = r.observed["soc"]
        assert len(soc) == 6 and np.all(np.isfinite(soc)) and np.all(np.diff(soc) < 0)  # charge: X falls
        assert soc[-1] == pytest.approx(settings.soc_start, abs=1e-6)
