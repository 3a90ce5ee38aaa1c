"""``solve_elasticity``: the public entry point, input checks and the result record."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mechanics.elasticity import homogeneous, particle
from mechanics.elasticity.operators import check_scheme
from mechanics.errors import InputError
from mechanics.grid import Grid
from mechanics.stiffness import (
    PAIRS,
    Stiffness,
    check_plane_axes,
    mandel_to_tensor,
    tensor_to_mandel,
    voigt_to_tensor,
)


@dataclass(frozen=True)
class ElasticityResult:
    """Solution of one (batched) elastic problem.

    Fields (``*batch`` = broadcast of the eigenstrain's, stiffness's and mask's batch shapes):
      strain: total strain ε, (*batch, *grid, d, d), dimensionless (tensor shear).
      stress: σ = S:(ε − ε⁰), (*batch, *grid, d, d), GPa.
      energy: ½ Σ (ε − ε⁰):σ h^d over the whole cell, (*batch,), aJ in 3-D, aJ per nm of thickness in
        2-D (with a mask this includes the soft void's share, O(η) of the particle's).
      mean_strain: ⟨ε⟩ over the cell, (*batch, d, d).
      displacement: periodic displacement fluctuation u (nm), (*batch, *grid, d); on the cell corners
        (node j at the lower corner of cell j) for the rotated scheme. None for the homogeneous path.
      iterations: CG iterations per batch element, (*batch,) int64; None for the homogeneous path.
      residual: final relative preconditioned residual per batch element, (*batch,); None likewise.
      converged: all residuals ≤ tol (True for the homogeneous path).
    """

    strain: torch.Tensor
    stress: torch.Tensor
    energy: torch.Tensor
    mean_strain: torch.Tensor
    displacement: torch.Tensor | None = None
    iterations: torch.Tensor | None = None
    residual: torch.Tensor | None = None
    converged: bool = True


def _as_tensor(x, field: str, expected: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError):
        raise InputError(field, expected, x) from None


def _check_grid(grid) -> Grid:
    if not isinstance(grid, Grid):
        raise InputError("grid", "a mechanics.Grid", type(grid).__name__)
    if grid.ndim not in (2, 3):
        raise InputError("grid", "a 2-D or 3-D mechanics.Grid (elasticity needs 2 or 3 axes)", grid.shape)
    return grid


def solve_elasticity(
    grid: Grid,
    C,
    eigenstrain,
    mask=None,
    plane: str = "strain",
    axes=(0, 1),
    *,
    stiffness_scale=None,
    void_stiffness: float = 1e-3,
    tol: float | None = None,
    max_iter: int = 5000,
    x0=None,
    scheme: str | None = None,
) -> ElasticityResult:
    """Linear elasticity with an eigenstrain on a periodic grid, batched and differentiable.

    Arguments:
      grid: :class:`~mechanics.grid.Grid`, d = 2 or 3.
      C: :class:`~mechanics.stiffness.Stiffness` (batch (*b) broadcasting with the eigenstrain's), or a
        Voigt matrix. Moved to the eigenstrain's dtype and device.
      eigenstrain: ε⁰, (*batch, *grid, d, d), in the grid frame (grid axis i carries crystal axis
        ``axes[i]`` in 2-D, crystal axis i in 3-D). Non-float input becomes float64.
      mask: None — periodic homogeneous body with zero mean stress, exact Green operator
        (:mod:`.homogeneous`). A bool (*grid) or (*batch, *grid) — traction-free particle: stiffness C
        inside, ``void_stiffness`` × C outside, solved by PCG (:mod:`.particle`).
      plane: "strain" or "stress" (generalized plane stress, σ along the out-of-plane crystal axis = 0);
        2-D only. axes: the two crystal axes (0 = a, 1 = b, 2 = c) of grid axes 0, 1; 2-D only.
      stiffness_scale: optional positive field (*grid) or (*batch, *grid) multiplying C (a
        heterogeneous modulus, e.g. PFHub benchmark 4); forces the iterative path. Differentiable.
      void_stiffness: η, stiffness ratio of the void to the particle (0 < η ≤ 1).
      tol: relative preconditioned residual at which CG stops (default 1e-8 in float64, 1e-6 in
        float32). max_iter: CG iteration cap. x0: warm start, a previous :class:`ElasticityResult` of
        a masked solve (its mean strain and displacement), or a displacement (*batch, *grid, d) in nm;
        batch dimensions broadcast.
      scheme: "spectral" (default without mask) or "rotated" (default with mask; Willot's rotated
        finite differences, no ringing at the surface); see :mod:`.operators`.

    Returns :class:`ElasticityResult`.
    """
    grid = _check_grid(grid)
    d = grid.ndim
    eps0 = _as_tensor(eigenstrain, "eigenstrain", f"a (*batch, *grid, {d}, {d}) real tensor")
    if eps0.is_complex():
        raise InputError("eigenstrain", "a real tensor", eps0.dtype)
    if not eps0.is_floating_point():
        eps0 = eps0.to(torch.float64)
    dtype, device = eps0.dtype, eps0.device
    tail = (*grid.shape, d, d)
    if eps0.ndim < len(tail) or tuple(eps0.shape[-len(tail):]) != tail:
        raise InputError("eigenstrain", f"shape (*batch, {', '.join(map(str, tail))})", tuple(eps0.shape))
    if d == 2:
        axes = check_plane_axes(plane, axes)
    elif plane not in ("strain", "stress"):
        raise InputError("plane", "'strain' or 'stress'", plane)
    if not isinstance(C, Stiffness):
        C = Stiffness.from_voigt(C)
    C = C.to(dtype=dtype, device=device)
    c_mandel = C.mandel(d, axes, plane)  # (*b, m, m)
    c4 = C.tensor() if d == 3 else voigt_to_tensor(C.reduced_voigt(axes, plane))
    eps_batch = eps0.shape[: eps0.ndim - len(tail)]

    iterative = mask is not None or stiffness_scale is not None
    scale = None
    scale_batch: tuple = ()
    if iterative:
        scale, scale_batch = _scale_field(grid, mask, stiffness_scale, void_stiffness, dtype, device)
    try:
        batch = torch.broadcast_shapes(eps_batch, C.batch_shape, scale_batch)
    except RuntimeError:
        raise InputError("eigenstrain/C/mask", "batch shapes that broadcast",
                         (tuple(eps_batch), tuple(C.batch_shape), tuple(scale_batch))) from None
    nb = math.prod(batch)
    m = c_mandel.shape[-1]
    e0 = _field_to_mandel(eps0, d)  # (*eps_batch, m, *grid)
    if tuple(eps_batch) != tuple(batch):
        e0 = e0.expand(*batch, m, *grid.shape)
    e0 = e0.reshape(nb, m, *grid.shape)
    # one stiffness for the whole batch stays a batch of 1 (broadcast inside the kernels)
    cb = 1 if math.prod(C.batch_shape) == 1 else nb
    cm = (c_mandel.reshape(1, m, m) if cb == 1 else c_mandel.expand(*batch, m, m).reshape(nb, m, m))
    c4b = (c4.reshape(1, *c4.shape[-4:]) if cb == 1
           else c4.expand(*batch, *c4.shape[-4:]).reshape(nb, *c4.shape[-4:]))
    dims = tuple(range(-d, 0))

    if not iterative:
        scheme = check_scheme(scheme or "spectral")
        strain = homogeneous.solve_homogeneous(grid, cm, c4b, e0, scheme)
        elastic = strain - e0
        stress = homogeneous.apply_mandel(cm, elastic)
        displacement = iterations = residual = None
        converged = True
    else:
        scheme = check_scheme(scheme or "rotated")
        if tol is None:
            tol = 1e-8 if dtype == torch.float64 else 1e-6
        if not (isinstance(tol, (int, float)) and 0 < tol < 1):
            raise InputError("tol", "a number in (0, 1)", tol)
        if int(max_iter) < 1:
            raise InputError("max_iter", "a positive integer", max_iter)
        if math.prod(scale_batch) == 1:
            sc = scale.reshape(1, *grid.shape)
        else:
            sc = scale.expand(*batch, *grid.shape).reshape(nb, *grid.shape)
        start = _warm_start(x0, grid, batch, nb, m, d, dtype, device, e0)
        strain, E, u, it, res = particle.solve_particle(
            grid, cm, c4b, sc, e0, scheme, float(tol), int(max_iter), start
        )
        elastic = strain - e0
        stress = sc[:, None] * homogeneous.apply_mandel(cm, elastic)
        displacement = u.movedim(1, -1).reshape(*batch, *grid.shape, d)
        iterations = it.reshape(batch)
        residual = res.reshape(batch)
        converged = bool((res <= tol).all())
    energy = 0.5 * (elastic * stress).reshape(nb, -1).sum(-1) * grid.cell_volume
    mean_strain = mandel_to_tensor(strain.mean(dim=dims), d).reshape(*batch, d, d)
    strain_t = _mandel_to_field(strain, d).reshape(*batch, *grid.shape, d, d)
    stress_t = _mandel_to_field(stress, d).reshape(*batch, *grid.shape, d, d)
    return ElasticityResult(
        strain=strain_t, stress=stress_t, energy=energy.reshape(batch), mean_strain=mean_strain,
        displacement=displacement, iterations=iterations, residual=residual, converged=converged,
    )


def _field_to_mandel(t: torch.Tensor, d: int) -> torch.Tensor:
    """Tensor field (*b, *grid, d, d) → Mandel field (*b, m, *grid) of its symmetric part, one pass."""
    comps = []
    for i, j in PAIRS[d]:
        comps.append(t[..., i, i] if i == j else (t[..., i, j] + t[..., j, i]) * (0.5 * math.sqrt(2.0)))
    return torch.stack(comps, dim=t.ndim - 2 - d)


def _mandel_to_field(v: torch.Tensor, d: int) -> torch.Tensor:
    """Mandel field (B, m, *grid) → tensor field (B, *grid, d, d), one pass per output component."""
    index = {}
    for a, (i, j) in enumerate(PAIRS[d]):
        index[(i, j)] = index[(j, i)] = a
    inv = 1.0 / math.sqrt(2.0)
    shear = {a: v[:, a] * inv for a, (i, j) in enumerate(PAIRS[d]) if i != j}
    comps = [v[:, index[(i, j)]] if i == j else shear[index[(i, j)]] for i in range(d) for j in range(d)]
    return torch.stack(comps, dim=-1)


def _scale_field(grid, mask, stiffness_scale, void_stiffness, dtype, device):
    """s(x) = [mask ? 1 : η] · stiffness_scale(x), shape (*b, *grid), and its batch shape."""
    nd = grid.ndim
    s = torch.ones(grid.shape, dtype=dtype, device=device)
    if mask is not None:
        mk = _as_tensor(mask, "mask", "a bool tensor (*grid) or (*batch, *grid)")
        if mk.dtype != torch.bool:
            raise InputError("mask", "a bool tensor (*grid) or (*batch, *grid)", mk.dtype)
        if mk.ndim < nd or tuple(mk.shape[-nd:]) != grid.shape:
            raise InputError("mask", f"shape (*batch, {', '.join(map(str, grid.shape))})", tuple(mk.shape))
        if not (isinstance(void_stiffness, (int, float)) and 0 < void_stiffness <= 1):
            raise InputError("void_stiffness", "a stiffness ratio in (0, 1]", void_stiffness)
        mk = mk.to(device)
        if not bool(mk.reshape(*mk.shape[:-nd], -1).any(-1).all()):
            raise InputError("mask", "at least one True cell per particle", "an empty mask")
        s = torch.where(mk, s, torch.full((), float(void_stiffness), dtype=dtype, device=device))
    if stiffness_scale is not None:
        sc = _as_tensor(stiffness_scale, "stiffness_scale", "a positive field (*grid) or (*batch, *grid)")
        if sc.ndim < nd or tuple(sc.shape[-nd:]) != grid.shape or sc.is_complex():
            raise InputError("stiffness_scale", f"a real field of shape (*batch, {grid.shape})",
                             tuple(sc.shape))
        sc = sc.to(dtype=dtype, device=device)
        if not bool((sc.detach() > 0).all()):
            raise InputError("stiffness_scale", "strictly positive values", "values <= 0")
        s = s * sc
    return s, s.shape[:-nd]


def _warm_start(x0, grid, batch, nb, m, d, dtype, device, e0):
    """(E, u) from a previous ElasticityResult (its mean strain and displacement), or from a
    displacement tensor (*batch, *grid, d) in nm with the mean eigenstrain as the mean-strain guess.
    Batch dimensions broadcast."""
    if x0 is None:
        return None
    expected = "an ElasticityResult of a previous masked solve, a displacement (*batch, *grid, d), or None"
    if isinstance(x0, ElasticityResult):
        if x0.displacement is None:
            raise InputError("x0", expected, "a result of the homogeneous (mask=None) path")
        u = x0.displacement.detach().to(dtype=dtype, device=device)
        E = tensor_to_mandel(x0.mean_strain.detach().to(dtype=dtype, device=device), d)
    elif isinstance(x0, torch.Tensor):
        u = x0.detach().to(dtype=dtype, device=device)
        E = e0.mean(dim=tuple(range(-d, 0))).detach()  # (nb, m)
    else:
        raise InputError("x0", expected, type(x0).__name__)
    try:
        u = u.expand(*batch, *grid.shape, d)
        E = E.expand(*batch, m) if tuple(E.shape) != (nb, m) else E
    except RuntimeError:
        raise InputError("x0", f"{expected}; displacement shape {(*batch, *grid.shape, d)}",
                         tuple(u.shape)) from None
    return E.reshape(nb, m).contiguous(), u.reshape(nb, *grid.shape, d).movedim(-1, 1).contiguous()
