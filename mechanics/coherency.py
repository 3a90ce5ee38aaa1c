"""Khachaturyan's coherency function B(n) and its spectral kernel.

For a misfit (eigenstrain jump) ε* between two coherent phases of the same stiffness C, a planar
interface with unit normal n stores, per volume of a laminate of volume fraction φ, ½ B(n) φ(1 − φ)
with (Khachaturyan, Theory of Structural Transformations in Solids, 1983, ch. 7)

    B(n) = ε*:C:ε* − (σ*·n) · Ω(n) · (σ*·n),   σ* = C:ε*,   Ω(n)⁻¹_ik = C_ijkl n_j n_l.

| symbol | variable | shape | unit |
|---|---|---|---|
| C_ijkl | ``C.tensor()`` | (*b, 3, 3, 3, 3) | GPa |
| ε*_ij | ``misfit`` | (*b, 3, 3) | 1 |
| n | ``normal`` | (*n, 3) | 1 (normalised here) |
| B | return | broadcast(*b, *n) | GPa = aJ/nm³ |

For an eigenstrain ε⁰(x) = ε* c(x) in a periodic homogeneous body with zero mean stress the elastic
energy is E = ½ V Σ_{k≠0} B(k̂) |c̃_k|² with c̃_k the Fourier coefficients (c(x) = Σ c̃_k e^{ik·x}),
which is why B(k̂) on the FFT grid is the elastic kernel of a phase-field model with a linear law.
In 2-D (plane strain or generalized plane stress, see :mod:`mechanics.stiffness`) the same formula holds
with the reduced in-plane stiffness and the in-plane part of ε*.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mechanics.elasticity.operators import nyquist_modes, solve_small_symmetric
from mechanics.errors import InputError
from mechanics.grid import Grid
from mechanics.stiffness import Stiffness, check_plane_axes


def _as_stiffness(C) -> Stiffness:
    if isinstance(C, Stiffness):
        return C
    return Stiffness.from_voigt(C)


def _as_float_tensor(x, field: str, expected: str, dtype, device) -> torch.Tensor:
    try:
        t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float64))
    except (TypeError, ValueError):
        raise InputError(field, expected, x) from None
    if t.is_complex():
        raise InputError(field, expected, t.dtype)
    return t.to(dtype=dtype, device=device)


def _check_misfit(misfit: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) tensor, or (..., 3) diagonal (a, b, c) when the last two dimensions are not (3, 3).

    A batch of exactly three diagonal vectors, shape (3, 3), reads as one tensor: pass
    ``torch.diag_embed(v)`` to be unambiguous."""
    if misfit.shape[-1:] == (3,) and (misfit.ndim < 2 or misfit.shape[-2] != 3):
        misfit = torch.diag_embed(misfit)
    if misfit.ndim < 2 or tuple(misfit.shape[-2:]) != (3, 3):
        raise InputError("misfit", "a (..., 3, 3) eigenstrain tensor in the crystal frame",
                         tuple(misfit.shape))
    return 0.5 * (misfit + misfit.transpose(-1, -2))


