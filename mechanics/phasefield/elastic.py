"""Coherency-strain coupling of the phase-field models to the mechanics core.

The composition c carries the eigenstrain ε⁰_ii(c) = ε⁰_ii(1)·g_i(c) (diagonal in the crystal frame,
i = a, b, c), g_i(X) = ε_i(X)/ε_i(1) the shape of a learned law (g = X for Vegard). Its elastic chemical
potential per volume is

    μ_el = δE_el/δc = −σ : dε⁰/dc                      (any law, any body; σ from ``solve_elasticity``)
    μ̂_el(k) = B(k̂) ĉ(k),  B from ``coherency_kernel``   (linear law, homogeneous periodic body)

(Khachaturyan, *Theory of Structural Transformations in Solids* (1983), ch. 7-8; Cogswell & Bazant,
ACS Nano 6, 2215 (2012)). In 2-D the grid holds two crystal axes ``axes`` (platelet: a and c,
``axes=(0, 2)``) and ``plane`` is ``"stress"`` (thin platelet) or ``"strain"``; in generalized plane stress
the out-of-plane eigenstrain drops out of the in-plane problem, so only the in-plane components enter.
Stress in GPa, energy density in GPa = aJ/nm³, μ_el in GPa (divide by ρ_s for aJ per site).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from mechanics.phasefield import spectral


def law_shape(law: torch.nn.Module | None) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Return ``shape(X) -> (g, g')``, each (..., 3): the law's normalised shape g_i = ε_i(X)/ε_i(1) and
    its derivative. ``None`` is Vegard (g = X). Axes whose end-member strain is below 1e-6 fall back to
    Vegard (their shape is undefined; any misfit the candidate has along them is then linear)."""
    if law is None:

        def vegard(x: torch.Tensor):
            g = x.unsqueeze(-1).expand(*x.shape, 3)
            return g, torch.ones_like(g)

        return vegard

    def shape(x: torch.Tensor):
        one = torch.ones((), dtype=x.dtype, device=x.device)
        end = law(one.reshape(1)).reshape(3).to(x.dtype)
        usable = end.abs() > 1e-6
        safe_end = torch.where(usable, end, torch.ones_like(end))
        if hasattr(law, "derivative"):
            value = law(x).to(x.dtype)
            slope = law.derivative(x).to(x.dtype)
        else:
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                value = law(xr).to(x.dtype)
                slope = torch.stack(
                    [torch.autograd.grad(value[..., i].sum(), xr, retain_graph=i < 2)[0] for i in range(3)],
                    dim=-1,
                )
                value = value.detach()
        vx = x.unsqueeze(-1).expand(*x.shape, 3)
        g = torch.where(usable, value / safe_end, vx)
        dg = torch.where(usable, slope / safe_end, torch.ones_like(vx))
        return g, dg

    return shape


def inplane_eigenstrain(
    g: torch.Tensor, misfit: torch.Tensor, axes: Sequence[int], d: int
) -> torch.Tensor:
    """ε⁰ on the grid, (*batch, *grid, d, d): diagonal entries misfit[axes[j]]·g[..., axes[j]].

    g: (*batch, *grid, 3); misfit: (*batch, 3).
    """
    batch = misfit.shape[:-1]
    mis = misfit.reshape(*batch, *([1] * d), 3)
    diag = torch.stack([mis[..., a] * g[..., a] for a in axes], dim=-1)
    return torch.diag_embed(diag)


