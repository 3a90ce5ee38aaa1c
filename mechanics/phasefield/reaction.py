"""Depth-averaged Allen-Cahn-reaction (ACR) dynamics of a thin platelet, with Butler-Volmer and coupled
ion-electron transfer (CIET) rate laws, driven galvanostatically or potentiostatically.

Model (Bai, Cogswell, Bazant, Nano Lett. 11, 4890 (2011); Cogswell & Bazant, ACS Nano 6, 2215 (2012)):
a platelet thin along b exchanges Li with the electrolyte through its large faces, fast enough across
its thickness that c(x) is depth-averaged, so each column reacts with the local diffusional chemical
potential

    ∂c/∂t = R(c, η),   η = (μ − μ_res)/k_BT,
    μ = [f'(c) − ∇·(κ∇c) + μ_el] / ρ_s     (aJ per site),

μ_res the reservoir (electrolyte + electrode) potential, V = V₀ − μ_res/e the cell voltage (V₀ the plateau
at c = ½ where the regular-solution μ vanishes).  Galvanostatic: μ_res(t) is chosen so the mean
reaction rate equals the current, ⟨R⟩ = I (a C-rate of n is I = n/3600 s⁻¹); potentiostatic: μ_res fixed.

Rate laws (rates per site, s⁻¹; η < 0 lithiates):
- Butler-Volmer with the ideal-solution exchange rate i₀ = k c^α (1 − c)^{1−α}:
  R = i₀ [exp(−αη) − exp((1 − α)η)].
- CIET (Fraggedakis et al., Electrochim. Acta 367, 137432 (2021); Zhao et al., Nature 621, 289 (2023)),
  electron transfer by the Marcus-Hush-Chidsey rate in Zeng's closed form (Zeng, Smith, Bai, Bazant,
  J. Electroanal. Chem. 735, 77 (2014)):
  R = k (1 − c) [k_red(η) − k_ox(η)] / k_red(0),
  k_red/ox(η) = √(πλ)/(1 + e^{±η}) · erfc[(λ − √(1 + √λ + η²)) / (2√λ)],  λ in k_BT.

Time step: the explicit rate with a linear stabiliser that is implicit in Fourier space for k ≠ 0,

    (1 + Δt K (S + G(k) + B(k)) / (ρ_s k_BT)) (ĉ' − ĉ) = Δt R̂,   K = max_x |∂R/∂η|,
    S = S₀ ≥ −min f'' (the concavity bound) for k ≠ 0,

and at k = 0: nothing when galvanostatic, so the mean moves by exactly Δt⟨R⟩ = Δt I (exact charge
counting); S = ⟨f''(c)⟩ when potentiostatic (the mean mode's own stiffness).
Symbols → code: ρ_s ``site_density_per_nm3``, k_BT ``kT_aJ``, κ ``kappa_aJ_per_nm`` (*batch, d),
B ``linear_kernel_GPa`` (on the rfft grid), S the bulk free energy's stabilisation constant (GPa),
I ``current_per_s`` (*batch,), k ``rate_per_s`` (*batch,), the in-plane grid ``grid`` (1-D or 2-D
:class:`mechanics.Grid`, spacing in nm). The units are the project's internal system (nm, aJ, GPa, s)
and are written into the field names.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from mechanics.errors import InputError
from mechanics.grid import Grid
from mechanics.phasefield import spectral
from mechanics.phasefield.cahn_hilliard import PhaseFieldState, adapt, stepped_grid

if TYPE_CHECKING:
    from mechanics.elasticity import ElasticityResult

_ETA_CLIP = 60.0  # exp(60) ~ 1e26 stays finite in float32; larger |η| is a blow-up anyway


def _pe(x, d, like):
    return spectral.per_element(x, d, like=like)


@dataclass(frozen=True)
class ButlerVolmer:
    """R = k c^α (1−c)^{1−α} [exp(−αη) − exp((1−α)η)]; ``rate_per_s`` and ``alpha`` broadcast on c."""

    rate_per_s: torch.Tensor | float
    alpha: torch.Tensor | float = 0.5

    def exchange(self, c: torch.Tensor) -> torch.Tensor:
        x = c.clamp(1e-7, 1 - 1e-7)
        return self.rate_per_s * torch.exp(self.alpha * torch.log(x) + (1 - self.alpha) * torch.log1p(-x))

    def rate(self, c: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        eta = eta.clamp(-_ETA_CLIP, _ETA_CLIP)
        return self.exchange(c) * (torch.exp(-self.alpha * eta) - torch.exp((1 - self.alpha) * eta))

    def rate_and_slope(self, c: torch.Tensor, eta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, |∂R/∂η|) sharing the exponentials (the step needs both)."""
        eta = eta.clamp(-_ETA_CLIP, _ETA_CLIP)
        i0 = self.exchange(c)
        forward = torch.exp(-self.alpha * eta)
        backward = torch.exp((1 - self.alpha) * eta)
        return i0 * (forward - backward), i0 * (self.alpha * forward + (1 - self.alpha) * backward)

    def slope(self, c: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        """|∂R/∂η| = i₀ [α exp(−αη) + (1−α) exp((1−α)η)]."""
        eta = eta.clamp(-_ETA_CLIP, _ETA_CLIP)
        return self.exchange(c) * (
            self.alpha * torch.exp(-self.alpha * eta) + (1 - self.alpha) * torch.exp((1 - self.alpha) * eta)
        )


def mhc_rate(eta: torch.Tensor, lam: torch.Tensor | float, reduction: bool) -> torch.Tensor:
    """Zeng's closed form of the Marcus-Hush-Chidsey rate (dimensionless; η and λ in k_BT)."""
    lam = torch.as_tensor(lam, dtype=eta.dtype, device=eta.device)
    sign = 1.0 if reduction else -1.0
    arg = (lam - torch.sqrt(1 + torch.sqrt(lam) + eta**2)) / (2 * torch.sqrt(lam))
    return torch.sqrt(math.pi * lam) / (1 + torch.exp(sign * eta)) * torch.erfc(arg)


@dataclass(frozen=True)
class CoupledIonElectron:
    """R = k (1−c) [k_red(η) − k_ox(η)] / k_red(0) with MHC rates of reorganisation energy λ (k_BT)."""

    rate_per_s: torch.Tensor | float
    reorganization_kT: torch.Tensor | float = 8.3

    def rate(self, c: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        eta = eta.clamp(-_ETA_CLIP, _ETA_CLIP)
        lam = torch.as_tensor(self.reorganization_kT, dtype=c.dtype, device=c.device)
        norm = mhc_rate(torch.zeros_like(lam), lam, True)
        net = mhc_rate(eta, lam, True) - mhc_rate(eta, lam, False)
        return self.rate_per_s * (1 - c).clamp(0, 1) * net / norm

    def slope(self, c: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        h = 1e-3
        return (self.rate(c, eta - h) - self.rate(c, eta + h)).abs() / (2 * h)

    def rate_and_slope(self, c: torch.Tensor, eta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rate(c, eta), self.slope(c, eta)


def solve_reservoir(
    rate_law, c: torch.Tensor, m: torch.Tensor, current: torch.Tensor, d: int, nu0: torch.Tensor,
    weight: torch.Tensor | None = None, iterations: int = 30,
) -> torch.Tensor:
    """ν = μ_res/k_BT (*batch,) such that the (weighted) spatial mean of R(c, m − ν) equals ``current``.

    ⟨R⟩ increases monotonically with ν. Butler-Volmer separates, ⟨R⟩ = A e^{αν} − B e^{−(1−α)ν}, so
    the solve is a scalar Newton iteration per element started from the α = ½ closed form
    e^{ν/2} = (I + √(I² + 4AB)) / (2A); other laws use a safeguarded Newton iteration on the field.
    A current the law cannot carry in floating point gives a non-finite ν (the caller marks FAILED).
    """
    axes = spectral.spatial_axes(d)

    def mean(x):
        if weight is None:
            return x.mean(dim=axes)
        return (x * weight).sum(dim=axes) / weight.sum(dim=axes)

    if isinstance(rate_law, ButlerVolmer):
        # α broadcasts on c (a scalar or per element); the scalar Newton needs it per element
        a_pe = torch.as_tensor(rate_law.alpha, dtype=c.dtype, device=c.device).expand_as(c)
        alpha = a_pe.flatten(start_dim=c.ndim - d)[..., 0]
        i0 = rate_law.exchange(c)
        m_c = m.clamp(-_ETA_CLIP, _ETA_CLIP)
        log_a = torch.log(mean(i0 * torch.exp(-a_pe * m_c)))
        log_b = torch.log(mean(i0 * torch.exp((1 - a_pe) * m_c)))
        alpha_b = alpha
        a, b = torch.exp(log_a), torch.exp(log_b)
        nu = 2 * torch.log((current + torch.sqrt(current**2 + 4 * a * b)) / (2 * a))
        for _ in range(iterations if bool((alpha != 0.5).any()) else 0):
            up = torch.exp(log_a + alpha_b * nu)
            down = torch.exp(log_b - (1 - alpha_b) * nu)
            step = (up - down - current) / (alpha_b * up + (1 - alpha_b) * down)
            nu = nu - step.clamp(-5.0, 5.0)
        return nu
    nu = nu0.clone()
    for _ in range(iterations):
        nu_b = _pe(nu, d, c)
        r = mean(rate_law.rate(c, m - nu_b)) - current
        slope = mean(rate_law.slope(c, m - nu_b)).clamp_min(1e-30)
        nu = nu - (r / slope).clamp(-2.0, 2.0)
    return nu


@dataclass(frozen=True)
class ReactionAux:
    """What the Allen-Cahn-reaction stepper carries from one step to the next (all (*batch,)).

    Fields:
      nu: μ_res/k_BT, the reservoir potential of the last accepted step (a rejected element keeps its
        previous value); 0 before the first step.
      current_per_s: the mean reaction rate ⟨R⟩ that step produced (s⁻¹ per site).
      saturated: bool, |η| reached the clip in the last try (the law cannot carry the current in
        floating point).
      nonfinite: bool, the last try produced NaN/inf (field or potential).
      elastic: what the explicit potential returned for itself at the last try (the elastic solution
        that warm-starts the next free-particle solve), or None.
    """

    nu: torch.Tensor
    current_per_s: torch.Tensor
    saturated: torch.Tensor
    nonfinite: torch.Tensor
    elastic: ElasticityResult | None = None


@dataclass(frozen=True)
class AllenCahnReaction:
    """A depth-averaged ACR platelet model (equations in the module docstring).

    Fields:
      grid: the in-plane :class:`mechanics.Grid` (spacing in nm; 1-D or 2-D).
      free_energy: bulk f(c) per volume (GPa), parameters broadcast on c.
      kappa_aJ_per_nm: κ, (*batch, d) or scalar.
      site_density_per_nm3, kT_aJ: ρ_s and k_BT, (*batch,) or scalars.
      rate_law: :class:`ButlerVolmer` or :class:`CoupledIonElectron` (rates broadcast on c).
      current_per_s: (*batch,) galvanostatic ⟨∂c/∂t⟩; ``None`` → potentiostatic at
        ``reservoir_potential_kT`` (*batch,).
      boundary: ``"periodic"`` or ``"noflux"``.
      linear_kernel_GPa: optional implicit B(k) on the rfft grid of :attr:`stepped_grid`.
      explicit_potential: optional ``(c, elastic) -> (μ_el per volume in GPa, elastic)``; ``elastic`` is
        what it returned at the previous step (:attr:`ReactionAux.elastic`, None at first).
      noise: optional ``(state, dt) -> ξ`` zero-mean fluctuation added to c each step (seeded by the
        caller).
      dc_tol: target max |Δc| per step (dimensionless).
      dt_max_s, dt_min_s: bounds of the adaptive step in s (``dt_max_s`` a scalar or (*batch,)).
      growth_limit: largest factor by which the step grows after an accepted step.
    """

    grid: Grid
    free_energy: object
    kappa_aJ_per_nm: torch.Tensor | float
    site_density_per_nm3: torch.Tensor | float
    kT_aJ: torch.Tensor | float
    rate_law: object
    current_per_s: torch.Tensor | None = None
    reservoir_potential_kT: torch.Tensor | None = None
    boundary: str = "periodic"
    linear_kernel_GPa: torch.Tensor | None = None
    explicit_potential: Callable | None = None
    noise: Callable | None = None
    dc_tol: float = 0.02
    dt_max_s: torch.Tensor | float = float("inf")
    dt_min_s: float = 0.0
    growth_limit: float = 1.5

    def __post_init__(self) -> None:
        if not isinstance(self.grid, Grid):
            raise InputError("grid", "a mechanics.Grid", type(self.grid).__name__)
        if self.boundary not in ("periodic", "noflux"):
            raise InputError("boundary", "'periodic' or 'noflux'", self.boundary)
        if (self.current_per_s is None) == (self.reservoir_potential_kT is None):
            raise InputError("current_per_s", "exactly one of current_per_s (galvanostatic) and "
                             "reservoir_potential_kT (potentiostatic)", None)

    @property
    def d(self) -> int:
        return self.grid.ndim

    @property
    def stepped_grid(self) -> Grid:
        """The grid the FFTs run on: the grid itself, or twice it per axis for no-flux."""
        return stepped_grid(self.grid, self.boundary)


def chemical_potential(model: AllenCahnReaction, c: torch.Tensor, elastic, sym: dict):
    """μ per site in units of k_BT, (*batch, *grid); also returns the explicit potential's carry
    (``elastic``, see :class:`ReactionAux`)."""
    d = model.d
    ce = spectral.mirror(c, d) if model.boundary == "noflux" else c
    c_hat = spectral.rfft(ce, d)
    mu = model.free_energy.derivative(ce) + spectral.irfft(sym["quadratic"] * c_hat,
                                                           model.stepped_grid.shape)
    if model.boundary == "noflux":
        mu = spectral.crop(mu, model.grid.shape)
    if model.explicit_potential is not None:
        mu_el, elastic = model.explicit_potential(c, elastic)
        mu = mu + mu_el
    scale = _pe(model.site_density_per_nm3, d, c) * _pe(model.kT_aJ, d, c)
    return mu / scale, elastic


def _symbols(model: AllenCahnReaction, like: torch.Tensor) -> dict:
    ks = model.stepped_grid.axis_wavevectors(dtype=like.dtype, device=like.device)
    quadratic = spectral.gradient_symbol(ks, model.kappa_aJ_per_nm)
    if model.linear_kernel_GPa is not None:
        quadratic = quadratic + model.linear_kernel_GPa.to(like.dtype)
    # the free energy's parameters broadcast on c, and so does its stabilisation constant
    s = torch.as_tensor(model.free_energy.stabilization(), dtype=like.dtype, device=like.device)
    k2 = spectral.k_squared(ks)
    mean_mode = (k2 == 0).to(like.dtype)
    return {"quadratic": quadratic, "S": s, "mean_mode": mean_mode}


def acr_increment(model: AllenCahnReaction, c: torch.Tensor, dt: torch.Tensor, aux: ReactionAux, sym: dict):
    """One stabilised step of size dt ((*batch,), s) from c; returns (c', aux'). Pure function; the
    stabiliser is part of the discrete map and is differentiated with it. ``aux'`` holds this try's
    potential, current, carry and ``saturated`` flag; ``nonfinite`` is the stepper's to set."""
    d = model.d
    m, elastic = chemical_potential(model, c, aux.elastic, sym)
    if model.current_per_s is not None:
        current = torch.as_tensor(model.current_per_s, dtype=c.dtype, device=c.device)
        current = current.expand(dt.shape)
        nu = solve_reservoir(model.rate_law, c, m, current, d, aux.nu)
    else:
        nu = torch.as_tensor(model.reservoir_potential_kT, dtype=c.dtype, device=c.device)
        nu = nu.expand(dt.shape)
    eta = m - _pe(nu, d, c)
    r, slope = model.rate_law.rate_and_slope(c, eta)
    axes = spectral.spatial_axes(d)
    k_stab = slope.amax(dim=axes)
    s = sym["S"] + sym["quadratic"]
    if model.current_per_s is None:
        # potentiostatic: the mean mode relaxes with the mean curvature ⟨f''⟩ (galvanostatic: it is
        # fixed by the current, so k = 0 is left alone and the charge count is exact)
        mean_curv = model.free_energy.curvature(c).mean(dim=axes, keepdim=True)
        s = s + sym["mean_mode"] * (torch.nan_to_num(mean_curv).clamp_min(0) - sym["S"])
    else:
        s = s * (1 - sym["mean_mode"])
    scale = _pe(model.site_density_per_nm3, d, c) * _pe(model.kT_aJ, d, c)
    re = spectral.mirror(r, d) if model.boundary == "noflux" else r
    dt_b, k_b = _pe(dt, d, c), _pe(k_stab, d, c)
    denom = 1 + dt_b * k_b * s / scale
    delta = spectral.irfft(spectral.rfft(re, d) * dt_b / denom, model.stepped_grid.shape)
    if model.boundary == "noflux":
        delta = spectral.crop(delta, model.grid.shape)
    saturated = (eta.abs() >= _ETA_CLIP).flatten(start_dim=eta.ndim - d).any(dim=-1)
    new_aux = ReactionAux(nu=nu, current_per_s=r.mean(dim=spectral.spatial_axes(d)), saturated=saturated,
                          nonfinite=aux.nonfinite, elastic=elastic)
    return c + delta, new_aux


def allen_cahn_reaction(model: AllenCahnReaction):
    """Factory: ``init_fn(c0, dt0) -> state`` and ``step_fn(state, dt_cap=None) -> state``.

    ``state.aux`` is a :class:`ReactionAux`: the reservoir potential and mean rate of the last accepted
    step, the explicit potential's warm start, and the per-element flags ``saturated`` and ``nonfinite``
    of the last try (both False for elements that did not move).
    """
    d = model.d
    cache: dict = {}

    def symbols(like):
        key = (like.dtype, like.device)
        if key not in cache:
            cache[key] = _symbols(model, like)
        return cache[key]

    def init_fn(c0: torch.Tensor, dt0: float | torch.Tensor) -> PhaseFieldState:
        batch = c0.shape[: c0.ndim - d]
        z = torch.zeros(batch, dtype=c0.dtype, device=c0.device)
        dt = torch.as_tensor(dt0, dtype=c0.dtype, device=c0.device).expand(batch).clone()
        zi = torch.zeros(batch, dtype=torch.long, device=c0.device)
        no = torch.zeros(batch, dtype=torch.bool, device=c0.device)
        aux = ReactionAux(nu=z.clone(), current_per_s=z.clone(), saturated=no, nonfinite=no)
        return PhaseFieldState(c=c0, time=z, dt=dt, steps=zi, rejected=zi.clone(), aux=aux)

    def step_fn(state: PhaseFieldState, dt_cap: torch.Tensor | None = None) -> PhaseFieldState:
        dt = state.dt if dt_cap is None else torch.minimum(state.dt, dt_cap)
        new, aux = acr_increment(model, state.c, dt, state.aux, symbols(state.c))
        if model.noise is not None:
            new = new + model.noise(state, dt)
        nonfinite = ~torch.isfinite(new).all(dim=spectral.spatial_axes(d)) | ~torch.isfinite(aux.nu)
        out = adapt(state, new, dt, aux, d=d, dc_tol=model.dc_tol, dt_min=model.dt_min_s,
                    dt_max=model.dt_max_s, growth_limit=model.growth_limit)
        # a rejected element keeps the reservoir potential it had, so observers see a consistent state
        moved = out.steps > state.steps
        aux = replace(
            out.aux,
            nu=torch.where(moved, out.aux.nu, state.aux.nu),
            current_per_s=torch.where(moved, out.aux.current_per_s, state.aux.current_per_s),
            nonfinite=nonfinite & (dt > 0),
            saturated=out.aux.saturated & (dt > 0),
        )
        return replace(out, aux=aux)

    return init_fn, step_fn


def acr_fixed_step(model: AllenCahnReaction, dt: float | torch.Tensor):
    """The ACR step of fixed size dt as a function c → c' (no noise, no adaptivity; for rollouts that
    are differentiated). The reservoir potential is re-solved every step (closed form for BV)."""
    cache: dict = {}

    def step(c: torch.Tensor) -> torch.Tensor:
        key = (c.dtype, c.device)
        if key not in cache:
            cache[key] = _symbols(model, c)
        batch = c.shape[: c.ndim - model.d]
        dt_b = torch.as_tensor(dt, dtype=c.dtype, device=c.device).expand(batch)
        zero = torch.zeros(batch, dtype=c.dtype, device=c.device)
        no = torch.zeros(batch, dtype=torch.bool, device=c.device)
        aux = ReactionAux(nu=zero, current_per_s=zero, saturated=no, nonfinite=no)
        return acr_increment(model, c, dt_b, aux, cache[key])[0]

    return step
