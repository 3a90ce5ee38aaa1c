"""Traction-free particle (PCG on the displacement form, rotated scheme): closed forms for the free
core-shell disc and sphere, stress-free compatible eigenstrains, consistency with the direct solver,
implicit-adjoint gradients, warm starts, batching and precision."""

from __future__ import annotations

import math

import pytest
import torch

from mechanics import Grid, Stiffness, solve_elasticity
from mechanics.parameters.lfp import lfp_params

F64 = torch.float64
E_GPA, NU, EPS = 100.0, 0.3, 0.01
MU = E_GPA / (2 * (1 + NU))
K_DISC = MU * EPS / (1 - NU)


def iso():
    return Stiffness.isotropic(E_GPa=E_GPA, nu=NU)


def lfp():
    return Stiffness.from_voigt(lfp_params().stiffness_voigt())


def core_shell_disc(N, void_stiffness=1e-3, scheme="rotated"):
    g = Grid((N, N), 1.0)
    x = g.coordinates_nm()
    r = x.norm(dim=-1)
    b = 0.35 * N
    a = 0.5 * b
    core = (r < a).to(F64)
    mask = r < b
    eps0 = EPS * core[..., None, None] * torch.eye(2, dtype=F64)
    res = solve_elasticity(g, iso(), eps0, mask=mask, void_stiffness=void_stiffness, scheme=scheme)
    # closed form with the radii of the pixelated areas
    a2, b2 = float(core.sum()) / math.pi, float(mask.sum()) / math.pi
    n = x / r[..., None].clamp_min(1e-12)
    t = torch.stack([-n[..., 1], n[..., 0]], -1)
    s_rr = torch.einsum("...i,...ij,...j->...", n, res.stress, n)
    s_tt = torch.einsum("...i,...ij,...j->...", t, res.stress, t)
    ex_rr = torch.where(r < a, -K_DISC * (1 - a2 / b2), K_DISC * a2 * (1 / b2 - 1 / r**2))
    ex_tt = torch.where(r < a, -K_DISC * (1 - a2 / b2), K_DISC * a2 * (1 / b2 + 1 / r**2))
    return res, r, a, b, s_rr, s_tt, ex_rr, ex_tt


def test_free_core_shell_disc_matches_closed_form():
    """Free disc of radius b, core radius a with in-plane dilatation ε* (plane strain, isotropic):
    core σ_rr = σ_θθ = −k(1 − a²/b²), shell σ_rr = k a²(1/b² − 1/r²), σ_θθ = k a²(1/b² + 1/r²),
    σ_rr(b) = 0 (k = μ ε*/(1 − ν)). N = 64, b = 22.4 cells, void stiffness 1e-3. Measured errors
    (test_convergence.py, docs/mechanics.md): core mean 0.35 %, core max 3.1 % of k, shell rms 2.0 %
    of k; the tolerances below leave margin for the staircase boundary. Traction-free surface: the
    outermost ring of particle cells (on average half a cell inside the staircase surface) carries
    |σ_rr| < 0.25 k, where σ_θθ ≈ 2k a²/b² = 0.5 k; the void (stiffness ratio η = 1e-3) carries
    < 5η k."""
    res, r, a, b, s_rr, s_tt, ex_rr, ex_tt = core_shell_disc(64)
    assert res.converged and int(res.iterations) < 200
    deep = r < 0.6 * a
    core_exact = -K_DISC * (1 - float((r < a).sum()) / float((r < b).sum()))
    assert float(s_rr[deep].mean()) == pytest.approx(core_exact, rel=0.015)
    assert float((s_rr[deep] - core_exact).abs().max()) < 0.05 * K_DISC
    shell = (r > a + 2) & (r < b - 2)
    assert float((s_rr - ex_rr)[shell].pow(2).mean().sqrt()) < 0.04 * K_DISC
    assert float((s_tt - ex_tt)[shell].pow(2).mean().sqrt()) < 0.04 * K_DISC
    ring = (r > b - 1.5) & (r < b)
    assert float(s_rr[ring].abs().max()) < 0.25 * K_DISC
    void = r > b + 1
    assert float(res.stress[void].abs().max()) < 5e-3 * K_DISC