def b_of_n(c4: torch.Tensor, eps: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """B(n) for a stiffness tensor (..., d, d, d, d), misfit (..., d, d), unit normals (..., d); all
    leading dimensions broadcast. Returns (...,) GPa."""
    sigma = torch.einsum("...ijkl,...kl->...ij", c4, eps)
    self_term = (sigma * eps).sum((-1, -2))
    acoustic = torch.einsum("...ijkl,...j,...l->...ik", c4, n, n)
    traction = torch.einsum("...ij,...j->...i", sigma, n)
    return self_term - (traction * solve_small_symmetric(acoustic, traction)).sum(-1)


def coherency_B(C, misfit, normal) -> torch.Tensor:
    """Khachaturyan B(n) in GPa (module docstring for the equation).

    ``C``: :class:`Stiffness` (batch *b) or a Voigt matrix; ``misfit``: (..., 3, 3); ``normal``:
    (..., 3), normalised here. Leading dimensions of the three broadcast like torch tensors (give
    normals (K, 3) and misfit (B, 1, 3, 3) for K normals per material). Computed in the dtype and on the
    device of ``C``.
    """
    C = _as_stiffness(C)
    dtype, device = C.dtype, C.device
    eps = _check_misfit(_as_float_tensor(misfit, "misfit", "a (..., 3, 3) real tensor", dtype, device))
    n = _as_float_tensor(normal, "normal", "a (..., 3) real vector", dtype, device)
    if n.ndim < 1 or n.shape[-1] != 3:
        raise InputError("normal", "a (..., 3) vector", tuple(n.shape))
    norm = torch.linalg.vector_norm(n, dim=-1, keepdim=True)
    if bool((norm == 0).any()):
        raise InputError("normal", "non-zero vectors", "a zero vector")
    return b_of_n(C.tensor(), eps, n / norm)


def coherency_kernel(grid: Grid, C, misfit, plane: str = "stress", axes=(0, 1)) -> torch.Tensor:
    """B(k̂) on the ``torch.fft.rfftn`` frequency grid of ``grid``, shape (*batch, *grid.rfft_shape), GPa.

    The k = 0 entry is 0 (zero mean stress: a uniform composition stores no coherency energy), and so
    are the Nyquist modes of even axes (they have no consistent real wavevector; the spectral solver
    leaves them stress-free, see :mod:`mechanics.elasticity.homogeneous`). In 2-D
    the reduced in-plane stiffness (``plane``, crystal ``axes`` on grid axes 0, 1) and the in-plane
    part ``ε*[axes][:, axes]`` of the misfit are used; in 3-D ``plane`` and ``axes`` are ignored.
    ``misfit`` is (*b, 3, 3) in the crystal frame; *batch = broadcast of C's and misfit's batch.
    """
    if not isinstance(grid, Grid):
        raise InputError("grid", "a mechanics.Grid", type(grid).__name__)
    if grid.ndim not in (2, 3):
        raise InputError("grid", "a 2-D or 3-D mechanics.Grid (elasticity needs 2 or 3 axes)", grid.shape)
    C = _as_stiffness(C)
    dtype, device = C.dtype, C.device
    eps = _check_misfit(_as_float_tensor(misfit, "misfit", "a (..., 3, 3) real tensor", dtype, device))
    d = grid.ndim
    if d == 2:
        p, q = check_plane_axes(plane, axes)
        c4 = C.reduced((p, q), plane)
        idx = torch.tensor([p, q], device=device)
        eps = eps.index_select(-2, idx).index_select(-1, idx)
    else:
        c4 = C.tensor()
    k = grid.wavevectors(dtype=dtype, device=device, rfft=True)  # (*K, d)
    k_norm = torch.linalg.vector_norm(k, dim=-1, keepdim=True)
    zero = k_norm == 0
    n = torch.where(zero, torch.ones_like(k), k)
    n = n / torch.where(zero, math.sqrt(d) * torch.ones_like(k_norm), k_norm)
    batch = torch.broadcast_shapes(c4.shape[:-4], eps.shape[:-2])
    nk = len(grid.shape)
    c4 = c4.expand(*batch, *c4.shape[-4:]).reshape(*batch, *([1] * nk), *c4.shape[-4:])
    eps = eps.expand(*batch, d, d).reshape(*batch, *([1] * nk), d, d)
    out = b_of_n(c4, eps, n)
    skip = zero.squeeze(-1) | nyquist_modes(grid, device)
    return torch.where(skip, torch.zeros_like(out), out)


def _fibonacci_hemisphere(n: int, dtype, device) -> torch.Tensor:
    """n nearly uniform unit vectors with z ≥ 0 (B(n) = B(−n), so a hemisphere suffices)."""
    i = torch.arange(n, dtype=dtype, device=device) + 0.5
    z = 1.0 - i / n
    r = torch.sqrt((1.0 - z * z).clamp_min(0))
    phi = math.pi * (3.0 - math.sqrt(5.0)) * i
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1)


