"""Periodic homogeneous body: Eshelby inclusions with the periodic finite-size correction, uniform
eigenstrain, gradients, precision, batching and input checks."""

from __future__ import annotations

import pytest
import torch

from mechanics import Grid, InputError, Stiffness, solve_elasticity
from mechanics.parameters.lfp import lfp_params

F64 = torch.float64
E_GPA, NU, EPS = 100.0, 0.3, 0.01
MU = E_GPA / (2 * (1 + NU))


def disc(N, R, h=1.0):
    g = Grid((N, N), h)
    r = g.coordinates_nm().norm(dim=-1)
    return g, r, (r < R).to(F64)


def dilatation(theta, d, eps=EPS):
    return eps * theta[..., None, None] * torch.eye(d, dtype=theta.dtype)


@pytest.mark.parametrize("scheme", ["spectral", "rotated"])
def test_eshelby_disc_plane_strain_with_periodic_correction(scheme):
    """Infinite matrix (Eshelby 1957): inside σ_rr = σ_θθ = −k, k = μ ε*/(1 − ν); outside
    σ_rr = −σ_θθ = −k (R/r)²; energy per length π R² μ ε*²/(1 − ν).

    Periodic cell, zero mean stress, area fraction f: for isotropic C and dilatational ε* the stress is
    σ̂(k) = −2k θ̂(k)(I − k̂⊗k̂) for k ≠ 0, so tr σ(x) = −2k (θ(x) − f) pointwise (any unit k̂, hence for
    both derivative schemes). The inside trace is (1 − f) × the infinite one and the energy
    E = −½ ε* ∫_incl tr σ = (1 − f) A μ ε*²/(1 − ν) with A the inclusion area: both exact (round-off
    tolerance). The individual components deviate from uniform by the image shear and the pixelated
    boundary: 2 % of k at the centre (R = 10, N = 96); the far field at r = 2R, 3R along a matches
    −k (R/r)² + image shift within 6 % of k (staircase boundary)."""
    N, R = 96, 10.0
    g, r, theta = disc(N, R)
    res = solve_elasticity(g, Stiffness.isotropic(E_GPa=E_GPA, nu=NU), dilatation(theta, 2), scheme=scheme)
    k = MU * EPS / (1 - NU)
    f = float(theta.mean())
    area = float(theta.sum())
    trace = res.stress[..., 0, 0] + res.stress[..., 1, 1]
    assert torch.allclose(trace, -2 * k * (theta - f), atol=1e-12)
    assert float(res.energy) == pytest.approx((1 - f) * area * MU * EPS**2 / (1 - NU), rel=1e-10)
    centre = res.stress[N // 2, N // 2]
    assert float(centre[0, 0]) == pytest.approx(-k * (1 - f), abs=0.02 * k)
    assert abs(float(centre[0, 1])) < 0.02 * k
    for mult in (2, 3):
        i = N // 2 + int(mult * R)
        rr = float(r[i, N // 2])
        # σ_rr along a = σ_xx; the periodic images add the uniform trace shift k f split over 2 axes
        expected = -k * (R / rr) ** 2 + k * f
        assert float(res.stress[i, N // 2, 0, 0]) == pytest.approx(expected, abs=0.06 * k)


def test_eshelby_sphere_3d_with_periodic_correction():
    """Sphere, dilatational ε*: inside σ = −2E ε*/(3(1 − ν)) I (hydrostatic, uniform). In the periodic
    cell tr σ = −(2E ε*/(1 − ν))(θ − f) pointwise and E = (1 − f) V E ε*²/(1 − ν) exactly (same argument
    as the disc; round-off tolerance); the centre stress is within 3 % of (1 − f) × the closed form
    (pixelated sphere of radius 5 on 32³)."""
    N, R = 32, 5.0
    g = Grid((N, N, N), 0.5)
    r = g.coordinates_nm().norm(dim=-1)
    theta = (r < R * 0.5).to(F64)
    res = solve_elasticity(g, Stiffness.isotropic(E_GPa=E_GPA, nu=NU), dilatation(theta, 3))
    s_inf = -2 * E_GPA * EPS / (3 * (1 - NU))
    f = float(theta.mean())
    vol = float(theta.sum()) * g.cell_volume
    trace = torch.diagonal(res.stress, dim1=-2, dim2=-1).sum(-1)
    assert torch.allclose(trace, 3 * s_inf * (theta - f), atol=1e-12)
    assert float(res.energy) == pytest.approx((1 - f) * vol * E_GPA * EPS**2 / (1 - NU), rel=1e-10)
    c = res.stress[N // 2, N // 2, N // 2]
    expected = torch.full((3,), s_inf * (1 - f), dtype=F64)
    assert torch.allclose(torch.diagonal(c), expected, atol=0.03 * abs(s_inf))


def test_uniform_eigenstrain_is_stress_free_and_strain_equals_eigenstrain():
    C = Stiffness.from_voigt(lfp_params().stiffness_voigt())
    eps = torch.tensor([[0.05, 0.01], [0.01, -0.02]], dtype=F64).expand(8, 6, 2, 2)
    res = solve_elasticity(Grid((8, 6), 1.0), C, eps, plane="stress", axes=(0, 2))
    assert res.stress.abs().max() < 1e-12 and float(res.energy) == pytest.approx(0.0, abs=1e-12)
    assert torch.allclose(res.strain, eps, atol=1e-14)


def test_gradcheck_eigenstrain_and_stiffness():
    g = Grid((5, 4), 1.0)
    eps = (0.01 * torch.randn(2, 5, 4, 2, 2, dtype=F64)).requires_grad_(True)
    v = torch.tensor(lfp_params().stiffness_voigt(), dtype=F64).requires_grad_(True)

    def f(eps, v):
        res = solve_elasticity(g, Stiffness.from_voigt(0.5 * (v + v.T)), eps, plane="stress", axes=(0, 2))
        return res.energy, res.stress

    assert torch.autograd.gradcheck(f, (eps, v))


def test_float32_agrees_with_float64():
    """float32 round-off on O(1) FFT sums: 1e-5 relative to the largest stress."""
    g, _, theta = disc(32, 7.0)
    C = Stiffness.from_voigt(lfp_params().stiffness_voigt())
    mis = torch.tensor([[0.052, 0.0], [0.0, -0.02]], dtype=F64)
    eps = theta[..., None, None] * mis
    r64 = solve_elasticity(g, C, eps, plane="stress", axes=(0, 2))
    r32 = solve_elasticity(g, C, eps.float(), plane="stress", axes=(0, 2))
    assert r32.stress.dtype == torch.float32
    scale = r64.stress.abs().max()
    assert (r32.stress.double() - r64.stress).abs().max() < 1e-5 * scale
    assert float(r32.energy) == pytest.approx(float(r64.energy), rel=1e-5)


def test_batched_equals_one_by_one_with_batched_stiffness():
    g = Grid((6, 5, 4), 1.0)
    p = lfp_params()
    v = torch.tensor(p.stiffness_voigt(), dtype=F64)
    C = Stiffness.from_voigt(torch.stack([v, 1.3 * v, 0.8 * v]))
    eps = 0.01 * torch.randn(2, 3, 6, 5, 4, 3, 3, dtype=F64)
    res = solve_elasticity(g, C, eps)
    assert res.stress.shape == (2, 3, 6, 5, 4, 3, 3) and res.energy.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            one = solve_elasticity(g, Stiffness.from_voigt(C.voigt_GPa[j]), eps[i, j])
            assert torch.allclose(one.stress, res.stress[i, j], atol=1e-13)
            assert torch.allclose(one.energy, res.energy[i, j], rtol=1e-12)


def test_stiffness_follows_eigenstrain_dtype():
    g = Grid((4, 4), 1.0)
    eps = torch.zeros(4, 4, 2, 2, dtype=torch.float32)
    res = solve_elasticity(g, Stiffness.isotropic(E_GPa=1.0, nu=0.2), eps)
    assert res.strain.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(eigenstrain=torch.zeros(4, 5, 2, 2)),
        dict(eigenstrain=torch.zeros(4, 4, 3, 3)),
        dict(eigenstrain=torch.zeros(4, 4, 2, 2), plane="membrane"),
        dict(eigenstrain=torch.zeros(4, 4, 2, 2), axes=(1, 1)),
        dict(eigenstrain=torch.zeros(4, 4, 2, 2), mask=torch.ones(4, 4)),
        dict(eigenstrain=torch.zeros(4, 4, 2, 2), mask=torch.ones(5, 4, dtype=torch.bool)),
        dict(eigenstrain=torch.zeros(4, 4, 2, 2), mask=torch.zeros(4, 4, dtype=torch.bool)),
        dict(eigenstrain=torch.zeros(4, 4, 2, 2), mask=torch.ones(4, 4, dtype=torch.bool),
             void_stiffness=0.0),
        dict(eigenstrain=torch.zeros(3, 4, 4, 2, 2), mask=torch.ones(2, 4, 4, dtype=torch.bool)),
        dict(eigenstrain=torch.zeros(4, 4, 2, 2), scheme="fem"),
        dict(eigenstrain=torch.zeros(4, 4, 2, 2), stiffness_scale=-torch.ones(4, 4)),
    ],
)
def test_bad_input_raises_input_error(kwargs):
    with pytest.raises(InputError):
        solve_elasticity(Grid((4, 4), 1.0), Stiffness.isotropic(E_GPa=1.0, nu=0.2), **kwargs)


def test_grid_constants_cached_under_inference_mode_serve_autograd_later():
    """The per-grid multipliers are cached; a first call under torch.inference_mode must not leave
    inference tensors in the cache (they could not be saved for backward afterwards)."""
    g = Grid((7, 9), 0.7)
    C = Stiffness.isotropic(E_GPa=10.0, nu=0.25)
    mask = torch.ones(7, 9, dtype=torch.bool)
    mask[0] = False
    with torch.inference_mode():
        solve_elasticity(g, C, torch.randn(7, 9, 2, 2, dtype=F64))
        solve_elasticity(g, C, torch.randn(7, 9, 2, 2, dtype=F64), mask=mask)
    for m in (None, mask):
        eps = torch.randn(7, 9, 2, 2, dtype=F64, requires_grad=True)
        solve_elasticity(g, C, eps, mask=m).energy.backward()
        assert eps.grad is not None and torch.isfinite(eps.grad).all()