def test_accuracy_improves_with_grid_and_is_insensitive_to_void_stiffness():
    """Core mean error falls with resolution (staircase boundary, first order in h/b) and changes by
    less than 0.5 % of k between void stiffness 1e-2 and 1e-4 (the void's residual stiffness acts
    like a spring of relative stiffness η on the surface)."""
    errs = {}
    for N, eta in [(32, 1e-3), (64, 1e-3), (64, 1e-2), (64, 1e-4)]:
        res, r, a, b, s_rr, *_ = core_shell_disc(N, eta)
        core_exact = -K_DISC * (1 - float((r < a).sum()) / float((r < b).sum()))
        errs[(N, eta)] = abs(float(s_rr[r < 0.6 * a].mean()) - core_exact) / K_DISC
    assert errs[(64, 1e-3)] < errs[(32, 1e-3)]
    assert abs(errs[(64, 1e-2)] - errs[(64, 1e-4)]) < 0.005


@pytest.mark.parametrize("kind", ["uniform", "linear"])
def test_compatible_eigenstrain_in_free_particle_is_stress_free(kind):
    """ε⁰ uniform, or linear in position (ε⁰ = (α·x) ε*: compatible, and the rotated scheme
    differentiates the quadratic displacement exactly), inside an LFP particle and zero in the void:
    the particle deforms freely; the only stress is the void's push-back, O(η) × C ε⁰. Tolerance
    20 η |C ε⁰| (η = 1e-4)."""
    N = 40
    g = Grid((N, N), 1.0)
    x = g.coordinates_nm()
    mask = (x[..., 0] / 14) ** 2 + (x[..., 1] / 9) ** 2 < 1
    mis = torch.tensor([[0.052, 0.0], [0.0, -0.02]], dtype=F64)
    profile = torch.ones(N, N, dtype=F64) if kind == "uniform" else 0.5 + x[..., 0] / 28 + x[..., 1] / 40
    eps0 = (mask * profile)[..., None, None] * mis
    res = solve_elasticity(g, lfp(), eps0, mask=mask, plane="stress", axes=(0, 2), void_stiffness=1e-4)
    scale = float(lfp().reduced_voigt((0, 2), "stress").abs().max()) * 0.052
    assert float(res.stress[mask].abs().max()) < 20 * 1e-4 * scale


def test_free_core_shell_sphere_3d():
    """Free sphere radius b, core a, dilatational ε*: core σ = −2E ε*/(3(1 − ν)) (1 − a³/b³) (the
    compound-sphere solution with equal moduli). 28³ grid, b = 9.8 cells: staircase tolerance 5 %."""
    N = 28
    g = Grid((N, N, N), 1.0)
    r = g.coordinates_nm().norm(dim=-1)
    b, a = 0.35 * N, 0.175 * N
    core, mask = (r < a).to(F64), r < b
    res = solve_elasticity(g, iso(), EPS * core[..., None, None] * torch.eye(3, dtype=F64), mask=mask)
    ratio = float(core.sum()) / float(mask.sum())
    exact = -2 * E_GPA * EPS / (3 * (1 - NU)) * (1 - ratio)
    deep = r < 0.6 * a
    got = torch.diagonal(res.stress[deep], dim1=-2, dim2=-1).mean(0)
    assert torch.allclose(got, torch.full((3,), exact, dtype=F64), rtol=0.05)


def test_uniform_stiffness_scale_equals_direct_solver():
    """Without a void (stiffness_scale = 1.7 everywhere) PCG must reproduce the one-pass Green
    solution of the same discretisation (rotated scheme), to the CG tolerance."""
    g = Grid((12, 10), 1.0)
    eps0 = 0.01 * torch.randn(12, 10, 2, 2, dtype=F64)
    C = lfp()
    direct = solve_elasticity(g, Stiffness.from_voigt(1.7 * C.voigt_GPa), eps0, axes=(0, 2), scheme="rotated")
    pcg = solve_elasticity(g, C, eps0, axes=(0, 2), stiffness_scale=torch.full((12, 10), 1.7, dtype=F64),
                           tol=1e-12)
    assert int(pcg.iterations) <= 3  # the preconditioner is exact for a homogeneous body
    assert torch.allclose(pcg.stress, direct.stress, atol=1e-10)


