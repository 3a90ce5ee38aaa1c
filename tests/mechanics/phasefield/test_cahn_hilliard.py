"""Cahn-Hilliard stepper: conservation, energy decay, linear stability (closed form ω(k))."""

import math

import pytest
import torch

from mechanics.grid import Grid
from mechanics.phasefield import spectral
from mechanics.phasefield.cahn_hilliard import (
    CahnHilliard,
    CahnHilliardAux,
    _symbols,
    cahn_hilliard,
    ch_increment,
    total_free_energy,
)
from mechanics.phasefield.free_energy import DoubleWell, RegularSolution
from mechanics.phasefield.protocols import run_to_times


def _random_field(shape, dtype, seed=0, mean=0.5, amp=0.05):
    gen = torch.Generator().manual_seed(seed)
    return mean + amp * (torch.rand(shape, generator=gen, dtype=torch.float64) - 0.5).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("boundary", ["periodic", "noflux"])
def test_mass_conserved_and_energy_decreases(dtype, boundary):
    model = CahnHilliard(grid=Grid((32, 32), 1.0), free_energy=DoubleWell(), mobility=5.0, kappa=2.0,
                         boundary=boundary)
    init_fn, step_fn = cahn_hilliard(model)
    state = init_fn(_random_field((2, 32, 32), dtype), 0.05)
    mass0 = state.c.double().sum(dim=(-2, -1))
    energies = [total_free_energy(model, state.c)]
    state = run_to_times(step_fn, state, [2.0, 5.0, 10.0, 20.0, 50.0],
                         [lambda s: energies.append(total_free_energy(model, s.c))])
    # mass: the k = 0 mode is never touched; round-off of ~1e3 cells x eps
    tol = 1e-3 if dtype == torch.float32 else 1e-10
    assert torch.allclose(state.c.double().sum(dim=(-2, -1)), mass0, rtol=0, atol=tol)
    e = torch.stack(energies).double()
    # the stabilised scheme is energy stable: F decreases (slack: float32 round-off of F ~ 1e-4)
    assert bool((e[1:] <= e[:-1] + (1e-3 if dtype == torch.float32 else 1e-9)).all()), e
    assert float(e[-1].max()) < float(e[0].min())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_growth_rate_matches_linear_stability(dtype):
    """A small mode c0 + δ cos(k x) grows at ω = −M k² (f''(c0) + κk²) (closed form). The measured rate
    (log of the mode's amplitude over time, fixed Δt) agrees within 1 %: the scheme's first-order error is
    Δt·M k²(S + κk²) = 2e-4 here (2e-3 in float32). float32 uses δ = 1e-2 and the larger step so each
    step's increment is far above round-off;
    the cubic correction to the rate is ~ f''''δ²/(8|f''|) ≈ 2e-4 relative."""
    n, h = 64, 1.0
    free = RegularSolution(site_density_per_nm3=1.0, kT_aJ=1.0, omega_aJ=3.0)  # f''(0.5) = 4 − 6 = −2
    model = CahnHilliard(grid=Grid((n, n), h), free_energy=free, mobility=1.0, kappa=2.0)
    x = torch.arange(n, dtype=torch.float64) * h
    rates = []
    for mode in (2, 4, 6, 12):  # k = 2π m / L; κk² < 2 for the first three (growing), the last decays
        k = 2 * math.pi * mode / (n * h)
        delta = 1e-4 if dtype == torch.float64 else 1e-2  # float32 must resolve the per-step increment
        c0 = (0.5 + delta * torch.cos(k * x))[:, None].expand(n, n)[None].to(dtype)
        c = c0
        accuracy = 2e-4 if dtype == torch.float64 else 2e-3
        dt = accuracy / (k**2 * (float(free.stabilization()) + 2.0 * k**2))
        sym = _symbols(model, c)
        steps = 200
        for _ in range(steps):
            c, _ = ch_increment(model, c, torch.tensor([dt], dtype=dtype), CahnHilliardAux(), sym)
        amp = [float(spectral.rfft(f - f.mean(), 2)[0, mode, 0].abs()) for f in (c0, c)]
        measured = math.log(amp[1] / amp[0]) / (steps * dt)
        expected = -1.0 * k**2 * (-2.0 + 2.0 * k**2)
        rates.append((measured, expected))
        assert measured == pytest.approx(expected, rel=1e-2), (mode, measured, expected)
    assert rates[0][1] > 0 and rates[-1][1] < 0  # both signs are exercised


