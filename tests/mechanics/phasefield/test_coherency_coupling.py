"""Coherency strain in the phase-field steppers, against closed forms independent of the core's kernel."""

import math

import pytest
import torch

from mechanics import units
from mechanics.grid import Grid
from mechanics.parameters.lfp import lfp_params
from mechanics.phasefield import elastic as pf_elastic
from mechanics.phasefield import spectral
from mechanics.phasefield.cahn_hilliard import (
    CahnHilliard,
    CahnHilliardAux,
    _symbols,
    cahn_hilliard,
    ch_increment,
)
from mechanics.phasefield.free_energy import RegularSolution
from mechanics.phasefield.metrics import critical_size_nm
from mechanics.phasefield.protocols import run_to_times
from mechanics.stiffness import Stiffness


def _coupling(grid, voigt, misfit, plane="stress", axes=(0, 2)):
    stiffness = Stiffness.from_voigt(torch.as_tensor(voigt, dtype=torch.float64))
    mis = torch.as_tensor(misfit, dtype=torch.float64)
    return pf_elastic.ElasticCoupling(grid, stiffness, mis, pf_elastic.law_shape(None), axes, plane)


def _plane_stress_uniaxial_B(voigt, misfit, normal_axis, other_axis, out_of_plane=1):
    """Laminate in a thin plate with interfaces normal to crystal axis `normal_axis`: the coherent strain
    along the interface (axis `other_axis`) is uniform, the normal stress and σ_bb vanish, so
    B = (C̃_oo − C̃_no²/C̃_nn) ε*_o² with C̃_ij = C_ij − C_ib C_jb / C_bb (plane-stress reduction)."""
    C = torch.as_tensor(voigt, dtype=torch.float64)
    b = out_of_plane

    def red(i, j):
        return C[i, j] - C[i, b] * C[j, b] / C[b, b]

    n, o = normal_axis, other_axis
    return float((red(o, o) - red(n, o) ** 2 / red(n, n)) * misfit[o] ** 2)


def test_laminate_mean_field_limit():
    """A laminate c(x_a) has μ_el = B(n)(c − c̄) exactly (Khachaturyan; Cogswell & Bazant 2012): the
    stepper's implicit kernel applied to it equals the closed-form plane-stress B times c − c̄ (1e-10),
    and its energy ½Σ B|ĉ|² is ½ B φ(1 − φ) per area for a sharp φ-laminate."""
    p = lfp_params()
    grid = Grid((32, 16), spacing_nm=1.0)
    coupling = _coupling(grid, p.stiffness_voigt(), p.misfit)
    kernel = coupling.kernel(torch.float64)
    x = torch.arange(32, dtype=torch.float64)
    # a smooth laminate profile without a Nyquist component (the kernel leaves Nyquist modes stress-free)
    profile = 0.5 + 0.3 * torch.cos(2 * math.pi * x / 32) - 0.1 * torch.cos(6 * math.pi * x / 32)
    c = profile[:, None].expand(32, 16)
    mu = spectral.irfft(kernel * spectral.rfft(c, 2), (32, 16))
    expected_B = _plane_stress_uniaxial_B(p.stiffness_voigt(), p.misfit, 0, 2)
    torch.testing.assert_close(mu, expected_B * (c - c.mean()), rtol=0, atol=1e-10)
    # sharp laminate, φ = 1/4: energy density ½ B φ(1−φ)
    sharp = (x < 8).to(torch.float64)[:, None].expand(32, 16)
    c_hat = torch.fft.fftn(sharp)
    k_full = torch.cat([kernel, kernel[:, 1:-1].flip(-1)], dim=-1)  # even symbol on the full grid
    energy = 0.5 * float((k_full * c_hat.abs() ** 2).sum()) / sharp.numel() ** 2
    assert energy == pytest.approx(0.5 * expected_B * 0.25 * 0.75, rel=1e-10)