def test_gradcheck_implicit_adjoint():
    """Gradients through the PCG path (implicit adjoint) w.r.t. eigenstrain, stiffness and the
    stiffness-scale field match finite differences (float64, tight CG tolerance so that the forward
    map is smooth to ~1e-13). The eigenstrain varies along 4 random fields (the adjoint is linear in
    the output cotangent, so a few directions test it; keeps the check fast)."""
    g = Grid((6, 5), 1.0)
    mask = torch.zeros(6, 5, dtype=torch.bool)
    mask[1:5, 1:4] = True
    fields = 0.01 * torch.randn(4, 6, 5, 2, 2, dtype=F64)
    coef = torch.randn(4, dtype=F64).requires_grad_(True)
    v = lfp().voigt_GPa.clone().requires_grad_(True)
    s = (1 + 0.2 * torch.rand(6, 5, dtype=F64)).requires_grad_(True)

    def f(coef, v, s):
        eps = torch.einsum("a,a...->...", coef, fields)
        res = solve_elasticity(g, Stiffness.from_voigt(0.5 * (v + v.T)), eps, mask=mask, plane="stress",
                               axes=(0, 2), void_stiffness=0.05, stiffness_scale=s, tol=1e-14)
        return res.energy, res.stress[2, 1]

    assert torch.autograd.gradcheck(f, (coef, v, s), atol=1e-6, rtol=1e-4)


def test_warm_start_cuts_iterations_and_batches_match():
    N = 32
    g = Grid((N, N), 1.0)
    x = g.coordinates_nm()
    masks = torch.stack([x.norm(dim=-1) < 12, (x[..., 0].abs() < 13) & (x[..., 1].abs() < 8)])
    c = torch.sigmoid(x[..., 0] / 2)
    mis = torch.tensor([[0.052, 0.0], [0.0, -0.02]], dtype=F64)
    eps0 = torch.stack([c, 1 - c])[..., None, None] * mis
    kw = dict(plane="stress", axes=(0, 2), void_stiffness=1e-3)
    both = solve_elasticity(g, lfp(), eps0, mask=masks, **kw)
    assert both.iterations.shape == (2,) and both.converged
    for i in range(2):
        one = solve_elasticity(g, lfp(), eps0[i], mask=masks[i], **kw)
        assert torch.allclose(one.stress, both.stress[i], atol=1e-8 * float(one.stress.abs().max()))
    warm = solve_elasticity(g, lfp(), 1.02 * eps0, mask=masks, x0=both, **kw)
    cold = solve_elasticity(g, lfp(), 1.02 * eps0, mask=masks, **kw)
    assert bool((warm.iterations < cold.iterations).all())
    # both stop at a preconditioned residual of 1e-8; the stress error can exceed it by up to the
    # condition number of M⁻¹A (≤ 1/η = 1e3), hence 1e-5 of the peak
    assert torch.allclose(warm.stress, cold.stress, atol=1e-5 * float(cold.stress.abs().max()))


def test_float32_particle_agrees_with_float64():
    """float32 with its default tolerance 1e-6: stresses within 1e-4 of the peak (measured 2e-5)."""
    N = 32
    g = Grid((N, N), 1.0)
    x = g.coordinates_nm()
    mask = x.norm(dim=-1) < 12
    eps0 = torch.sigmoid(x[..., 0])[..., None, None] * torch.tensor([[0.052, 0.0], [0.0, -0.02]], dtype=F64)
    r64 = solve_elasticity(g, lfp(), eps0, mask=mask, plane="stress", axes=(0, 2))
    r32 = solve_elasticity(g, lfp(), eps0.float(), mask=mask, plane="stress", axes=(0, 2))
    assert r32.stress.dtype == torch.float32 and r32.converged
    peak = float(r64.stress.abs().max())
    assert float((r32.stress.double() - r64.stress).abs().max()) < 1e-4 * peak


