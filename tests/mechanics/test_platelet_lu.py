"""Q1 finite-element platelet solver (sparse LU) against closed forms (lfp.md) and its adjoint identity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechanics.elasticity import PlateletLU


def isotropic_2d(E_GPa: float, nu: float, plane: str) -> np.ndarray:
    """In-plane isotropic stiffness: plane strain uses λ, plane stress λ' = 2λμ/(λ + 2μ)."""
    lam = E_GPa * nu / ((1 + nu) * (1 - 2 * nu))
    mu = E_GPa / (2 * (1 + nu))
    if plane == "stress":
        lam = 2 * lam * mu / (lam + 2 * mu)
    d = np.eye(2)
    return lam * np.einsum("ij,kl->ijkl", d, d) + mu * (
        np.einsum("ik,jl->ijkl", d, d) + np.einsum("il,jk->ijkl", d, d)
    )


def disc(n: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre distances from the grid centre, and the mask r < radius."""
    yy, xx = np.mgrid[:n, :n] + 0.5 - n / 2
    r = np.hypot(yy, xx)
    return r, r < radius


@pytest.mark.parametrize("plane", ["strain", "stress"])
def test_core_shell_disc_matches_closed_form(plane):
    """Free disc of radius b, core radius a with in-plane dilatational ε* (lfp.md, Eshelby 1957).

    Plane strain: core σ_rr = σ_θθ = −μ ε*/(1 − ν)·(1 − a²/b²). The plane-stress analog follows from the
    same 2-D solution with λ → λ' = 2λμ/(λ + 2μ): core σ = −(E/2) ε*·(1 − a²/b²). Tolerance 3 %: the
    pixelated circles of radius 16 and 40 px carry an O(h/a) staircase error of about 1-2 % in the
    core-shell area ratio a²/b², which enters the core stress directly.
    """
    E, nu, eps = 100.0, 0.3, 0.01
    n, a, b = 96, 16.0, 40.0
    r, mask = disc(n, b)
    core = r < a
    ratio = core.sum() / mask.sum()  # a²/b² of the pixelated shapes
    mu = E / (2 * (1 + nu))
    expected = -mu * eps / (1 - nu) * (1 - ratio) if plane == "strain" else -E / 2 * eps * (1 - ratio)
    solver = PlateletLU(mask, isotropic_2d(E, nu, plane), spacing_nm=2.0)
    eig = np.zeros((1, n, n, 2, 2))
    eig[0, core, 0, 0] = eig[0, core, 1, 1] = eps
    eig_t = torch.from_numpy(eig)
    strain = solver.solve(eig_t)
    stress = solver.stress(strain, eig_t)[0].numpy()
    inner = r < 0.6 * a  # away from the staircase interface
    for comp in [(0, 0), (1, 1)]:
        assert np.mean(stress[inner][:, comp[0], comp[1]]) == pytest.approx(expected, rel=0.03)
    assert np.abs(stress[inner][:, 0, 1]).max() < 0.03 * abs(expected)
    # traction-free rim: radial stress in the outermost pixel ring ≪ core stress (σ_rr(b) = 0)
    rim = mask & (r > b - 1.5)
    er = (np.stack(np.mgrid[:n, :n], -1) + 0.5 - n / 2) / np.maximum(r, 1e-9)[..., None]
    sigma_rr = np.einsum("...i,...ij,...j->...", er, stress, er)
    assert np.abs(sigma_rr[rim]).mean() < 0.1 * abs(expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_uniform_and_linear_eigenstrain_are_stress_free(dtype):
    """A uniform eigenstrain in a free body is stress-free (exactly for Q1); a linear (compatible) one
    too, up to the O(h/L) error of sampling it as element-constant, here < 1 % of C·g·L."""
    n = 48
    yy, xx = np.mgrid[:n, :n] + 0.5 - n / 2
    mask = (yy / 20) ** 2 + (xx / 14) ** 2 < 1
    mask[10:14, 10:30] = True  # non-convex shape with a re-entrant corner
    C = isotropic_2d(120.0, 0.28, "stress")
    C[0, 0, 0, 0] *= 1.3  # anisotropic
    solver = PlateletLU(mask, C, spacing_nm=1.5)
    eig = np.zeros((2, n, n, 2, 2))
    eig[0, ..., 0, 0], eig[0, ..., 1, 1], eig[0, ..., 0, 1] = 0.05, -0.02, 0.01
    eig[0, ..., 1, 0] = 0.01
    g = 1e-3
    eig[1, ..., 0, 0] = g * xx  # ε00 linear along axis 1: compatible
    eig[1, ..., 1, 1] = 0.02 + g * yy
    eig_t = torch.from_numpy(eig).to(dtype)
    strain = solver.solve(eig_t)
    assert strain.dtype == dtype
    stress = solver.stress(strain, eig_t).double().numpy()
    scale = 120.0 * 0.05
    tol_uniform = 1e-10 if dtype == torch.float64 else 1e-5
    assert np.abs(stress[0]).max() < tol_uniform * scale
    scale_lin = 120.0 * g * n
    assert np.abs(stress[1][mask]).mean() < 0.01 * scale_lin


def test_adjoint_matches_autograd_gradcheck():
    """backward = Lᵀ K⁻¹ Bᵀ: the adjoint identity ⟨S e, g⟩ = ⟨e, Sᵀ g⟩ and torch.gradcheck in float64."""
    rng = np.random.default_rng(0)
    mask = np.zeros((9, 11), bool)
    mask[1:8, 2:10] = True
    mask[4:8, 2:5] = False
    mask[0, 0] = True  # separate single-pixel piece
    solver = PlateletLU(mask, isotropic_2d(80.0, 0.25, "stress"), spacing_nm=1.0)
    e = rng.normal(size=(2, 9, 11, 2, 2))
    e = 0.5 * (e + np.swapaxes(e, -1, -2))
    g = rng.normal(size=(2, 9, 11, 2, 2))
    lhs = np.sum(solver.apply(e) * g)
    rhs = np.sum(e * solver.apply_adjoint(g))
    assert lhs == pytest.approx(rhs, rel=1e-10)
    x = torch.from_numpy(e[:1]).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: solver.strain(t), (x,), eps=1e-6, atol=1e-7)


def test_pieces_touching_at_a_corner_are_independent():
    """Two squares touching at one corner carry no force across it: each strain field equals that of the
    square alone (no rigid-body mechanism, no spurious coupling)."""
    mask = np.zeros((12, 12), bool)
    mask[1:6, 1:6] = True
    mask[6:11, 6:11] = True
    alone = np.zeros_like(mask)
    alone[1:6, 1:6] = True
    C = isotropic_2d(100.0, 0.3, "stress")
    eig = np.zeros((1, 12, 12, 2, 2))
    eig[0, 1:4, 1:4, 0, 0] = 0.01
    both = PlateletLU(mask, C, 1.0).apply(eig)
    single = PlateletLU(alone, C, 1.0).apply(eig)
    np.testing.assert_allclose(both, single, atol=1e-12)


def test_agrees_with_the_spectral_free_surface_solver_on_an_anisotropic_disc():
    """Cross-check of two independent discretisations of the same traction-free LFP platelet (generalized
    plane stress, Maxisch–Ceder stiffness, a-c plane): Q1 elements on the mask pixels here, the core's
    Fourier solver with a soft void in ``mechanics.solve_elasticity``. The mean strain of the core
    (ε⁰ = diag(5 %, −2 %)) agrees within 3 %: the two treat the pixel staircase at the interface and
    the rim differently, which moves the core average by O(h/a) ≈ 1-2 %."""
    from mechanics import Grid, Stiffness, solve_elasticity
    from mechanics.parameters.lfp import lfp_params

    n = 48
    r, mask = disc(n, 20.0)
    core = r < 9.0
    C = Stiffness.from_voigt(lfp_params().stiffness_voigt())
    eig = np.zeros((n, n, 2, 2))
    eig[core, 0, 0], eig[core, 1, 1] = 0.05, -0.02
    spectral = solve_elasticity(Grid(shape=(n, n), spacing_nm=1.0), C, torch.tensor(eig),
                                mask=torch.tensor(mask), plane="stress", axes=(0, 2)).strain.numpy()
    fe = PlateletLU(mask, C.reduced(axes=(0, 2), plane="stress"), 1.0).apply(eig[None])[0]
    for i in range(2):
        assert fe[core, i, i].mean() == pytest.approx(spectral[core, i, i].mean(), rel=0.03)