def test_growth_rate_with_coherency_matches_closed_form():
    """ω(k) = −M k² (f'' + κk² + B(k̂)). Isotropic plate, isotropic in-plane misfit ε: B = E ε² for every
    in-plane direction (plane stress, uniaxial coherent strain along the interface). Measured over 200
    small steps (first-order error ~2e-4): agreement within 1 %."""
    E, nu, eps = 100.0, 0.3, 0.04
    n, h = 64, 1.0
    grid = Grid((n, n), spacing_nm=h)
    iso = Stiffness.isotropic(E_GPa=E, nu=nu).voigt_GPa
    coupling = _coupling(grid, iso, (eps, eps, eps), axes=(0, 1))
    kernel = coupling.kernel(torch.float64)
    B = E * eps**2  # 0.16 GPa > −f'' = 0.1: every mode decays
    free = RegularSolution(site_density_per_nm3=1.0, kT_aJ=0.05, omega_aJ=0.15)  # f''(½) = 0.2 − 0.3 = −0.1
    model = CahnHilliard(grid=grid, free_energy=free, mobility=1.0, kappa=0.5, linear_kernel=kernel)
    sym = _symbols(model, torch.zeros(1, n, n, dtype=torch.float64))
    x = torch.arange(n, dtype=torch.float64) * h
    X, Y = torch.meshgrid(x, x, indexing="ij")
    measured_rates = {}
    for m0, m1 in ((1, 0), (1, 1), (0, 2), (3, 0)):
        kx, ky = 2 * math.pi * m0 / n, 2 * math.pi * m1 / n
        k2 = kx**2 + ky**2
        c0 = (0.5 + 1e-4 * torch.cos(kx * X + ky * Y))[None]
        dt = 2e-4 / (k2 * (float(free.stabilization()) + 0.5 * k2 + B))
        c = c0
        for _ in range(200):
            c, _ = ch_increment(model, c, torch.tensor([dt], dtype=torch.float64), CahnHilliardAux(), sym)
        proj = [float(((f[0] - 0.5) * torch.cos(kx * X + ky * Y)).sum()) for f in (c0, c)]
        measured = math.log(proj[1] / proj[0]) / (200 * dt)
        expected = -k2 * (-0.1 + 0.5 * k2 + B)
        assert measured == pytest.approx(expected, rel=1e-2, abs=1e-6), (m0, m1)
        measured_rates[(m0, m1)] = measured
    # the longest wave would grow without the elastic term and decays with it: coherency decides
    k1 = 2 * math.pi / n
    assert -(k1**2) * (-0.1 + 0.5 * k1**2) > 0 > measured_rates[(1, 0)]


def test_coherency_suppresses_phase_separation_below_critical_size():
    """Criterion (Cogswell & Bazant, ACS Nano 6, 2215 (2012)): with coherency strain a uniform
    Li_0.5FePO4 particle is linearly stable when every mode of the cell satisfies
    f''(½) + κk² + B(k̂) > 0, i.e. for a cell edge L < L_c = 2π √(κ / −(f''(½) + B_min)) with B_min the
    minimum of Khachaturyan's B over normals (3-D, LFP: ≈ 0.22 GPa vs 0.19 GPa quoted by CB2012 for
    their misfit set). Without coherency L_c0 = 2π √(κ / −f''(½)) ≈ 8.3 nm. A periodic 3-D cube with
    L_c0 < L < L_c phase separates without elasticity (std c > 0.2) and stays a solid solution with it
    (std c < 1e-3, from an initial noise of 1e-2)."""
    from mechanics.coherency import minimum_B

    p = lfp_params()
    kT = units.kT_aJ(p.temperature_K)
    rho = p.site_density_per_nm3
    omega = p.omega_eV * units.AJ_PER_EV
    kappa = p.kappa_aJ_per_nm[0]
    curvature = rho * (4 * kT - 2 * omega)  # f''(½) per volume, GPa
    C = Stiffness.from_voigt(torch.as_tensor(p.stiffness_voigt(), dtype=torch.float64))
    b_min = float(minimum_B(C, torch.diag(torch.tensor(p.misfit, dtype=torch.float64)))[0])
    lc0 = critical_size_nm(curvature, kappa)
    lc = critical_size_nm(curvature, kappa, b_min)
    assert 0.15 < b_min < 0.3 and lc0 < lc
    L = math.sqrt(lc0 * lc)  # between the two sizes
    n = 16
    grid = Grid((n, n, n), spacing_nm=L / n)
    coupling = pf_elastic.ElasticCoupling(grid, C, torch.tensor(p.misfit, dtype=torch.float64),
                                          pf_elastic.law_shape(None), (0, 1, 2), "stress")
    kernel = coupling.kernel(torch.float64)
    free = RegularSolution(rho, kT, omega)
    gen = torch.Generator().manual_seed(3)
    c0 = 0.5 + 0.01 * (torch.rand((1, n, n, n), generator=gen, dtype=torch.float64) - 0.5)
    spread = {}
    for name, k in (("free", None), ("coherent", kernel)):
        model = CahnHilliard(grid=grid, free_energy=free, mobility=1.0,
                             kappa=kappa, linear_kernel=k, dc_tol=0.02, dt_max=2.0)
        # dt_max resolves the slowest growth (ω ≈ 0.04, ωΔt ≤ 0.08): max|Δc| alone is blind to the
        # relative growth of a small perturbation
        init_fn, step_fn = cahn_hilliard(model)
        state = run_to_times(step_fn, init_fn(c0, 0.1), [1000.0])
        spread[name] = float(state.c.std())
    assert spread["free"] > 0.2, spread
    assert spread["coherent"] < 1e-3, spread