def test_plane_stress_equals_explicit_3d_thin_free_plate():
    """Generalized plane stress (compliance-inversion reduction) against an explicit 3-D solve: an LFP
    plate two cells thick along b, free faces (void 1e-4 above and below), periodic in a and c, with
    an in-plane varying eigenstrain of wavelength 32 cells including the b misfit (which plane stress
    must make irrelevant). Thickness-averaged in-plane stresses agree with the 2-D solve to O((t/λ)²);
    measured 4e-4 of the peak, tolerance 2e-3. σ_bj inside the plate < 2e-3 of the peak."""
    p = lfp_params()
    C, mis = lfp(), torch.tensor(p.misfit, dtype=F64)
    L = 32

    def composition(xa, xc):
        wave = 2 * math.pi / L
        return 0.5 + 0.4 * torch.cos(wave * (xa + 0.5) + 0.3) * torch.cos(wave * (xc + 0.5))

    g3 = Grid((L, 8, L), 1.0)
    x3 = g3.coordinates_nm()
    plate = x3[..., 1].abs() < 1.0
    eps3 = torch.diag_embed(composition(x3[..., 0], x3[..., 2])[..., None] * mis)
    r3 = solve_elasticity(g3, C, eps3, mask=plate, void_stiffness=1e-4, tol=1e-10)
    g2 = Grid((L, L), 1.0)
    x2 = g2.coordinates_nm()
    eps2 = torch.diag_embed(composition(x2[..., 0], x2[..., 1])[..., None] * mis[[0, 2]])
    r2 = solve_elasticity(g2, C, eps2, plane="stress", axes=(0, 2))
    rows = plate[0, :, 0]
    s3 = r3.stress[:, rows][..., [0, 2], :][..., [0, 2]].mean(1)
    peak = float(r2.stress.abs().max())
    assert float((s3 - r2.stress).abs().max()) < 2e-3 * peak
    assert float(r3.stress[:, rows][..., 1, :].abs().max()) < 2e-3 * peak


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cg_stays_at_the_solution_past_the_round_off_floor(dtype):
    """Iterating far below round-off (tol 1e-30, 150 iterations) on an even grid must not leave the
    solution: the anti-Hermitian part of the rfft planes k_last = 0, N/2 is a null direction of the
    operator, projected out in the preconditioner (without it CG diverged here after ~60 iterations).
    Tolerance: 1e-4 (float32) / 1e-9 (float64) of the peak stress against a solve stopped at 1e-13."""
    N = 48
    g = Grid((N, N), 1.0)
    x = g.coordinates_nm()
    mask = x.norm(dim=-1) < 16
    eps0 = torch.sigmoid(x[..., 0])[..., None, None] * torch.tensor([[0.052, 0.0], [0.0, -0.02]], dtype=F64)
    kw = dict(mask=mask, plane="stress", axes=(0, 2), void_stiffness=1e-4)
    ref = solve_elasticity(g, lfp(), eps0, tol=1e-13, **kw)
    far = solve_elasticity(g, lfp(), eps0.to(dtype), tol=1e-30, max_iter=150, **kw)
    peak = float(ref.stress.abs().max())
    limit = 1e-4 if dtype == torch.float32 else 1e-9
    assert float((far.stress.double() - ref.stress).abs().max()) < limit * peak


def test_agrees_with_independent_finite_elements_on_lfp_platelet():
    """Cross-check with mechanics.elasticity.PlateletLU (Q1 elements, 2×2 Gauss, pinned rigid modes, no
    void: a different discretisation written independently): LFP ellipse in plane stress with a
    lithiation front. Cells ≥ 3 from the surface agree to 0.26 % of the peak strain (measured), all
    cells to 2.1 % (the two schemes differ at O(h) on the staircase surface), rms 0.23 %. Tolerances 1 %,
    4 %, 0.5 %."""
    from mechanics.elasticity import PlateletLU

    N = 48
    g = Grid((N, N), 1.0)
    x = g.coordinates_nm()
    mask = (x[..., 0] / (0.4 * N)) ** 2 + (x[..., 1] / (0.25 * N)) ** 2 < 1
    mis = torch.tensor([[0.052, 0.0], [0.0, -0.02]], dtype=F64)
    eps0 = torch.sigmoid(x[..., 0] / 2)[..., None, None] * mis
    ours = solve_elasticity(g, lfp(), eps0, mask=mask, plane="stress", axes=(0, 2), void_stiffness=1e-5)
    fe = PlateletLU(mask.numpy(), lfp().reduced((0, 2), "stress").numpy(), 1.0)
    theirs = fe.solve(eps0[None])[0]
    interior = -torch.nn.functional.max_pool2d(-mask.double()[None, None], 7, 1, 3)[0, 0] > 0.5
    peak = float(theirs[mask].abs().max())
    diff = ours.strain - theirs
    assert float(diff[interior].abs().max()) < 0.01 * peak
    assert float(diff[mask].abs().max()) < 0.04 * peak
    assert float(diff[mask].pow(2).mean().sqrt()) < 0.005 * peak


