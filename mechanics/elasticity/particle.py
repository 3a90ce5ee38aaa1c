"""Traction-free particle (or any heterogeneous body) by preconditioned conjugate gradients.

The periodic cell holds a stiffness field S(x) = s(x) C with s = 1 in the particle and s = η (the
``void_stiffness`` ratio) outside, optionally times a user scale field. Unknowns: the mean strain E
(zero mean stress is then a natural condition) and the periodic displacement u, in Fourier space
(rfft coefficients U). The strain is ε = E + D u and the total potential energy per cell

    Π(E, u) = ½ Σ_x (E + Du − ε⁰) : S : (E + Du − ε⁰)

is minimised by solving the symmetric positive (semi-)definite system (the displacement/Galerkin form)

    A x = b,   A = Dᵀ S D,   b = Dᵀ S ε⁰,   x = (E, U),

with D from the ``rotated`` (default) or ``spectral`` scheme of :mod:`.operators`, and inner product
⟨x₁, x₂⟩ = N E₁·E₂ + Σ_x u₁·u₂ (N cells), so Dᵀ = (mean over cells, conj(ξ)·rfftn). The preconditioner is
the same operator for a homogeneous reference medium C₀ = max(s) C, block diagonal and exact in Fourier
space: M⁻¹ = (C₀⁻¹, N₀(k)⁻¹) with N₀ the acoustic tensor (pseudo-inverse on the derivative's null
modes k = 0 and hourglass). M⁻¹A has spectrum in [min s/max s, 1], so CG needs O(√(1/η) log(1/tol))
iterations from a cold start; warm starts cut that. The basic fixed-point (Moulinec–Suquet) scheme
diverges at a void; CG does not.

Two bases for u, one CG: the rfft coefficients U (any scheme), or, for large rotated-scheme solves
(``COMPILE``, ``COMPILE_MIN_CELLS``), the corner values on the grid, where D is a stencil and one
iteration is one fused ``torch.compile`` graph (the real-space section below). By Parseval both run the
same iterates; the inner product is then Σ_x u₁·u₂ directly.

Stopping rule: ‖r‖_{M⁻¹} / ‖b‖_{M⁻¹} ≤ tol per batch element (elements that converged stop moving);
an element whose residual has not reached a new minimum for 100 iterations (the round-off floor) also
stops, and the result reports it as not converged.
Gradients: an implicit adjoint. With λ = A⁻¹ Dᵀ ḡ (the same symmetric solve) and η = Dλ,
dL = Σ_x η : [dS : (ε⁰ − ε) + S : dε⁰], evaluated by autograd on that one expression; no unrolling.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass, replace

import torch

from mechanics.elasticity import operators as op
from mechanics.elasticity.homogeneous import apply_mandel
from mechanics.grid import Grid
from mechanics.stiffness import PAIRS

STAGNATION_ITERATIONS = 100  # stop an element whose residual has not reached a new minimum for this long


@dataclass(frozen=True)
class Problem:
    """Fixed pieces of one particle solve: operators on the grid and the preconditioner."""

    grid: Grid
    xi: list  # d complex multipliers, broadcastable to the rfft shape
    xi_conj: list  # their conjugates
    weights: torch.Tensor  # rfft half-spectrum weights (1 or 2), broadcastable to (*K)
    n_inverse: torch.Tensor  # (B, d, d, *K) inverse reference acoustic tensor, 0 on null modes
    c0_inv: torch.Tensor  # (B, m, m) inverse reference stiffness (Mandel)
    real_space: bool  # u on the grid (rotated stencil, fused: :func:`_real`), else rfft coefficients
    inv_h: torch.Tensor  # 1/h (0-d, nm⁻¹)

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(range(-self.grid.ndim, 0))


PROBLEM_CACHE_SIZE = 8  # preconditioners kept between calls (a stepper's solves share one)
_problems: OrderedDict = OrderedDict()


def make_problem(
    grid: Grid, c_mandel: torch.Tensor, c4: torch.Tensor, scale: torch.Tensor, scheme: str
) -> Problem:
    """The operators and the preconditioner of one solve. The preconditioner depends only on the grid,
    the scheme, the stiffness and the largest stiffness scale per element, which a time stepper keeps
    from step to step, so it is cached on their values (the inverse acoustic tensor over the whole
    spectrum is otherwise rebuilt for every solve)."""
    s_max = scale.detach().reshape(scale.shape[0], -1).amax(-1)  # (B or 1,)
    key = (grid, scheme, c_mandel.dtype, str(c_mandel.device),
           *(t.detach().cpu().numpy().tobytes() for t in (c_mandel, c4, s_max)))
    prob = _problems.get(key)
    if prob is None:
        prob = _build_problem(grid, c_mandel, c4, s_max, scheme)
        _problems[key] = prob
        while len(_problems) > PROBLEM_CACHE_SIZE:
            _problems.popitem(last=False)
    else:
        _problems.move_to_end(key)
    return prob


def _build_problem(grid: Grid, c_mandel: torch.Tensor, c4: torch.Tensor, s_max: torch.Tensor,
                   scheme: str) -> Problem:
    dtype, device = c_mandel.dtype, c_mandel.device
    d = grid.ndim
    xi, xi_conj, gg, valid, w = op.particle_constants(grid, scheme, dtype, device)
    c0 = c4.detach() * s_max.reshape(-1, *([1] * 4))
    c0_inv = torch.linalg.inv(c_mandel.detach() * s_max.reshape(-1, 1, 1))
    n0 = op.acoustic(c0, gg)  # (B, *K, d, d)
    eye = torch.eye(d, dtype=dtype, device=device)
    n_inv = torch.linalg.inv(torch.where(valid[..., None, None], n0, eye))
    n_inv = torch.where(valid[..., None, None], n_inv, torch.zeros((), dtype=dtype, device=device))
    n_inv = n_inv.movedim(-2, 1).movedim(-1, 2).contiguous()  # (B, d, d, *K)
    inv_h = torch.tensor(1.0 / grid.spacing_nm, dtype=dtype, device=device)
    return Problem(grid, xi, xi_conj, w, n_inv, c0_inv, False, inv_h)


def apply_D(prob: Problem, E: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """ε = E + D u, (B, m, *grid)."""
    d = prob.grid.ndim
    if prob.real_space:
        return _real(_strain)(E, u, prob.inv_h, d)
    fluct = torch.fft.irfftn(op.mandel_sym_outer(prob.xi, u, d), s=prob.grid.shape, dim=prob.dims)
    return fluct + E.reshape(*E.shape, *([1] * d))


def apply_Dt(prob: Problem, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dᵀσ = (⟨σ⟩, the displacement part): (B, m) and (B, d, *grid) in real space, (B, d, *K) = conj(ξ)·σ̂
    in Fourier space."""
    d = prob.grid.ndim
    if prob.real_space:
        return sigma.mean(dim=prob.dims), _real(_divergence)(sigma, prob.inv_h, d)
    s_hat = torch.fft.rfftn(sigma, dim=prob.dims)
    return sigma.mean(dim=prob.dims), op.mandel_dot(s_hat, prob.xi_conj, d)


