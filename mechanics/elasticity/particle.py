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

Stopping rule: ‖r‖_{M⁻¹} / ‖b‖_{M⁻¹} ≤ tol per batch element (elements that converged stop moving);
an element whose residual has not reached a new minimum for 100 iterations (the round-off floor) also
stops, and the result reports it as not converged.
Gradients: an implicit adjoint. With λ = A⁻¹ Dᵀ ḡ (the same symmetric solve) and η = Dλ,
dL = Σ_x η : [dS : (ε⁰ − ε) + S : dε⁰], evaluated by autograd on that one expression; no unrolling.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from mechanics.elasticity import operators as op
from mechanics.elasticity.homogeneous import apply_mandel
from mechanics.grid import Grid

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
    return Problem(grid, xi, xi_conj, w, n_inv, c0_inv)


def apply_D(prob: Problem, E: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """ε = E + D u, (B, m, *grid)."""
    d = prob.grid.ndim
    fluct = torch.fft.irfftn(op.mandel_sym_outer(prob.xi, U, d), s=prob.grid.shape, dim=prob.dims)
    return fluct + E.reshape(*E.shape, *([1] * d))


def apply_Dt(prob: Problem, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dᵀσ = (⟨σ⟩, conj(ξ)·σ̂): (B, m), (B, d, *K)."""
    d = prob.grid.ndim
    s_hat = torch.fft.rfftn(sigma, dim=prob.dims)
    return sigma.mean(dim=prob.dims), op.mandel_dot(s_hat, prob.xi_conj, d)


def dot(prob: Problem, x1, x2) -> torch.Tensor:
    """⟨x₁, x₂⟩ per batch element (B,) (= N E₁·E₂ + Σ_x u₁·u₂)."""
    n = prob.grid.n_cells
    e_part = n * (x1[0] * x2[0]).sum(-1)
    u_part = (prob.weights * (x1[1].conj() * x2[1]).real).reshape(x1[1].shape[0], -1).sum(-1) / n
    return e_part + u_part


def apply_A(prob: Problem, c_mandel: torch.Tensor, scale: torch.Tensor, x):
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
    while it < max_iter and bool(active.any()):
        ap = apply_A(prob, c_mandel, scale, p)
        pap = dot(prob, p, ap)
        ok = active & (pap > 0)
        alpha = torch.where(ok, rz / torch.where(ok, pap, torch.ones_like(pap)), torch.zeros_like(pap))
        x = tuple(xi + _bcast(alpha, xi) * pi for xi, pi in zip(x, p))
        r = tuple(ri - _bcast(alpha, ri) * ai for ri, ai in zip(r, ap))
        z = apply_Minv(prob, r)
        rz_new = dot(prob, r, z)
        ok = active & (rz > 0)
        beta = torch.where(ok, rz_new / torch.where(ok, rz, torch.ones_like(rz)), torch.zeros_like(rz))
        p = tuple(zi + _bcast(beta, zi) * pi for zi, pi in zip(z, p))
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


def _bcast(a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return a.reshape(-1, *([1] * (like.ndim - 1)))


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
    """Run the solve; returns strain (B, m, *grid), E (B, m), U (B, d, *K), iterations (B,), residual (B,)."""
    prob = make_problem(grid, c_mandel, c4, scale, scheme)
    return FreeParticleSolve.apply(eps0, c_mandel, scale, prob, tol, max_iter, x0)