def test_gradcheck_implicit_adjoint_3d():
    """The 3-D particle path: gradients w.r.t. eigenstrain (4 random directions) and stiffness."""
    g = Grid((4, 3, 4), 1.0)
    mask = torch.zeros(4, 3, 4, dtype=torch.bool)
    mask[1:3, 1:3, 1:4] = True
    fields = 0.01 * torch.randn(4, 4, 3, 4, 3, 3, dtype=F64)
    coef = torch.randn(4, dtype=F64).requires_grad_(True)
    v = lfp().voigt_GPa.clone().requires_grad_(True)

    def f(coef, v):
        eps = torch.einsum("a,a...->...", coef, fields)
        res = solve_elasticity(g, Stiffness.from_voigt(0.5 * (v + v.T)), eps, mask=mask, void_stiffness=0.05,
                               tol=1e-14)
        return res.energy, res.stress[1, 1, 2, 0]

    assert torch.autograd.gradcheck(f, (coef, v), atol=1e-6, rtol=1e-4)


def test_warm_start_from_displacement_tensor_and_broadcast_result():
    N = 24
    g = Grid((N, N), 1.0)
    x = g.coordinates_nm()
    mask = x.norm(dim=-1) < 9
    eps0 = torch.sigmoid(x[..., 0])[..., None, None] * torch.tensor([[0.052, 0.0], [0.0, -0.02]], dtype=F64)
    kw = dict(mask=mask, plane="stress", axes=(0, 2))
    one = solve_elasticity(g, lfp(), eps0, **kw)
    cold = solve_elasticity(g, lfp(), eps0 * 1.01, **kw)
    from_u = solve_elasticity(g, lfp(), eps0 * 1.01, x0=one.displacement, **kw)
    assert int(from_u.iterations) < int(cold.iterations)
    assert torch.allclose(from_u.stress, cold.stress, atol=1e-5 * float(cold.stress.abs().max()))
    batch = torch.stack([eps0, 1.01 * eps0])
    both = solve_elasticity(g, lfp(), batch, x0=one, **kw)  # an unbatched result broadcasts
    assert both.converged and int(both.iterations[0]) <= 1
    from mechanics import InputError

    with pytest.raises(InputError):
        solve_elasticity(g, lfp(), eps0, x0=solve_elasticity(g, lfp(), eps0), **kw)
    with pytest.raises(InputError):
        solve_elasticity(g, lfp(), eps0, x0=torch.zeros(5, 5, 2, dtype=F64), **kw)


def test_cached_preconditioner_follows_the_stiffness_values():
    """The preconditioner is cached on the stiffness and stiffness-scale values: a second solve with
    another stiffness on the same grid (a cache hit would give it the first one's preconditioner, and
    with it a different number of iterations) gives the same result as a solve with the cache empty,
    and a repeated solve reuses the cached preconditioner."""
    from mechanics.elasticity import particle

    g = Grid((24, 24), 1.0)
    mask = g.coordinates_nm().norm(dim=-1) < 8.0
    eps0 = 0.01 * torch.eye(2, dtype=F64).expand(24, 24, 2, 2) * mask[..., None, None]

    def solve(stiffness):
        return solve_elasticity(g, stiffness, eps0, mask=mask, plane="stress", axes=(0, 2))

    particle._problems.clear()
    fresh_lfp = solve(lfp())
    particle._problems.clear()
    fresh_iso = solve(iso())
    assert len(particle._problems) == 1
    again_lfp = solve(lfp())
    assert len(particle._problems) == 2  # another stiffness: another entry, not the cached one
    for a, b in ((fresh_lfp, again_lfp), (fresh_iso, solve(iso()))):
        assert torch.equal(a.iterations, b.iterations)
        torch.testing.assert_close(a.stress, b.stress, rtol=0, atol=1e-14)
    assert len(particle._problems) == 2
    c = lfp()
    args = (g, c.mandel(2, (0, 2), "stress")[None], torch.ones(1, 24, 24, dtype=F64))
    assert particle.make_problem(args[0], args[1], _c4(c), args[2], "rotated") is particle.make_problem(
        args[0], args[1].clone(), _c4(c), args[2].clone(), "rotated")