@dataclass(frozen=True)
class ElasticCoupling:
    """Everything the steppers need about the elastic body of a batch.

    grid: ``mechanics.Grid`` of the field; stiffness: ``mechanics.Stiffness`` (batched (*batch, 6, 6));
    misfit: (*batch, 3) ε⁰(1) along a, b, c; shape: from :func:`law_shape`; axes/plane as in the core;
    mask: None (homogeneous periodic) or (H, W) bool (traction-free particle; void outside).
    """

    grid: object
    stiffness: object
    misfit: torch.Tensor
    shape: Callable
    axes: tuple[int, ...] = (0, 2)
    plane: str = "stress"
    mask: torch.Tensor | None = None
    tol: float = 1e-6

    @property
    def d(self) -> int:
        return len(self.grid.shape)

    def eigenstrain(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ε⁰(c), dε⁰/dc), each (*batch, *grid, d, d)."""
        g, dg = self.shape(c)
        misfit = self.misfit.to(dtype=c.dtype, device=c.device)
        eps0 = inplane_eigenstrain(g, misfit, self.axes, self.d)
        return eps0, inplane_eigenstrain(dg, misfit, self.axes, self.d)

    def embed(self, c: torch.Tensor) -> torch.Tensor:
        """The composition on the elastic grid (identity here; a particle pads it with void)."""
        return c

    def view(self, field: torch.Tensor) -> torch.Tensor:
        """A scalar field of the elastic grid on the composition grid (identity here)."""
        return field

    def solve(self, c: torch.Tensor, x0=None):
        """(the core's elastic solution for ε⁰(c), ε⁰ on the elastic grid)."""
        from mechanics import solve_elasticity

        eps0, _ = self.eigenstrain(self.embed(c))
        kwargs = {"mask": self.mask, "plane": self.plane, "axes": tuple(self.axes)}
        if self.mask is not None:
            kwargs["x0"] = x0
            kwargs["tol"] = self.tol
        return solve_elasticity(self.grid, self.stiffness, eps0, **kwargs), eps0

    def kernel(self, dtype: torch.dtype) -> torch.Tensor:
        """Khachaturyan B(k̂) of the Vegard law with this misfit on the rfft grid, (*batch, *rfft), GPa."""
        from mechanics.coherency import coherency_kernel

        misfit = torch.diag_embed(self.misfit.to(dtype=self.stiffness.dtype, device=self.stiffness.device))
        kernel = coherency_kernel(self.grid, self.stiffness, misfit, self.plane, tuple(self.axes))
        return kernel.to(dtype)

    @property
    def eigen_axes(self) -> tuple[int, ...]:
        """Crystal axes whose eigenstrain enters the problem: the grid's (in-plane) axes, or a, b, c."""
        return tuple(self.axes) if self.d == 2 else (0, 1, 2)

    def kernel_matrix(self, dtype: torch.dtype) -> torch.Tensor:
        """Q_ij(k̂) (*batch, *rfft, n, n) GPa with B(k̂; ε*) = Σ_ij ε*_i Q_ij ε*_j for a diagonal ε*
        over :attr:`eigen_axes`, by polarisation of the core's kernel: Q_ii = B(e_i),
        Q_ij = ½[B(e_i + e_j) − B(e_i) − B(e_j)] (n + n(n−1)/2 kernel evaluations)."""
        from mechanics.coherency import coherency_kernel

        axes = self.eigen_axes
        n = len(axes)

        def b(weights: dict[int, float]) -> torch.Tensor:
            e = torch.zeros(3, dtype=self.stiffness.dtype, device=self.stiffness.device)
            for axis, value in weights.items():
                e[axis] = value
            return coherency_kernel(self.grid, self.stiffness, torch.diag(e), self.plane, tuple(self.axes))

        diag = [b({a: 1.0}) for a in axes]
        rows = [[None] * n for _ in range(n)]
        for i in range(n):
            rows[i][i] = diag[i]
            for j in range(i + 1, n):
                rows[i][j] = rows[j][i] = 0.5 * (b({axes[i]: 1.0, axes[j]: 1.0}) - diag[i] - diag[j])
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2).to(dtype)

    def potential_from_stress(self, c: torch.Tensor, x0=None):
        """μ_el = −σ:dε⁰/dc (GPa), (*batch, *grid); also returns the solution (for warm starts/metrics)."""
        result, _ = self.solve(c, x0)
        _, deps = self.eigenstrain(self.embed(c))
        mu = self.view(-(result.stress * deps).sum(dim=(-2, -1)))
        return mu, result


@dataclass(frozen=True)
class WarmStart:
    """What :func:`explicit_potential` carries from step to step: the last solution and the compositions
    of the last two states it solved for, with the solution of the earlier one (``None`` until there
    is one). ``result`` is the :class:`mechanics.ElasticityResult` at ``c``."""

    result: object
    c: torch.Tensor
    previous: tuple | None = None  # (c, displacement, mean strain) of the state before ``c``


def _extrapolated_start(carry: WarmStart, c: torch.Tensor):
    """The free-particle solver's start for the state ``c``: the last solution moved along the last
    change of the solution, by θ = ⟨c − c₁, c₁ − c₀⟩ / ‖c₁ − c₀‖² per element (the new composition change
    projected on the last one; the solution is linear in ε⁰, and for Vegard ε⁰ is linear in c, so a step
    that repeats the last change is started at its exact solution). θ is kept in [0, 2]; θ = 0 (a retried
    step, or no history) is the last solution itself."""
    result = carry.result
    if carry.previous is None:
        return result
    c_prev, u_prev, e_prev = carry.previous
    axes = tuple(range(1, c.ndim))
    last = carry.c - c_prev
    norm = (last * last).sum(dim=axes)
    theta = torch.where(norm > 0, ((c - carry.c) * last).sum(dim=axes) / norm.clamp_min(1e-300),
                        torch.zeros_like(norm)).clamp(0.0, 2.0)
    u, e = result.displacement, result.mean_strain
    th_u = theta.reshape(-1, *([1] * (u.ndim - 1))).to(u.dtype)
    th_e = theta.reshape(-1, *([1] * (e.ndim - 1))).to(e.dtype)
    return dataclasses.replace(result, displacement=u + th_u * (u - u_prev),
                               mean_strain=e + th_e * (e - e_prev))