def test_variable_mobility_conserves_mass_and_decreases_energy():
    free = RegularSolution(site_density_per_nm3=1.0, kT_aJ=1.0, omega_aJ=3.0)
    model = CahnHilliard(grid=Grid((32, 32), 1.0), free_energy=free, mobility=0.25, kappa=1.0,
                         variable_mobility=lambda c: c.clamp(0, 1) * (1 - c.clamp(0, 1)))
    init_fn, step_fn = cahn_hilliard(model)
    state = init_fn(_random_field((1, 32, 32), torch.float64, amp=0.1), 0.01)
    e0 = total_free_energy(model, state.c)
    m0 = state.c.sum()
    state = run_to_times(step_fn, state, [20.0])
    assert float(state.c.sum()) == pytest.approx(float(m0), abs=1e-9)
    assert float(total_free_energy(model, state.c)) < float(e0)


def test_noflux_cosine_mode_grows_at_linear_rate():
    """No-flux walls admit the cosine modes cos(π m (i + ½)/n) that a periodic box cannot hold (odd m:
    half a period across the box). Such a mode grows at the closed-form ω(k = π m / L) within 1 %."""
    n = 64
    free = RegularSolution(site_density_per_nm3=1.0, kT_aJ=1.0, omega_aJ=3.0)
    model = CahnHilliard(grid=Grid((n, 4), 1.0), free_energy=free, mobility=1.0, kappa=2.0,
                         boundary="noflux")
    mode = 3
    k = math.pi * mode / n
    x = torch.arange(n, dtype=torch.float64) + 0.5
    c0 = (0.5 + 1e-4 * torch.cos(k * x))[:, None].expand(n, 4)[None].clone()
    c = c0
    sym = _symbols(model, spectral.mirror(c, 2))
    dt = 2e-4 / (k**2 * (float(free.stabilization()) + 2.0 * k**2))
    steps = 200
    for _ in range(steps):
        c, _ = ch_increment(model, c, torch.tensor([dt], dtype=torch.float64), CahnHilliardAux(), sym)
    basis = torch.cos(k * x)[:, None].expand(n, 4)
    amp = lambda f: float(((f[0] - f.mean()) * basis).sum())  # noqa: E731
    measured = math.log(amp(c) / amp(c0)) / (steps * dt)
    expected = -(k**2) * (-2.0 + 2.0 * k**2)
    assert measured == pytest.approx(expected, rel=1e-2)
    # and the mode stays a pure cosine: the residual after projection is round-off
    residual = (c[0] - c[0].mean()) - amp(c) / float((basis**2).sum()) * basis
    assert float(residual.abs().max()) < 1e-10


def test_a_stalled_time_loop_is_a_solver_error():
    """run_to_times gives up after max_steps with a SolverError (CLI exit 1) naming itself and the
    output time it did not reach."""
    from mechanics.errors import SolverError

    model = CahnHilliard(grid=Grid((8, 8), 1.0), free_energy=DoubleWell(), mobility=1.0, kappa=1.0,
                         dt_max=1e-3)
    init_fn, step_fn = cahn_hilliard(model)
    with pytest.raises(SolverError, match=r"^run_to_times: more than 3 steps before t = 1"):
        run_to_times(step_fn, init_fn(_random_field((1, 8, 8), torch.float64), 1e-3), [1.0], max_steps=3)