def _c4(stiffness):
    from mechanics.stiffness import voigt_to_tensor

    return voigt_to_tensor(stiffness.reduced_voigt((0, 2), "stress"))[None]


@pytest.mark.parametrize("shape", [(32, 30), (10, 9, 8)])
def test_real_space_fused_path_equals_fourier_path(shape, monkeypatch):
    """The rotated scheme's stencil in real space, fused by torch.compile (the path of large batches),
    against its Fourier multipliers: the same operator in another orthonormal basis, so CG takes the same
    iterations and the fields agree to round-off (measured ≤ 4e-14 of the peak; tolerance 1e-11), far
    below the solver tolerance (1e-10): a wrong stencil, shift or adjoint would show at O(1). Odd and even
    axes, 2-D and 3-D, a warm start and a batch."""
    from mechanics.elasticity import particle

    g = Grid(shape, 0.7)
    x = g.coordinates_nm()
    d = len(shape)
    mask = x.norm(dim=-1) < 0.3 * 0.7 * min(shape)
    c = torch.sigmoid(x[..., 0] / 0.7)
    mis = torch.diag(torch.tensor([0.05, -0.02, 0.03][:d], dtype=F64))
    eps0 = torch.stack([c, 1 - c])[..., None, None] * mis
    plane = {"plane": "stress", "axes": (0, 2)} if d == 2 else {}
    kw = dict(mask=mask, void_stiffness=0.05, tol=1e-10, **plane)
    monkeypatch.setattr(particle, "COMPILE", False)
    fourier = solve_elasticity(g, lfp(), eps0, **kw)
    fourier_warm = solve_elasticity(g, lfp(), 1.01 * eps0, x0=fourier, **kw)
    monkeypatch.setattr(particle, "COMPILE", True)
    monkeypatch.setattr(particle, "_compiled", {})
    real = solve_elasticity(g, lfp(), eps0, **kw)
    real_warm = solve_elasticity(g, lfp(), 1.01 * eps0, x0=real, **kw)
    assert particle._compiled and not particle._compile_failed  # the fused real-space path ran
    peak = float(fourier.stress.abs().max())
    for a, b in ((fourier, real), (fourier_warm, real_warm)):
        assert b.converged
        assert (a.iterations - b.iterations).abs().max() <= 1
        assert torch.equal(a.iterations, b.iterations)
        assert float((a.stress - b.stress).abs().max()) < 1e-11 * peak
        u_peak = float(a.displacement.abs().max())
        assert float((a.displacement - b.displacement).abs().max()) < 1e-11 * u_peak


def test_failed_compilation_falls_back_to_the_eager_path(monkeypatch):
    """A compiler that fails (no C++ toolchain, an unsupported backend) costs one warning, not the run:
    the real-space functions then run eagerly and give the same stress."""
    from mechanics.elasticity import particle

    def broken(fn, **_):
        def call(*args):
            raise RuntimeError("no compiler here")
        return call

    g = Grid((24, 24), 1.0)
    mask = g.coordinates_nm().norm(dim=-1) < 8.0
    eps0 = 0.01 * torch.eye(2, dtype=F64).expand(24, 24, 2, 2) * mask[..., None, None]
    kw = dict(mask=mask, plane="stress", axes=(0, 2))
    monkeypatch.setattr(particle, "COMPILE", False)
    ref = solve_elasticity(g, lfp(), eps0, **kw)
    monkeypatch.setattr(particle, "COMPILE", True)
    monkeypatch.setattr(particle, "_compiled", {})
    monkeypatch.setattr(particle, "_compile_failed", [])
    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(RuntimeWarning, match="torch.compile of the particle solver"):
        got = solve_elasticity(g, lfp(), eps0, **kw)
    assert particle._compile_failed
    torch.testing.assert_close(got.stress, ref.stress, rtol=0, atol=1e-6 * float(ref.stress.abs().max()))