def dot(prob: Problem, x1, x2) -> torch.Tensor:
    """⟨x₁, x₂⟩ per batch element (B,) (= N E₁·E₂ + Σ_x u₁·u₂)."""
    n = prob.grid.n_cells
    if prob.real_space:
        return _real(_real_dot)(x1[0], x1[1], x2[0], x2[1], n)
    e_part = n * (x1[0] * x2[0]).sum(-1)
    u_part = (prob.weights * (x1[1].conj() * x2[1]).real).reshape(x1[1].shape[0], -1).sum(-1) / n
    return e_part + u_part


def apply_A(prob: Problem, c_mandel: torch.Tensor, scale: torch.Tensor, x):
    if prob.real_space:
        return _real(_operator)(x[0], x[1], c_mandel, scale, prob.inv_h, prob.grid.ndim)
    eps = apply_D(prob, *x)
    return apply_Dt(prob, scale[:, None] * apply_mandel(c_mandel, eps))


def hermitian_part(prob: Problem, U: torch.Tensor) -> torch.Tensor:
    """Project the rfft planes k_last = 0 and (even N) k_last = N/2 onto Hermitian symmetry,
    U(k) = conj(U(−k)). Their anti-Hermitian part is dropped by ``irfftn`` (a null direction of A that
    the preconditioner would otherwise feed: round-off there makes CG diverge on even grids)."""
    n_last = prob.grid.shape[-1]
    planes = [0] + ([n_last // 2] if n_last % 2 == 0 else [])
    other = list(range(U.ndim - prob.grid.ndim, U.ndim - 1))
    out = U.clone()
    for j in planes:
        col = U[..., j]
        partner = torch.roll(torch.flip(col, dims=other), shifts=[1] * len(other), dims=other)
        out[..., j] = 0.5 * (col + partner.conj())
    return out


def apply_Minv(prob: Problem, r):
    if prob.real_space:
        return _real(_real_minv)(r[0], r[1], prob.n_inverse, prob.c0_inv, prob.grid.shape)
    E = torch.matmul(prob.c0_inv, r[0][..., None])[..., 0]
    d = prob.grid.ndim
    ninv, u = prob.n_inverse, r[1]
    U = torch.stack([sum(ninv[:, i, j] * u[:, j] for j in range(d)) for i in range(d)], dim=1)
    return E, hermitian_part(prob, U)


def pcg(prob: Problem, c_mandel, scale, b, x0, tol: float, max_iter: int):
    """Preconditioned CG, batched; returns x, iterations (B,) int, relative residual (B,)."""
    if x0 is None:
        x = (torch.zeros_like(b[0]), torch.zeros_like(b[1]))
        r = b
    else:
        x = x0
        ax = apply_A(prob, c_mandel, scale, x)
        r = (b[0] - ax[0], b[1] - ax[1])
    z = apply_Minv(prob, r)
    rz = dot(prob, r, z)
    bz = dot(prob, b, apply_Minv(prob, b)) if x0 is not None else rz
    bnorm2 = torch.where(bz > 0, bz, torch.ones_like(bz))
    res = torch.sqrt(rz.clamp_min(0) / bnorm2)
    active = res > tol
    iters = torch.zeros_like(rz, dtype=torch.long)
    best = res
    since_best = torch.zeros_like(iters)
    p = z
    it = 0
    iterate = _real(_real_iteration) if prob.real_space else None
    while it < max_iter and bool(active.any()):
        if iterate is not None:
            *xrp, rz_new = iterate(*x, *r, *p, rz, active, c_mandel, scale, prob.inv_h, prob.n_inverse,
                                   prob.c0_inv, prob.grid.shape)
            x, r, p = tuple(xrp[0:2]), tuple(xrp[2:4]), tuple(xrp[4:6])
        else:
            x, r, p, rz_new = _fourier_iteration(prob, c_mandel, scale, x, r, p, rz, active)
        iters = iters + active.long()
        rz = torch.where(active, rz_new, rz)
        res = torch.sqrt(rz.clamp_min(0) / bnorm2)
        # stagnation (round-off floor, e.g. float32 with a tolerance below it): stop that element
        improved = res < best
        best = torch.where(improved, res, best)
        since_best = torch.where(improved, torch.zeros_like(since_best), since_best + 1)
        active = (res > tol) & (since_best < STAGNATION_ITERATIONS)
        it += 1
    return x, iters, res


def _step_sizes(active, num, den):
    """num/den where active and den > 0, else 0 (an element that stopped no longer moves)."""
    ok = active & (den > 0)
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(den))


def _fourier_iteration(prob: Problem, c_mandel, scale, x, r, p, rz, active):
    ap = apply_A(prob, c_mandel, scale, p)
    alpha = _step_sizes(active, rz, dot(prob, p, ap))
    x = tuple(xi + _bcast(alpha, xi) * pi for xi, pi in zip(x, p))
    r = tuple(ri - _bcast(alpha, ri) * ai for ri, ai in zip(r, ap))
    z = apply_Minv(prob, r)
    rz_new = dot(prob, r, z)
    beta = _step_sizes(active, rz_new, rz)
    p = tuple(zi + _bcast(beta, zi) * pi for zi, pi in zip(z, p))
    return x, r, p, rz_new


def _bcast(a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return a.reshape(-1, *([1] * (like.ndim - 1)))


# ---- the real-space path of the rotated scheme -------------------------------------------------------
# The rotated scheme's ξ_j = (e^{iq_j} − 1)/h Π_{m≠j} (1 + e^{iq_m})/2 is a stencil: the difference
# along edge j of the cell's corner values, averaged over the cell's 2^{d−1} edges along j (e^{iq_j} is
# the shift u(x) → u(x + e_j)); its adjoint Dᵀ is the same stencil with the shifts reversed. With the
# displacement on the grid, A = Dᵀ S D needs no transform, and the preconditioner (diagonal in Fourier
# space) one forward and one inverse transform of the d displacement components, against 2m for A in
# Fourier space (m = 3 in 2-D). The iterates are those of the Fourier-space CG (the same operator in
# another orthonormal basis, by Parseval); the real inverse transform keeps only the Hermitian part, so
# no projection is needed. Worth it only fused: one CG iteration is one ``torch.compile`` graph (the
# stencils, stiffness, reductions and updates in a few loops over the grid); eagerly each elementwise
# operation is a pass over memory and the Fourier path is faster.


def _strain(E: torch.Tensor, u: torch.Tensor, inv_h: torch.Tensor, d: int) -> torch.Tensor:
    g = []  # g[j][:, i] = ∂_j u_i
    for j in range(d):
        a = u
        for m in range(d):
            if m != j:
                a = a + torch.roll(a, -1, dims=m - d)
        g.append((torch.roll(a, -1, dims=j - d) - a) * (inv_h / 2 ** (d - 1)))
    comps = [g[i][:, i] if i == j else (g[i][:, j] + g[j][:, i]) / op.SQRT2 for i, j in PAIRS[d]]
    return torch.stack(comps, dim=1) + E.reshape(*E.shape, *([1] * d))


def _divergence(sigma: torch.Tensor, inv_h: torch.Tensor, d: int) -> torch.Tensor:
    """Dᵀσ: t_i = Σ_j D_jᵀ σ_ij for a Mandel field σ (B, m, *grid); (B, d, *grid)."""
    index = {}
    for a, (i, j) in enumerate(PAIRS[d]):
        index[(i, j)] = index[(j, i)] = a
    out = 0
    for j in range(d):  # D_jᵀ of the vector field σ_·j
        a = torch.stack([sigma[:, index[(i, j)]] * (1.0 if i == j else 1.0 / op.SQRT2) for i in range(d)],
                        dim=1)
        for m in range(d):
            if m != j:
                a = a + torch.roll(a, 1, dims=m - d)
        out = out + (torch.roll(a, 1, dims=j - d) - a) * (inv_h / 2 ** (d - 1))
    return out


def _operator(E, u, c_mandel, scale, inv_h, d: int):
    sigma = scale[:, None] * apply_mandel(c_mandel, _strain(E, u, inv_h, d))
    return sigma.mean(dim=tuple(range(-d, 0))), _divergence(sigma, inv_h, d)


def _real_dot(e1, u1, e2, u2, n: int):
    return n * (e1 * e2).sum(-1) + (u1 * u2).reshape(u1.shape[0], -1).sum(-1)


def _real_minv(r0, r1, ninv, c0_inv, shape):
    d = len(shape)
    dims = tuple(range(-d, 0))
    E = torch.matmul(c0_inv, r0[..., None])[..., 0]
    u_hat = torch.view_as_real(torch.fft.rfftn(r1, dim=dims))  # N₀⁻¹ is real: it acts on both parts alike
    w = ninv[..., None]
    U = torch.stack([sum(w[:, i, j] * u_hat[:, j] for j in range(d)) for i in range(d)], dim=1)
    return E, torch.fft.irfftn(torch.view_as_complex(U.contiguous()), s=shape, dim=dims)


def _real_iteration(x0, x1, r0, r1, p0, p1, rz, active, c_mandel, scale, inv_h, ninv, c0_inv, shape):
    """One CG iteration in real space: (x, r, p, z·r) after it."""
    d = len(shape)
    n = math.prod(shape)
    a0, a1 = _operator(p0, p1, c_mandel, scale, inv_h, d)
    alpha = _step_sizes(active, rz, _real_dot(p0, p1, a0, a1, n))
    x0, x1 = x0 + _bcast(alpha, x0) * p0, x1 + _bcast(alpha, x1) * p1
    r0, r1 = r0 - _bcast(alpha, r0) * a0, r1 - _bcast(alpha, r1) * a1
    z0, z1 = _real_minv(r0, r1, ninv, c0_inv, shape)
    rz_new = _real_dot(r0, r1, z0, z1, n)
    beta = _step_sizes(active, rz_new, rz)
    return x0, x1, r0, r1, z0 + _bcast(beta, z0) * p0, z1 + _bcast(beta, z1) * p1, rz_new


COMPILE: bool | str = "auto"  # rotated scheme in real space, fused: True always, False never, "auto" by size
COMPILE_MIN_CELLS = 1 << 18  # "auto": from this many batch elements × grid cells per solve
_compiled: dict = {}
_compile_failed: list = []  # the reason, once torch.compile has failed here (eager from then on)


def _fuse(grid: Grid, batch: int) -> bool:
    """Whether a solve of ``batch`` elements on ``grid`` runs the fused real-space iteration (decided by its
    size alone, so a repeated call computes bit for bit the same). Measured on 2 CPU cores, float32, 48²:
    one solve 2.1× the Fourier path's speed at 128 elements, 1.3× at 32; compiling costs about 10-15 s
    once per process (and once more when the shapes first change), which only long runs of large batches
    repay (the charging envelope's 128-element programs: 2¹⁸ ≈ 114 elements of 48²)."""
    if COMPILE is False or _compile_failed:
        return False
    return COMPILE is True or batch * grid.n_cells >= COMPILE_MIN_CELLS


def _real(fn):
    """``fn`` of the real-space path through ``torch.compile``. A compilation that fails falls back to the
    eager function (the same arithmetic), with one warning."""
    if _compile_failed:
        return fn
    call = _compiled.get(fn)
    if call is None:
        compiled = torch.compile(fn)

        def call(*args):
            if _compile_failed:
                return fn(*args)
            try:
                with warnings.catch_warnings():  # inductor leaves the transforms' complex ops to ATen
                    warnings.filterwarnings("ignore", message=".*complex operators.*")
                    return compiled(*args)
            except Exception as exc:  # noqa: BLE001 (any compiler failure: the eager function computes the same)
                _compile_failed.append(f"{type(exc).__name__}: {exc}")
                warnings.warn("torch.compile of the particle solver's real-space path failed; it runs "
                              f"eagerly ({_compile_failed[0][:300]})", RuntimeWarning, stacklevel=2)
                return fn(*args)

        _compiled[fn] = call
    return call


class FreeParticleSolve(torch.autograd.Function):
    """strain = D A⁻¹ b(ε⁰, C, s) with an implicit adjoint backward (module docstring)."""

    @staticmethod
    def forward(ctx, eps0, c_mandel, scale, prob, tol, max_iter, x0):
        b = apply_Dt(prob, scale[:, None] * apply_mandel(c_mandel, eps0))
        x, iters, res = pcg(prob, c_mandel, scale, b, x0, tol, max_iter)
        strain = apply_D(prob, *x)
        ctx.prob, ctx.tol, ctx.max_iter = prob, tol, max_iter
        ctx.save_for_backward(eps0, c_mandel, scale, strain)
        ctx.mark_non_differentiable(x[0], x[1], iters, res)
        return strain, x[0], x[1], iters, res

    @staticmethod
    def backward(ctx, grad_strain, *_unused):
        eps0, c_mandel, scale, strain = ctx.saved_tensors
        prob = ctx.prob
        needs = ctx.needs_input_grad[:3]
        if grad_strain is None or not any(needs):
            return (None,) * 7
        rhs = apply_Dt(prob, grad_strain)
        lam, _, _ = pcg(prob, c_mandel, scale, rhs, None, ctx.tol, ctx.max_iter)
        eta = apply_D(prob, *lam)
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(bool(n)) for t, n in zip((eps0, c_mandel, scale), needs)]
            e0, cm, sc = leaves
            phi = (eta * sc[:, None] * apply_mandel(cm, e0 - strain)).sum()
            wanted = [t for t, n in zip(leaves, needs) if n]
            grads = iter(torch.autograd.grad(phi, wanted))
        out = [next(grads) if n else None for n in needs]
        return (*out, None, None, None, None)


def solve_particle(grid, c_mandel, c4, scale, eps0, scheme, tol, max_iter, x0):
    """Run the solve; returns strain (B, m, *grid), E (B, m), the displacement u (B, d, *grid) on the grid
    (cell corners for the rotated scheme), iterations (B,), residual (B,). ``x0``: None or (E, u) alike."""
    prob = make_problem(grid, c_mandel, c4, scale, scheme)
    if scheme == "rotated" and _fuse(grid, eps0.shape[0]):
        prob = replace(prob, real_space=True)
    dims = prob.dims
    if x0 is not None and not prob.real_space:
        x0 = (x0[0], torch.fft.rfftn(x0[1], dim=dims))
    strain, E, u, it, res = FreeParticleSolve.apply(eps0, c_mandel, scale, prob, tol, max_iter, x0)
    if not prob.real_space:
        u = torch.fft.irfftn(u, s=grid.shape, dim=dims)
    return strain, E, u, it, res