def explicit_potential(coupling: ElasticCoupling, subtract_kernel: torch.Tensor | None = None):
    """``(c, elastic) -> (μ_el, elastic)`` for the steppers: the stress-based μ_el, minus the part B(k̂)ĉ
    that the stepper already treats implicitly (``subtract_kernel``, on the grid's rfft). ``elastic`` is
    what it returned at the previous step (None at first), a :class:`WarmStart`: the free-particle
    solver starts from the last solution extrapolated along the last change (:func:`_extrapolated_start`),
    which leaves fewer conjugate-gradient iterations per step than the last solution alone."""
    d = coupling.d

    def potential(c: torch.Tensor, elastic):
        warm = isinstance(elastic, WarmStart) and elastic.result.displacement is not None
        mu, result = coupling.potential_from_stress(c, _extrapolated_start(elastic, c) if warm else None)
        if subtract_kernel is not None:
            shape = c.shape[-d:]
            mu = mu - spectral.irfft(subtract_kernel * spectral.rfft(c, d), shape)
        previous = None
        if warm:  # a retried step (the same state) keeps the history it had
            moved = bool((c.detach() != elastic.c).any())
            previous = (elastic.c, elastic.result.displacement, elastic.result.mean_strain) if moved \
                else elastic.previous
        return mu, WarmStart(result, c.detach(), previous)

    return potential


@dataclass(frozen=True)
class ParticleCoupling(ElasticCoupling):
    """A free-standing rectangular platelet: the composition grid (``inner_shape``) is embedded with
    ``padding`` void cells per side in a larger periodic elastic grid; the core's free-surface solver
    (void stiffness ratio ``void_stiffness`` outside the mask) gives the stress, warm-started from the
    previous step's solution. The composition grid itself has no-flux edges (the steppers' mirror)."""

    inner_shape: tuple[int, ...] = ()
    padding: int = 0

    @classmethod
    def square(cls, n: int, padding: int, spacing_nm: float, stiffness, misfit, shape, axes=(0, 2),
               plane="stress", tol: float = 1e-5, device=None) -> ParticleCoupling:
        from mechanics.grid import Grid

        big = n + 2 * padding
        mask = torch.zeros((big, big), dtype=torch.bool, device=device)
        mask[padding:padding + n, padding:padding + n] = True
        return cls(Grid((big, big), spacing_nm=spacing_nm), stiffness, misfit, shape, tuple(axes), plane,
                   mask, tol, (n, n), padding)

    def embed(self, c: torch.Tensor) -> torch.Tensor:
        p = self.padding
        return torch.nn.functional.pad(c, [p, p] * len(self.inner_shape))  # void holds c = 0

    def view(self, field: torch.Tensor) -> torch.Tensor:
        p = self.padding
        index = (Ellipsis, *[slice(p, p + n) for n in self.inner_shape])
        return field[index]


def law_potential(coupling: ElasticCoupling, kernel_matrix: torch.Tensor,
                  subtract_kernel: torch.Tensor | None = None):
    """``(c, elastic) -> (μ_el, elastic)`` for any diagonal eigenstrain law ε⁰_i(c) = m_i g_i(c) in a
    homogeneous periodic body: E = ½ Σ_k Σ_ij Q_ij(k̂) ε̂⁰_i* ε̂⁰_j (per volume, k = 0 excluded), so

        μ_el = δE/δc = Σ_i m_i g_i'(c) · IFFT[Σ_j Q_ij FFT(m_j g_j(c))]     (= −σ:dε⁰/dc),

    2n FFTs per evaluation (n = 2 in-plane axes, 3 in 3-D) instead of an elastic solve. Minus the part
    B(k̂)ĉ the stepper treats implicitly (``subtract_kernel``). Nothing to warm-start: ``elastic`` passes
    through unchanged."""
    d = coupling.d
    axes = coupling.eigen_axes

    def potential(c: torch.Tensor, elastic):
        shape = c.shape[-d:]
        g, dg = coupling.shape(c)
        batch = coupling.misfit.shape[:-1]
        m = coupling.misfit.to(dtype=c.dtype, device=c.device).reshape(*batch, *([1] * d), 3)
        eps_hat = [spectral.rfft(m[..., a] * g[..., a], d) for a in axes]
        mu = torch.zeros_like(c)
        for i, a in enumerate(axes):
            q_eps = sum(kernel_matrix[..., i, j] * eps_hat[j] for j in range(len(axes)))
            mu = mu + m[..., a] * dg[..., a] * spectral.irfft(q_eps, shape)
        if subtract_kernel is not None:
            mu = mu - spectral.irfft(subtract_kernel * spectral.rfft(c, d), shape)
        return mu, elastic

    return potential
