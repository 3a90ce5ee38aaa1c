"""Periodic homogeneous body with eigenstrain: the exact Green-operator solution in one FFT round trip.

With stiffness C uniform and zero mean stress (Mura, Micromechanics of Defects in Solids, 1987, §3;
Moulinec & Suquet, CMAME 157, 69 (1998)):

    ε̂(k) = Γ(k) : τ̂(k) = sym( g ⊗ N(g)⁻¹ (τ̂ g) ),   τ = C : ε⁰,   N_ik = C_ijkl g_j g_l   (k ≠ 0)
    ⟨ε⟩ = ⟨ε⁰⟩                                           (k = 0: ⟨σ⟩ = C:(⟨ε⟩ − ⟨ε⁰⟩) = 0)
    σ = C : (ε − ε⁰)

With the ``spectral`` scheme a mode at the Nyquist frequency of an even axis has no consistent real
wavevector (k and its conjugate partner point in different directions); such modes are left
stress-free, ε̂ = ε̂⁰ (Moulinec & Suquet's convention), and :func:`mechanics.coherency.coherency_kernel`
is zero there, so the kernel and the solver agree mode by mode.

| symbol | variable | shape | unit |
|---|---|---|---|
| ε⁰, ε | ``eps0``, return | (B, m, *grid) Mandel | 1 |
| C | ``c_mandel`` / ``c4`` | (B, m, m) / (B, d, d, d, d) | GPa |
| g | derivative multiplier (``operators``) | d × (*rfft) | rad/nm |

The result is exact for the discrete problem: one forward FFT of τ (m components) and one inverse FFT
of ε̂ (m components). Differentiable in ε⁰ and C by autograd.
"""

from __future__ import annotations

import torch

from mechanics.elasticity import operators as op
from mechanics.grid import Grid


def apply_mandel(c_mandel: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """(B or 1, m, m) @ (B, m, *grid) pointwise (a single stiffness broadcasts over the batch)."""
    b, m = field.shape[:2]
    return torch.matmul(c_mandel, field.reshape(b, m, -1)).reshape(field.shape)


def solve_homogeneous(
    grid: Grid, c_mandel: torch.Tensor, c4: torch.Tensor, eps0: torch.Tensor, scheme: str = "spectral"
) -> torch.Tensor:
    """Total strain (B, m, *grid) (Mandel) of the periodic homogeneous body (module docstring)."""
    d = grid.ndim
    dims = tuple(range(-d, 0))
    e0_hat = torch.fft.rfftn(eps0, dim=dims)
    tau_hat = apply_mandel(c_mandel.to(e0_hat.dtype), e0_hat)
    g, gg, valid, stress_free = op.homogeneous_constants(grid, scheme, eps0.dtype, eps0.device)
    u = op.inverse_acoustic_apply(op.acoustic(c4, gg), op.mandel_dot(tau_hat, g, d), valid)
    eps_hat = op.mandel_sym_outer(g, u, d)
    eps_hat = torch.where(stress_free, e0_hat, eps_hat)
    return torch.fft.irfftn(eps_hat, s=grid.shape, dim=dims)