def minimum_B(
    C, misfit, n_directions: int = 2000, plane_axes=None, refine_rounds: int = 12
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum of B(n) over unit normals: (B_min (*b,) GPa, normal (*b, 3)).

    Samples ``n_directions`` normals (a Fibonacci hemisphere, or angles in the plane of crystal axes
    ``plane_axes`` = (p, q)), then refines around the best sample by ``refine_rounds`` rounds of a
    7 × 7 (or 7-point in-plane) local grid whose radius shrinks threefold per round, so the final normal
    is resolved to ~ (initial spacing)·3^-rounds rad. B_min is re-evaluated at the final normal by
    :func:`coherency_B`, so it is differentiable in C and misfit (envelope theorem: the normal's own
    dependence does not contribute at a minimum). The normal is returned without gradient, sign fixed
    so that its largest component is positive. *b = broadcast of C's and misfit's batch shapes.
    """
    C = _as_stiffness(C)
    dtype, device = C.dtype, C.device
    eps = _check_misfit(_as_float_tensor(misfit, "misfit", "a (..., 3, 3) real tensor", dtype, device))
    if int(n_directions) < 8:
        raise InputError("n_directions", "an integer >= 8", n_directions)
    batch = torch.broadcast_shapes(C.batch_shape, eps.shape[:-2])
    with torch.no_grad():
        c4 = C.tensor().detach().expand(*batch, 3, 3, 3, 3).reshape(-1, 1, 3, 3, 3, 3)
        e = eps.detach().expand(*batch, 3, 3).reshape(-1, 1, 3, 3)
        nb = c4.shape[0]
        rows = torch.arange(nb, device=device)
        if plane_axes is None:
            dirs = _fibonacci_hemisphere(int(n_directions), dtype, device)
            values = b_of_n(c4, e, dirs)  # (nb, K)
            best = dirs[values.argmin(-1)]  # (nb, 3)
            radius = math.sqrt(2 * math.pi / int(n_directions))
            offsets = torch.linspace(-1.0, 1.0, 7, dtype=dtype, device=device)
            oa, ob = torch.meshgrid(offsets, offsets, indexing="ij")
            oa, ob = oa.reshape(-1), ob.reshape(-1)
            for _ in range(refine_rounds):
                helper = torch.where(
                    best[:, :1].abs() < 0.9,
                    torch.tensor([1.0, 0.0, 0.0], dtype=dtype, device=device).expand(nb, 3),
                    torch.tensor([0.0, 1.0, 0.0], dtype=dtype, device=device).expand(nb, 3),
                )
                t1 = torch.linalg.cross(best, helper)
                t1 = t1 / torch.linalg.vector_norm(t1, dim=-1, keepdim=True)
                t2 = torch.linalg.cross(best, t1)
                step = oa[None, :, None] * t1[:, None] + ob[None, :, None] * t2[:, None]
                cand = best[:, None] + radius * step
                cand = cand / torch.linalg.vector_norm(cand, dim=-1, keepdim=True)
                values = b_of_n(c4, e, cand)
                best = cand[rows, values.argmin(-1)]
                radius /= 3.0
        else:
            p, q = check_plane_axes("stress", plane_axes)
            theta = torch.arange(int(n_directions), dtype=dtype, device=device)
            theta = theta * (math.pi / int(n_directions))
            step = math.pi / int(n_directions)
            offsets = torch.linspace(-1.0, 1.0, 7, dtype=dtype, device=device)

            def to_normal(th: torch.Tensor) -> torch.Tensor:
                n = torch.zeros(*th.shape, 3, dtype=dtype, device=device)
                n[..., p] = torch.cos(th)
                n[..., q] = torch.sin(th)
                return n

            values = b_of_n(c4, e, to_normal(theta))
            best_t = theta[values.argmin(-1)]  # (nb,)
            for _ in range(refine_rounds):
                cand_t = best_t[:, None] + step * offsets[None, :]
                values = b_of_n(c4, e, to_normal(cand_t))
                best_t = cand_t[rows, values.argmin(-1)]
                step /= 3.0
            best = to_normal(best_t)
        lead = best.gather(-1, best.abs().argmax(-1, keepdim=True))
        best = best * torch.sign(lead)
        best = best.reshape(*batch, 3)
    return coherency_B(C, eps, best), best