def test_law_potential_equals_minus_stress_contraction():
    """For a bowed (nonlinear) law the polarised-kernel chemical potential Σ m_i g_i' IFFT[Q ε̂⁰] equals
    −σ:dε⁰/dc with σ from the core's homogeneous solver (1e-9 relative to its scale, float64): two
    independent routes to the same functional derivative. Smooth field, no Nyquist content."""
    from mechanics.laws import PiecewiseLinearLaw

    p = lfp_params()
    law = PiecewiseLinearLaw.from_vegard(p.misfit, n_knots=9)
    x9 = torch.linspace(0, 1, 9, dtype=torch.float64)
    bow = 0.01 * (x9 * (1 - x9))[None, :] * torch.tensor([1.0, 0.5, -0.7], dtype=torch.float64)[:, None]
    law.set_values(law.values().detach() + bow)
    n = 32
    grid = Grid((n, n), spacing_nm=2.0)
    stiffness = Stiffness.from_voigt(torch.as_tensor(p.stiffness_voigt(), dtype=torch.float64))
    coupling = pf_elastic.ElasticCoupling(grid, stiffness, torch.tensor(p.misfit, dtype=torch.float64),
                                          pf_elastic.law_shape(law), (0, 2), "stress")
    x = torch.arange(n, dtype=torch.float64)
    X, Y = torch.meshgrid(x, x, indexing="ij")
    c = (0.5 + 0.3 * torch.cos(2 * math.pi * X / n) * torch.cos(4 * math.pi * Y / n)
         + 0.1 * torch.sin(2 * math.pi * (X + Y) / n))[None]
    with torch.no_grad():
        via_kernel, _ = pf_elastic.law_potential(coupling, coupling.kernel_matrix(torch.float64))(c, None)
        via_stress, _ = coupling.potential_from_stress(c)
    scale = float(via_stress.abs().max())
    assert scale > 1e-3
    torch.testing.assert_close(via_kernel, via_stress, rtol=0, atol=1e-9 * scale)


def test_free_platelet_warm_start_extrapolates_a_repeated_composition_change():
    """The free platelet's μ_el is linear in c for Vegard, and so is its elastic solution: after states
    c₀ and c₁, a state c₂ = c₁ + (c₁ − c₀) starts the solver at its exact solution (the last one moved
    by θ = 1 along the last change), so it needs no more than 1 CG iteration where the last solution
    alone needs many; μ_el is that of a cold solve; a retried state (θ = 0) starts at its own solution."""
    p = lfp_params()
    stiffness = Stiffness.from_voigt(torch.as_tensor(p.stiffness_voigt(), dtype=torch.float64)[None])
    misfit = torch.as_tensor(p.misfit, dtype=torch.float64)[None]
    coupling = pf_elastic.ParticleCoupling.square(16, 4, 1.0, stiffness, misfit, pf_elastic.law_shape(None),
                                                  tol=1e-10)
    potential = pf_elastic.explicit_potential(coupling)
    x = torch.linspace(-1, 1, 16, dtype=torch.float64)
    c0 = (0.3 + 0.2 * torch.tanh(3 * x)[:, None] * torch.ones(16, dtype=torch.float64))[None]
    change = 0.05 * torch.exp(-(x[:, None] ** 2 + x[None, :] ** 2))[None]
    c1, c2 = c0 + change, c0 + 2 * change
    _, carry = potential(c0, None)
    _, carry = potential(c1, carry)
    mu2, carry2 = potential(c2, carry)
    mu_cold, cold = coupling.potential_from_stress(c2)
    _, last_only = coupling.potential_from_stress(c2, carry.result)
    iterations = int(carry2.result.iterations.max())
    assert iterations <= 1 < int(last_only.iterations.max()) < int(cold.iterations.max()), (
        iterations, last_only.iterations, cold.iterations)
    torch.testing.assert_close(mu2, mu_cold, rtol=1e-7, atol=1e-9)
    _, retried = potential(c2, carry2)  # the same state again: started at its own solution
    assert int(retried.result.iterations.max()) == 0
    assert torch.equal(retried.previous[0], carry2.previous[0])  # the history is kept, not overwritten
