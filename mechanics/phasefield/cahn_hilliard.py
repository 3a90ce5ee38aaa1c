"""Semi-implicit spectral Cahn-Hilliard stepper, batched, with adaptive time step.

Model (per unit volume):

    F[c] = ∫ f(c) + ½ Σ_i κ_i (∂_i c)² dV + E_el[c],
    ∂c/∂t = ∇·(M ∇μ),   μ = f'(c) − ∇·(κ∇c) + μ_el.

Step (Fourier space, stabilised linearly implicit; Zhu, Chen, Shen, Tikare, Phys. Rev. E 60, 3564 (1999);
Eyre-type splitting with a constant S ≥ −min f''):

    (1 + Δt M₀ k² L(k)) (ĉ' − ĉ) = Δt N̂(c),   L(k) = S + G(k) + B(k),
    N̂ = −M k² μ̂(c)             (constant mobility, M₀ = M)
    N̂ = FFT[∇·(M(c)∇μ(c))]       (variable mobility, M₀ = max M)

with G(k) = Σ κ_i k_i² and B(k) the implicit linear elastic kernel (Khachaturyan B(k̂), zero at k = 0, GPa)
of a linear eigenstrain law on a homogeneous periodic body; any other elastic chemical potential is
explicit in μ. The k = 0 mode is untouched, so mass is conserved to round-off. No-flux boundaries use the
mirror extension (a DCT): the field is reflected to 2n per axis, stepped periodically and cropped.

Symbols → code: c ``state.c`` (*batch, *grid), M ``mobility`` ((*batch,) or scalar; volume/(energy·time)),
κ ``kappa`` (*batch, d) or scalar (energy/length), f ``free_energy`` (energy/volume), B ``linear_kernel``
(*batch, *rfft_shape of the stepped grid), Δt ``state.dt`` (*batch,), the grid ``grid``
(:class:`mechanics.Grid`, 1-D to 3-D). Units: the model has none of its own, so its fields carry no
unit suffix; they are those of the inputs, with lengths in the unit of ``grid.spacing_nm`` (the
project's internal system nm, aJ, GPa, s, e.g. PFHub benchmark 4; or the dimensionless units of PFHub
benchmark 1, whose unit cell edge is then read as ``spacing_nm = 1``). Time (``dt_max``, ``dt_min``,
``state.time``) is in the model's time unit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from mechanics.errors import InputError
from mechanics.grid import Grid
from mechanics.phasefield import spectral

if TYPE_CHECKING:
    from mechanics.elasticity import ElasticityResult
    from mechanics.phasefield.reaction import ReactionAux


@dataclass(frozen=True)
class CahnHilliardAux:
    """What the Cahn-Hilliard stepper carries from one step to the next.

    Fields:
      elastic: the last value the explicit potential returned for itself (for the project's elastic
        potentials the :class:`mechanics.ElasticityResult` that warm-starts the next free-particle
        solve); None before the first step or without an explicit potential.
    """

    elastic: ElasticityResult | None = None


@dataclass(frozen=True)
class PhaseFieldState:
    """State of a batch of phase-field runs.

    Fields:
      c: (*batch, *grid) field (composition or order parameter).
      time, dt: (*batch,) elapsed time and the next proposed step, in the model's time unit (s for
        :class:`mechanics.phasefield.reaction.AllenCahnReaction`).
      steps, rejected: (*batch,) accepted steps and rejected tries (int64).
      aux: the stepper's carried state: :class:`CahnHilliardAux` for Cahn-Hilliard,
        :class:`mechanics.phasefield.reaction.ReactionAux` for Allen-Cahn-reaction.
    """

    c: torch.Tensor
    time: torch.Tensor
    dt: torch.Tensor
    steps: torch.Tensor
    rejected: torch.Tensor
    aux: CahnHilliardAux | ReactionAux = CahnHilliardAux()


def stepped_grid(grid: Grid, boundary: str) -> Grid:
    """The grid the FFTs run on: ``grid`` itself, or twice it per axis for no-flux (the mirror)."""
    if boundary == "noflux":
        return Grid(tuple(2 * n for n in grid.shape), grid.spacing_nm)
    return grid


@dataclass(frozen=True)
class CahnHilliard:
    """A Cahn-Hilliard model on a regular grid (see the module docstring for the equations and units).

    Fields:
      grid: :class:`mechanics.Grid` of the field (1-D to 3-D, at least 2 cells per axis).
      free_energy: bulk f(c) (``density``, ``derivative``, ``stabilization``), energy/volume.
      mobility: M, (*batch,) or scalar; with ``variable_mobility`` the bound M₀ ≥ max M.
      kappa: κ, (*batch, d) or scalar, energy/length.
      boundary: ``"periodic"`` or ``"noflux"``.
      linear_kernel: optional implicit B(k) on the rfft grid of :attr:`stepped_grid` (energy/volume).
      explicit_potential: optional ``(c, elastic) -> (μ_ex, elastic)`` added to μ (e.g. −σ:dε⁰/dc of a
        nonlinear law or a heterogeneous body); it sees the unextended field, and ``elastic`` is what it
        returned at the previous step (:attr:`CahnHilliardAux.elastic`, None at first).
      variable_mobility: optional ``c -> M(c)``.
      stabilization: S of the splitting (default: the free energy's).
      dc_tol: target max |Δc| per step of the adaptive step (dimensionless).
      dt_max, dt_min: bounds of the adaptive step, in the model's time unit.
      growth_limit: largest factor by which the step grows after an accepted step.
    """

    grid: Grid
    free_energy: object
    mobility: torch.Tensor | float
    kappa: torch.Tensor | float
    boundary: str = "periodic"
    linear_kernel: torch.Tensor | None = None
    explicit_potential: Callable | None = None
    variable_mobility: Callable | None = None
    stabilization: torch.Tensor | float | None = None
    dc_tol: float = 0.01
    dt_max: float = float("inf")
    dt_min: float = 0.0
    growth_limit: float = 1.5

    def __post_init__(self) -> None:
        if not isinstance(self.grid, Grid):
            raise InputError("grid", "a mechanics.Grid", type(self.grid).__name__)
        if self.boundary not in ("periodic", "noflux"):
            raise InputError("boundary", "'periodic' or 'noflux'", self.boundary)
        if min(self.grid.shape) < 2:
            raise InputError("grid", "at least 2 cells along every axis", self.grid.shape)

    @property
    def d(self) -> int:
        return self.grid.ndim

    @property
    def stepped_grid(self) -> Grid:
        """The grid the FFTs run on: the grid itself, or twice it per axis for no-flux."""
        return stepped_grid(self.grid, self.boundary)

    @property
    def cell_volume(self) -> float:
        """h^d as the product h·h·… (the energies have always been summed with it; ``h**d`` differs from
        it at round-off)."""
        out = 1.0
        for _ in range(self.d):
            out *= self.grid.spacing_nm
        return out


def _symbols(model: CahnHilliard, like: torch.Tensor) -> dict:
    ks = model.stepped_grid.axis_wavevectors(dtype=like.dtype, device=like.device)
    k2 = spectral.k_squared(ks)
    gradient = spectral.gradient_symbol(ks, model.kappa)
    s = model.stabilization
    if s is None:
        s = model.free_energy.stabilization()
    s = torch.as_tensor(s, dtype=like.dtype, device=like.device)  # broadcasts on c like f's parameters
    linear = s + gradient
    if model.linear_kernel is not None:
        linear = linear + model.linear_kernel.to(like.dtype)
    return {"ks": ks, "k2": k2, "gradient": gradient, "linear": linear, "S": s}


def _extend(model: CahnHilliard, c: torch.Tensor) -> torch.Tensor:
    return spectral.mirror(c, model.d) if model.boundary == "noflux" else c


def _restrict(model: CahnHilliard, c: torch.Tensor) -> torch.Tensor:
    return spectral.crop(c, model.grid.shape) if model.boundary == "noflux" else c


def _per_element(x: torch.Tensor | float, d: int, like: torch.Tensor) -> torch.Tensor:
    return spectral.per_element(x, d, like=like)


def ch_increment(model: CahnHilliard, c: torch.Tensor, dt: torch.Tensor, aux: CahnHilliardAux, sym: dict):
    """One semi-implicit step of size dt ((*batch,)) from c; returns (c', aux'). Pure function."""
    d = model.d
    mu_ex = None
    if model.explicit_potential is not None:
        mu_ex, elastic = model.explicit_potential(c, aux.elastic)
        aux = CahnHilliardAux(elastic=elastic)
    ce = _extend(model, c)
    c_hat = spectral.rfft(ce, d)
    mu_local = model.free_energy.derivative(ce)
    if mu_ex is not None:
        mu_local = mu_local + _extend(model, mu_ex)
    dt_b = _per_element(dt, d, c_hat.real)
    m0 = _per_element(model.mobility, d, c_hat.real)
    k2 = sym["k2"]
    if model.variable_mobility is None:
        # on the real views of the spectra: inductor generates no code for complex arithmetic
        a = dt_b * m0 * k2
        c_re = torch.view_as_real(c_hat)
        mu_re = torch.view_as_real(spectral.rfft(mu_local, d))
        rhs = c_re - a.unsqueeze(-1) * (mu_re - torch.as_tensor(sym["S"]).unsqueeze(-1) * c_re)
        new_hat = torch.view_as_complex(rhs / (1 + a * sym["linear"]).unsqueeze(-1))
    else:
        mu_hat = spectral.rfft(mu_local, d) + (sym["linear"] - sym["S"]) * c_hat
        grads = spectral.spectral_gradient(mu_hat, sym["ks"], model.stepped_grid.shape)
        m = model.variable_mobility(ce)
        div_hat = 0
        for k, g in zip(sym["ks"], grads):
            div_hat = div_hat + 1j * k * spectral.rfft(m * g, d)
        new_hat = c_hat + dt_b * div_hat / (1 + dt_b * m0 * k2 * sym["linear"])
    new = spectral.irfft(new_hat, model.stepped_grid.shape)
    return _restrict(model, new), aux


def cahn_hilliard(model: CahnHilliard, compile: bool | str = "auto"):
    """Factory: returns ``init_fn(c0, dt0) -> state`` and ``step_fn(state, dt_cap=None) -> state``.

    ``step_fn`` takes one adaptive step for every batch element: it tries dt_i (capped by ``dt_cap``),
    accepts where max|Δc| ≤ 2·dc_tol and the result is finite, and proposes the next dt from
    dt·min(growth_limit, 0.9·dc_tol/max|Δc|) (halving it for rejected elements, which keep their state).
    Elements with ``dt_cap == 0`` do not move. Accept/reject and the next dt are decided on the device:
    the step never synchronises with the host.

    Args:
      model: the :class:`CahnHilliard` model.
      compile: ``True`` fuses each step with ``torch.compile`` (inductor fuses the pointwise work between
        the FFTs), ``False`` runs it eagerly, ``"auto"`` compiles on CUDA tensors only. Both compute the
        same map (tested to float tolerance on CPU).
    """
    if compile not in (True, False, "auto"):
        raise InputError("compile", "True, False or 'auto'", compile)
    steppers: dict = {}

    sym_cache: dict = {}

    def symbols(like: torch.Tensor) -> dict:
        key = (like.dtype, like.device)
        if key not in sym_cache:
            sym_cache[key] = _symbols(model, like)
        return sym_cache[key]

    def init_fn(c0: torch.Tensor, dt0: float | torch.Tensor) -> PhaseFieldState:
        batch = c0.shape[: c0.ndim - model.d]
        z = torch.zeros(batch, dtype=c0.dtype, device=c0.device)
        dt = torch.as_tensor(dt0, dtype=c0.dtype, device=c0.device).expand(batch).clone()
        zi = torch.zeros(batch, dtype=torch.long, device=c0.device)
        return PhaseFieldState(c=c0, time=z, dt=dt, steps=zi, rejected=zi.clone(), aux=CahnHilliardAux())

    def stepper(c: torch.Tensor):
        key = (c.dtype, c.device)
        if key not in steppers:
            sym = symbols(c)

            def one(state: PhaseFieldState, dt_cap: torch.Tensor | None) -> PhaseFieldState:
                dt = state.dt if dt_cap is None else torch.minimum(state.dt, dt_cap)
                new, aux = ch_increment(model, state.c, dt, state.aux, sym)
                return adapt(state, new, dt, aux, d=model.d, dc_tol=model.dc_tol, dt_min=model.dt_min,
                             dt_max=model.dt_max, growth_limit=model.growth_limit)

            fuse = compile is True or (compile == "auto" and c.device.type == "cuda")
            steppers[key] = torch.compile(one, dynamic=False) if fuse else one
        return steppers[key]

    def step_fn(state: PhaseFieldState, dt_cap: torch.Tensor | None = None) -> PhaseFieldState:
        return stepper(state.c)(state, dt_cap)

    return init_fn, step_fn


def adapt(state: PhaseFieldState, new: torch.Tensor, dt: torch.Tensor, aux, *, d: int, dc_tol: float,
          dt_min: float, dt_max, growth_limit: float,
          extra_error: torch.Tensor | None = None) -> PhaseFieldState:
    """Accept/reject per element and propose the next dt (shared by the CH and ACR steppers).

    Args:
      state: the state the step started from; new: the tried field; dt: the tried step (*batch,);
      aux: the stepper's carried state after the try (stored as is).
      d: spatial dimensions; dc_tol, dt_min, dt_max, growth_limit: the model's step control (dt in the
        model's time unit; dt_max a scalar or (*batch,)).
      extra_error: optional (*batch,) further error measures of the try, scaled so 1 is on target (e.g.
        the ACR relaxation-time control): the step is controlled by the largest of max|Δc|/dc_tol and it.

    Returns:
      The next state: accepted elements move to ``new``, rejected ones keep their field and get a
      smaller step.
    """
    axes = spectral.spatial_axes(d)
    error = (new - state.c).abs().amax(dim=axes) / dc_tol
    if extra_error is not None:
        error = torch.maximum(error, extra_error)
    finite = torch.isfinite(new).all(dim=tuple(range(-d, 0)))
    moving = dt > 0
    accept = finite & (error <= 2) & moving
    accept = accept | (finite & moving & (dt <= dt_min))
    mask = _per_element(accept, d, new).bool()
    c = torch.where(mask, torch.nan_to_num(new), state.c)
    ratio = 0.9 / error.clamp_min(1e-30)
    grown = dt * torch.clamp(ratio, max=growth_limit)
    grown = torch.where(dt < state.dt, torch.maximum(grown, state.dt), grown)  # a cap keeps the proposal
    shrunk = torch.where(finite, dt * torch.clamp(ratio, max=0.5), dt * 0.25)
    dt_max = torch.as_tensor(dt_max, dtype=dt.dtype, device=dt.device)
    next_dt = torch.minimum(torch.clamp(torch.where(accept, grown, shrunk), min=dt_min), dt_max)
    next_dt = torch.where(moving, next_dt, state.dt)
    return replace(
        state,
        c=c,
        time=state.time + torch.where(accept, dt, torch.zeros_like(dt)),
        dt=next_dt,
        steps=state.steps + accept.long(),
        rejected=state.rejected + (moving & ~accept).long(),
        aux=aux,
    )


def spectral_quadratic(c: torch.Tensor, symbol: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Σ_x c·(L c) over the grid for a real symbol L(k) on the rfft grid, by Parseval: (1/N) Σ_k L |ĉ|².

    Returns (*batch,). ``c`` must already be on the grid of ``symbol`` (extended for no-flux).
    """
    d = len(shape)
    c_hat = spectral.rfft(c, d)
    n_last = shape[-1]
    weight = torch.full((c_hat.shape[-1],), 2.0, dtype=c.dtype, device=c.device)
    weight[0] = 1.0
    if n_last % 2 == 0:
        weight[-1] = 1.0
    n = 1
    for s in shape:
        n *= s
    return (symbol * c_hat.abs() ** 2 * weight).sum(dim=spectral.spatial_axes(d)) / n


def total_free_energy(model: CahnHilliard, c: torch.Tensor, elastic_energy: torch.Tensor | None = None):
    """F = Σ_x [f(c) + ½ Σ κ_i (∂_i c)²] ΔV (+ ½ Σ B|ĉ|² ΔV/N for the linear kernel, + elastic_energy).

    Gradients are spectral (the periodic seam of a non-periodic field counts, as in any spectral code).
    Returns (*batch,) in energy units (length^d · energy/volume).
    """
    d = model.d
    ce = _extend(model, c)
    sym = _symbols(model, ce)
    shape = model.stepped_grid.shape
    fraction = 1.0 / (2**d) if model.boundary == "noflux" else 1.0
    dv = model.cell_volume
    bulk = model.free_energy.density(ce).sum(dim=spectral.spatial_axes(d))
    quad = sym["gradient"]
    if model.linear_kernel is not None:
        quad = quad + model.linear_kernel.to(c.dtype)
    interface = 0.5 * spectral_quadratic(ce, quad, shape)
    total = (bulk + interface) * dv * fraction
    if elastic_energy is not None:
        total = total + elastic_energy
    return total
