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
- Butler-Volmer, R = i₀ [exp(−αη) − exp((1 − α)η)], with the ideal-solution exchange rate
  i₀ = k c^α (1 − c)^{1−α} (``exchange_form="ideal"``) or Bazant's thermodynamically consistent
  i₀ = k (1 − c) a^α, a = exp(μ/k_BT) the Li activity with the regular-solution, gradient and coherency
  terms (``"activity"``; Bazant, Acc. Chem. Res. 46, 1144 (2013)).
- CIET (Fraggedakis et al., Electrochim. Acta 367, 137432 (2021); Zhao et al., Nature 621, 289 (2023)),
  electron transfer by the Marcus-Hush-Chidsey rate in Zeng's closed form (Zeng, Smith, Bai, Bazant,
  J. Electroanal. Chem. 735, 77 (2014)):
  R = k (1 − c) [k_red(η) − k_ox(η)] / k_red(0),
  k_red/ox(η) = √(πλ)/(1 + e^{±η}) · erfc[(λ − √(1 + √λ + η²)) / (2√λ)],  λ in k_BT.

Time step: the explicit rate with a linear stabiliser that is implicit in Fourier space for k ≠ 0,

    (1 + Δt K (S + G(k) + B(k)) / (ρ_s k_BT)) (ĉ' − ĉ) = Δt R̂,   K = max_x |∂R/∂η|,
    S = S₀ ≥ −min f'' (the concavity bound) for k ≠ 0,

and at k = 0: nothing when galvanostatic, so the mean moves by exactly Δt⟨R⟩ = Δt I (exact charge
counting); S = ⟨f''(c)⟩ when potentiostatic (the mean mode's own stiffness). Writing P for the
stabiliser and c' = c + Δc, ``corrections`` fixed-point iterations Δc ← Δc + P⁻¹[Δt R(c + Δc) − Δc]
(ν re-solved for each iterate, the explicit potential kept at its value at c) then move the step towards
backward Euler, Δc = Δt R(c + Δc): its quasi-static interface moves at the model's own speed, where the
stabilised step alone slows it by the factor P of the interface's modes.
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


EXCHANGE_FORMS = ("ideal", "activity")


@dataclass(frozen=True)
class ButlerVolmer:
    """R = i₀ [exp(−αη) − exp((1−α)η)] with one of two exchange rates i₀ (``exchange_form``):

    - ``"ideal"``: i₀ = k c^α (1−c)^{1−α}, the ideal-solution form (an ideal lattice gas of Li and
      vacancies);
    - ``"activity"``: i₀ = k (1−c) a^α with the Li activity a = exp(μ/k_BT), μ the full diffusional
      chemical potential per site (regular solution, gradient and coherency terms), the transition state
      excluding one site (activity coefficient 1/(1−c)): the thermodynamically consistent form of
      Bazant, Acc. Chem. Res. 46, 1144 (2013), Eq. 25 with the electrolyte at unit activity. For an ideal
      solution a = c/(1−c) and both forms agree; with Ω the activity form is e^{αΩ(1−2c)/k_BT} times the
      ideal one (≈ 9.5× at c → 0 for LFP, Ω = 4.5 k_BT).

    ``rate_per_s`` (k, s⁻¹ per site) and ``alpha`` broadcast on c; ``mu`` arguments are μ/k_BT (same shape
    as c), needed by the activity form only.
    """

    rate_per_s: torch.Tensor | float
    alpha: torch.Tensor | float = 0.5
    exchange_form: str = "ideal"

    def __post_init__(self) -> None:
        if self.exchange_form not in EXCHANGE_FORMS:
            raise InputError("exchange_form", "'ideal' or 'activity'", self.exchange_form)

    def exchange(self, c: torch.Tensor, mu: torch.Tensor | None = None) -> torch.Tensor:
        """i₀ (same shape as c); ``mu`` = μ/k_BT is required by the activity form."""
        x = c.clamp(1e-7, 1 - 1e-7)
        if self.exchange_form == "ideal":
            return self.rate_per_s * torch.exp(self.alpha * torch.log(x) + (1 - self.alpha) * torch.log1p(-x))
        if mu is None:
            raise InputError("mu", "the chemical potential μ/kT for the activity exchange form", None)
        return self.rate_per_s * torch.exp(self.alpha * mu.clamp(-_ETA_CLIP, _ETA_CLIP) + torch.log1p(-x))

    def rate(self, c: torch.Tensor, eta: torch.Tensor, mu: torch.Tensor | None = None) -> torch.Tensor:
        eta = eta.clamp(-_ETA_CLIP, _ETA_CLIP)
        return self.exchange(c, mu) * (torch.exp(-self.alpha * eta) - torch.exp((1 - self.alpha) * eta))

    def rate_and_slope(self, c: torch.Tensor, eta: torch.Tensor,
                       mu: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, |∂R/∂η| at fixed μ) sharing the exponentials (the step needs both)."""
        eta = eta.clamp(-_ETA_CLIP, _ETA_CLIP)
        i0 = self.exchange(c, mu)
        forward = torch.exp(-self.alpha * eta)
        backward = torch.exp((1 - self.alpha) * eta)
        return i0 * (forward - backward), i0 * (self.alpha * forward + (1 - self.alpha) * backward)

    def slope(self, c: torch.Tensor, eta: torch.Tensor, mu: torch.Tensor | None = None) -> torch.Tensor:
        """|∂R/∂η| = i₀ [α exp(−αη) + (1−α) exp((1−α)η)] (at fixed μ)."""
        return self.rate_and_slope(c, eta, mu)[1]


def mhc_rate(eta: torch.Tensor, lam: torch.Tensor | float, reduction: bool) -> torch.Tensor:
    """Zeng's closed form of the Marcus-Hush-Chidsey rate (dimensionless; η and λ in k_BT)."""
    lam = torch.as_tensor(lam, dtype=eta.dtype, device=eta.device)
    sign = 1.0 if reduction else -1.0
    arg = (lam - torch.sqrt(1 + torch.sqrt(lam) + eta**2)) / (2 * torch.sqrt(lam))
    return torch.sqrt(math.pi * lam) / (1 + torch.exp(sign * eta)) * torch.erfc(arg)


def mhc_net_and_slope(eta: torch.Tensor, lam: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """k_red(η) − k_ox(η) of :func:`mhc_rate` and its slope −d(k_red − k_ox)/dη ≥ 0, from one erfc.

    Both rates share E = erfc[(λ − s)/(2√λ)], s = √(1 + √λ + η²), so k_red − k_ox = −√(πλ) E tanh(η/2)
    and −d/dη = √(πλ) E sech²(η/2)/2 + e^{−((λ − s)/(2√λ))²} (η/s) tanh(η/2) (dE/dη =
    e^{−arg²} η/(√(πλ) s))."""
    lam = torch.as_tensor(lam, dtype=eta.dtype, device=eta.device)
    s = torch.sqrt(1 + torch.sqrt(lam) + eta**2)
    arg = (lam - s) / (2 * torch.sqrt(lam))
    erfc = torch.erfc(arg)
    root = torch.sqrt(math.pi * lam)
    th = torch.tanh(eta / 2)
    net = -root * erfc * th
    slope = root * erfc * (1 - th * th) / 2 + torch.exp(-arg * arg) * (eta / s) * th
    return net, slope


@dataclass(frozen=True)
class CoupledIonElectron:
    """R = k (1−c) [k_red(η) − k_ox(η)] / k_red(0) with MHC rates of reorganisation energy λ (k_BT)."""

    rate_per_s: torch.Tensor | float
    reorganization_kT: torch.Tensor | float = 8.3

    def _site_factor(self, c: torch.Tensor) -> torch.Tensor:
        """The composition dependence of the prefactor: the vacancy fraction 1 − c."""
        return (1 - c).clamp(0, 1)

    def _prefactor(self, c: torch.Tensor) -> torch.Tensor:
        """k · :meth:`_site_factor` / k_red(0)."""
        lam = torch.as_tensor(self.reorganization_kT, dtype=c.dtype, device=c.device)
        norm = mhc_rate(torch.zeros_like(lam), lam, True)
        return self.rate_per_s * self._site_factor(c) / norm

    def rate(self, c: torch.Tensor, eta: torch.Tensor, mu: torch.Tensor | None = None) -> torch.Tensor:
        """R (same shape as c); ``mu`` is accepted for a uniform interface and not used."""
        return self.rate_and_slope(c, eta, mu)[0]

    def slope(self, c: torch.Tensor, eta: torch.Tensor, mu: torch.Tensor | None = None) -> torch.Tensor:
        """|∂R/∂η| in closed form (:func:`mhc_net_and_slope`; 0 where η is clipped)."""
        return self.rate_and_slope(c, eta, mu)[1]

    def rate_and_slope(self, c: torch.Tensor, eta: torch.Tensor,
                       mu: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        inside = eta.abs() < _ETA_CLIP
        eta = eta.clamp(-_ETA_CLIP, _ETA_CLIP)
        net, slope = mhc_net_and_slope(eta, torch.as_tensor(self.reorganization_kT, dtype=c.dtype,
                                                            device=c.device))
        pre = self._prefactor(c)
        return pre * net, pre * slope * inside


RATE_LAWS = ("butler-volmer", "butler-volmer-activity", "ciet")
"""Names of the rate laws (command line, ``kinetics.json``): ideal Butler-Volmer, Bazant's activity
Butler-Volmer, and coupled ion-electron transfer."""


def rate_law_named(name: str, rate_per_s: torch.Tensor | float, alpha: float = 0.5,
                   reorganization_kT: float = 8.3):
    """The rate law called ``name`` (one of :data:`RATE_LAWS`) with prefactor k = ``rate_per_s``.

    Args:
        name: ``"butler-volmer"`` (:class:`ButlerVolmer`, ideal exchange), ``"butler-volmer-activity"``
            (:class:`ButlerVolmer`, activity exchange) or ``"ciet"`` (:class:`CoupledIonElectron`).
        rate_per_s: k, s⁻¹ per site (broadcast on c).
        alpha: transfer coefficient of the Butler-Volmer laws.
        reorganization_kT: λ of the CIET law (k_BT).

    Raises:
        InputError: an unknown name (field ``rate_law``).
    """
    if name == "butler-volmer":
        return ButlerVolmer(rate_per_s, alpha, "ideal")
    if name == "butler-volmer-activity":
        return ButlerVolmer(rate_per_s, alpha, "activity")
    if name == "ciet":
        return CoupledIonElectron(rate_per_s, reorganization_kT)
    raise InputError("rate_law", " or ".join(RATE_LAWS), name)


def needs_newton(rate_law) -> bool:
    """Whether the galvanostatic solve of ``rate_law`` needs Newton iterations (decided once per model,
    on the host, so the step itself never syncs): Butler-Volmer with α = ½ everywhere has a closed
    form; other α and other laws iterate."""
    if not isinstance(rate_law, ButlerVolmer):
        return True
    return bool((torch.as_tensor(rate_law.alpha) != 0.5).any())


WARM_NEWTON_ITERATIONS = 4
"""Field-Newton iterations of a warm-started reservoir solve: a corrector iterate moves ν by a small
fraction of k_BT, from where Newton converges quadratically (to round-off in 3)."""


def solve_reservoir(
    rate_law, c: torch.Tensor, m: torch.Tensor, current: torch.Tensor, d: int, nu0: torch.Tensor,
    weight: torch.Tensor | None = None, iterations: int = 30, newton: bool | None = None, warm: bool = False,
) -> torch.Tensor:
    """ν = μ_res/k_BT (*batch,) such that the (weighted) spatial mean of R(c, m − ν) equals ``current``.

    ⟨R⟩ increases monotonically with ν. Butler-Volmer (either exchange form: i₀ does not depend on ν)
    separates, ⟨R⟩ = A e^{αν} − B e^{−(1−α)ν}, so the solve is a scalar Newton iteration per element
    started from the α = ½ closed form e^{ν/2} = (I + √(I² + 4AB)) / (2A); other laws use a safeguarded
    Newton iteration on the field. A current the law cannot carry in floating point gives a non-finite ν
    (the caller marks FAILED). ``weight`` (broadcast on c, ≥ 0): the mean is Σ w R / Σ w (a particle
    mask). ``newton``: whether to iterate (default :func:`needs_newton`, which syncs with the host; the
    steppers decide it once per model). ``warm``: ``nu0`` is the converged potential of a nearby state
    (a corrector iterate of the same step), so the field Newton takes at most ``WARM_NEWTON_ITERATIONS``.
    """
    axes = spectral.spatial_axes(d)
    if newton is None:
        newton = needs_newton(rate_law)

    def mean(x):
        if weight is None:
            return x.mean(dim=axes)
        w = weight.to(x.dtype)
        return (x * w).sum(dim=axes) / w.expand_as(x).sum(dim=axes)

    if isinstance(rate_law, ButlerVolmer):
        # α broadcasts on c (a scalar or per element); the scalar Newton needs it per element
        a_pe = torch.as_tensor(rate_law.alpha, dtype=c.dtype, device=c.device).expand_as(c)
        alpha = a_pe.flatten(start_dim=c.ndim - d)[..., 0]
        i0 = rate_law.exchange(c, m)
        m_c = m.clamp(-_ETA_CLIP, _ETA_CLIP)
        log_a = torch.log(mean(i0 * torch.exp(-a_pe * m_c)))
        log_b = torch.log(mean(i0 * torch.exp((1 - a_pe) * m_c)))
        a, b = torch.exp(log_a), torch.exp(log_b)
        nu = 2 * torch.log((current + torch.sqrt(current**2 + 4 * a * b)) / (2 * a))
        for _ in range(iterations if newton else 0):
            up = torch.exp(log_a + alpha * nu)
            down = torch.exp(log_b - (1 - alpha) * nu)
            step = (up - down - current) / (alpha * up + (1 - alpha) * down)
            nu = nu - step.clamp(-5.0, 5.0)
        return nu
    def newton_step(nu):
        nu_b = _pe(nu, d, c)
        r, slope = rate_law.rate_and_slope(c, m - nu_b, m)
        return nu - ((mean(r) - current) / mean(slope).clamp_min(1e-30)).clamp(-2.0, 2.0)

    # the iterations need no graph: one differentiable step from the converged root carries the exact
    # derivative dν/dθ = −(∂⟨R⟩/∂θ)/(∂⟨R⟩/∂ν) (implicit function theorem) at the cost of one step
    # a law may carry its own count (e.g. a fit that warm-starts ν from the previous step needs fewer)
    iterations = getattr(rate_law, "reservoir_iterations", iterations)
    if warm:
        iterations = min(iterations, WARM_NEWTON_ITERATIONS)
    with torch.no_grad():
        nu = nu0.detach().clone()
        for _ in range(iterations - 1):
            nu = newton_step(nu)
    return newton_step(nu)


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
      last_dt_s: the last accepted step (s), 0 before the first; with ``nu`` it predicts the change of
        the reservoir potential over the next step (the step control).
    """

    nu: torch.Tensor
    current_per_s: torch.Tensor
    saturated: torch.Tensor
    nonfinite: torch.Tensor
    elastic: ElasticityResult | None = None
    last_dt_s: torch.Tensor | None = None


BOUNDARIES = ("periodic", "noflux", "wetting")


@dataclass(frozen=True)
class AllenCahnReaction:
    """A depth-averaged ACR platelet model (equations in the module docstring).

    Fields:
      grid: the in-plane :class:`mechanics.Grid` (spacing in nm; 1-D or 2-D).
      free_energy: bulk f(c) per volume (GPa), parameters broadcast on c.
      kappa_aJ_per_nm: κ, (*batch, d) or scalar.
      site_density_per_nm3, kT_aJ: ρ_s and k_BT, (*batch,) or scalars.
      rate_law: :class:`ButlerVolmer` (ideal or activity exchange form) or :class:`CoupledIonElectron`
        (rates broadcast on c).
      current_per_s: (*batch,) galvanostatic ⟨∂c/∂t⟩ over the particle; ``None`` → potentiostatic at
        ``reservoir_potential_kT`` (*batch,).
      boundary: ``"periodic"``, ``"noflux"`` or ``"wetting"`` (the surface held at
        ``surface_composition``: c = c_s on the boundary faces, a wetting layer of fixed composition).
      surface_composition: c_s, (*batch,) or scalar, with ``boundary="wetting"`` only.
      mask: optional particle outline, bool (*grid) or (*batch, *grid): reaction, transport and the
        galvanostatic constraint live on the mask's pixels only (the rest of the grid never changes);
        the mask's edge is no-flux (wetted with ``boundary="wetting"``); the grid's own edges follow
        ``boundary``. The gradient term is then a finite-difference stencil with fluxes only between
        particle pixels and the stabiliser is local (no FFT), so a particle gives the same dynamics on
        any grid that holds it.
      linear_kernel_GPa: optional implicit B(k) on the rfft grid of :attr:`stepped_grid` (not with a
        mask or a wetting boundary).
      explicit_potential: optional ``(c, elastic) -> (μ_el per volume in GPa, elastic)``; ``elastic`` is
        what it returned at the previous step (:attr:`ReactionAux.elastic`, None at first).
      noise: optional ``(state, dt) -> ξ`` zero-mean fluctuation added to c each step (seeded by the
        caller; restricted to the mask and made zero-mean there when a mask is given).
      dc_tol: target max |Δc| per step (dimensionless).
      relaxation_tol: target Δt K S/(ρ_s k_BT) per step, K = max|∂R/∂η| and S ≥ −min f'' the
        stabilisation constant: the step is a fraction of the relaxation (or spinodal growth) time of the
        slowest resolved long-wave mode, so quasi-static fields (plateau potentials, the onset of phase
        separation) converge as Δt → 0 (``inf`` switches it off). Default 0.5; with ``growth_tol`` 0.02 the
        plateau potential of a 1-D 40 nm LFP particle is within 0.01 k_BT of its Δt → 0 limit at 0.01C and
        1C (tested).
      growth_tol: target relative growth per step of the composition fluctuation ‖c − ⟨c⟩‖ (rms over
        the particle, without the step's noise): resolves the exponential growth of the spinodal
        instability, whose timing sets where a particle phase separates (max|Δc| is blind to the growth of
        a small perturbation). Default 0.02.
      splitting_tol: target max |Δt R − Δc| per step: how far the stabiliser moved the step from the
        explicit rate (the splitting's local error; it damps the modes that make up a moving interface,
        which then lags and needs a larger overpotential). Default 0.002.
      potential_tol: target change of the reservoir potential per step (k_BT), predicted from its change
        over the last accepted step: resolves the stick-slip of an interface hopping from cell to cell
        and the relaxation after nucleation, which set the plateau potential. Default 0.05.
      dt_max_s, dt_min_s: bounds of the adaptive step in s (``dt_max_s`` a scalar or (*batch,)).
      growth_limit: largest factor by which the step grows after an accepted step.
      corrections: corrector iterations that move each step from the stabilised one towards backward
        Euler, Δc = Δt R(c + Δc) (module docstring); ``splitting_tol`` then bounds the defect left after
        them. The stabiliser slows a moving interface (it damps the modes that make it up by
        1 + Δt K (S + G(k))/(ρ_s k_BT)), so without corrections the interface lags and the plateau
        potential is too high: by 0.005 / 0.02 / 0.04 / 0.06 k_BT at 0.01 / 0.05 / 0.2 / 1C on a 1-D
        40 nm LFP particle (measured against Δt ≤ 0.1–0.5 s), and only the splitting control's small
        steps keep it there. Two corrections bring it within 0.002 k_BT at 0.01–0.2C and 0.001 at 1C
        (tested) at as many or fewer steps. Each costs one more potential, reservoir solve and
        stabiliser inversion (the explicit potential, e.g. a free platelet's elasticity, is not
        re-evaluated). Default 2; 0 is the plain stabilised step (the screening takes 6,
        :class:`mechanics.screen.ScreeningSettings`; the kinetics fit's fixed steps take 1).

    ``dc_tol``, ``relaxation_tol``, ``growth_tol``, ``splitting_tol`` and ``potential_tol`` may also be
    (*batch,) tensors (one per element).
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
    surface_composition: torch.Tensor | float | None = None
    mask: torch.Tensor | None = None
    linear_kernel_GPa: torch.Tensor | None = None
    explicit_potential: Callable | None = None
    noise: Callable | None = None
    dc_tol: float = 0.02
    relaxation_tol: torch.Tensor | float = 0.5
    growth_tol: torch.Tensor | float = 0.02
    splitting_tol: torch.Tensor | float = 0.002
    potential_tol: torch.Tensor | float = 0.05
    dt_max_s: torch.Tensor | float = float("inf")
    dt_min_s: float = 0.0
    growth_limit: float = 1.5
    corrections: int = 2

    def __post_init__(self) -> None:
        if not isinstance(self.grid, Grid):
            raise InputError("grid", "a mechanics.Grid", type(self.grid).__name__)
        if self.boundary not in BOUNDARIES:
            raise InputError("boundary", "'periodic', 'noflux' or 'wetting'", self.boundary)
        if (self.current_per_s is None) == (self.reservoir_potential_kT is None):
            raise InputError("current_per_s", "exactly one of current_per_s (galvanostatic) and "
                             "reservoir_potential_kT (potentiostatic)", None)
        if (self.boundary == "wetting") != (self.surface_composition is not None):
            raise InputError("surface_composition", "a value exactly when boundary='wetting'",
                             self.surface_composition)
        if self.mask is not None:
            if not isinstance(self.mask, torch.Tensor) or self.mask.dtype != torch.bool:
                raise InputError("mask", "a bool tensor (*grid) or (*batch, *grid)", type(self.mask).__name__)
            if tuple(self.mask.shape[self.mask.ndim - self.d:]) != tuple(self.grid.shape):
                raise InputError("mask", f"trailing shape {tuple(self.grid.shape)}", tuple(self.mask.shape))
            if not bool(self.mask.flatten(start_dim=self.mask.ndim - self.d).any(dim=-1).all()):
                raise InputError("mask", "at least one particle pixel per element", "an empty mask")
        if (self.mask is not None or self.boundary == "wetting") and self.linear_kernel_GPa is not None:
            raise InputError("linear_kernel_GPa", "None with a mask or a wetting boundary (use an "
                             "explicit potential)", "a kernel")
        for name in ("dc_tol", "relaxation_tol", "growth_tol", "splitting_tol", "potential_tol",
                     "growth_limit"):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and value > 0 and not math.isnan(value)
            if isinstance(value, torch.Tensor) and name != "growth_limit":
                ok = bool((value > 0).all()) and not bool(value.isnan().any())
            if not ok:
                raise InputError(name, "a number > 0" + (" (or a (*batch,) tensor of them)"
                                                         if name != "growth_limit" else ""), value)
        n = self.corrections
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InputError("corrections", "an integer ≥ 0", self.corrections)

    @property
    def d(self) -> int:
        return self.grid.ndim

    @property
    def stepped_grid(self) -> Grid:
        """The grid the FFTs run on: the grid itself, or twice it per axis for no-flux and wetting."""
        return stepped_grid(self.grid, "periodic" if self.boundary == "periodic" else "noflux")


def _mirrored(model: AllenCahnReaction) -> bool:
    return model.boundary != "periodic" and model.mask is None


def chemical_potential(model: AllenCahnReaction, c: torch.Tensor, elastic, sym: dict):
    """μ per site in units of k_BT, (*batch, *grid); also returns the explicit potential's carry
    (``elastic``, see :class:`ReactionAux`)."""
    mu = _local_potential(model, c, sym)
    if model.explicit_potential is not None:
        mu_el, elastic = model.explicit_potential(c, elastic)
        mu = mu + mu_el
    return mu * sym["inv_scale"], elastic


def _local_potential(model: AllenCahnReaction, c: torch.Tensor, sym: dict) -> torch.Tensor:
    """f'(c) − ∇·(κ∇c) (+ the implicit kernel's B(k)ĉ) per volume (GPa): μ without the explicit
    potential and before the division by ρ_s k_BT."""
    d = model.d
    if model.mask is not None:
        div = spectral.masked_divergence(c, sym["kappa"], model.grid.spacing_nm, sym["open"],
                                         sym.get("surface"), sym.get("wet"))
        return model.free_energy.derivative(c) - div
    if model.boundary == "noflux":
        ce = spectral.mirror(c, d)
    elif model.boundary == "wetting":
        ce = spectral.mirror_odd(c, d, sym["surface"])
    else:
        ce = c
    gradient = spectral.irfft(spectral.scale_spectrum(spectral.rfft(ce, d), sym["quadratic"]),
                              model.stepped_grid.shape)
    if model.boundary != "periodic":
        gradient = spectral.crop(gradient, model.grid.shape)
    return model.free_energy.derivative(c) + gradient


def _symbols(model: AllenCahnReaction, like: torch.Tensor) -> dict:
    """Everything the step needs that does not change from step to step, built once per dtype/device."""
    d = model.d
    dtype, device = like.dtype, like.device
    ks = model.stepped_grid.axis_wavevectors(dtype=dtype, device=device)
    quadratic = spectral.gradient_symbol(ks, model.kappa_aJ_per_nm)
    if model.linear_kernel_GPa is not None:
        quadratic = quadratic + model.linear_kernel_GPa.to(dtype)
    # the free energy's parameters broadcast on c, and so does its stabilisation constant
    s = torch.as_tensor(model.free_energy.stabilization(), dtype=dtype, device=device)
    k2 = spectral.k_squared(ks)
    mean_mode = (k2 == 0).to(dtype)
    scale = _pe(model.site_density_per_nm3, d, like) * _pe(model.kT_aJ, d, like)
    sym = {"quadratic": quadratic, "S": s, "mean_mode": mean_mode, "inv_scale": 1.0 / scale,
           "newton": needs_newton(model.rate_law) if model.current_per_s is not None else False}
    # S/(ρ_s kT) per element, (*batch,): the rate scale of the relaxation-time control
    stiffness = s * sym["inv_scale"]
    sym["stiffness_per_kT"] = stiffness.reshape(stiffness.shape[: stiffness.ndim - d])
    sym["dc_tol"] = torch.as_tensor(model.dc_tol, dtype=dtype, device=device)
    sym["relaxation_tol"] = torch.as_tensor(model.relaxation_tol, dtype=dtype, device=device)
    sym["growth_tol"] = torch.as_tensor(model.growth_tol, dtype=dtype, device=device)
    sym["potential_tol"] = torch.as_tensor(model.potential_tol, dtype=dtype, device=device)
    sym["splitting_tol"] = torch.as_tensor(model.splitting_tol, dtype=dtype, device=device)
    if model.current_per_s is not None:
        sym["current"] = torch.as_tensor(model.current_per_s, dtype=dtype, device=device)
    else:
        sym["reservoir"] = torch.as_tensor(model.reservoir_potential_kT, dtype=dtype, device=device)
    if model.boundary == "wetting":
        sym["surface"] = _pe(model.surface_composition, d, like)
    if model.mask is not None:
        mask = model.mask.to(device)
        inside = mask.to(dtype)
        kappa = torch.as_tensor(model.kappa_aJ_per_nm, dtype=dtype, device=device)
        sym["kappa"] = kappa.expand(d) if kappa.ndim == 0 else kappa
        open_faces, wet = [], []
        h2 = model.grid.spacing_nm**2
        local = 0.0
        for i, axis in enumerate(spectral.spatial_axes(d)):
            up = inside * torch.roll(inside, -1, dims=axis)
            if model.boundary != "periodic":  # no face between the last and the first cell
                edge = torch.ones(model.grid.shape[i], dtype=dtype, device=device)
                edge[-1] = 0.0
                up = up * edge.reshape(-1, *([1] * (-axis - 1)))
            open_faces.append(up)
            if model.boundary == "wetting":
                wet += [inside * (1 - up), inside * (1 - torch.roll(up, 1, dims=axis))]
            k_i = sym["kappa"][..., i]
            local = local + 2 * k_i.reshape(*k_i.shape, *([1] * d)) / h2 * (2 if model.boundary == "wetting"
                                                                            else 1)
        sym.update(open=open_faces, mask=inside, count=inside.sum(dim=spectral.spatial_axes(d)),
                   local=local)
        if wet:
            sym["wet"] = wet
    return sym


def _particle_mean(x: torch.Tensor, sym: dict, d: int, keepdim: bool = False) -> torch.Tensor:
    axes = spectral.spatial_axes(d)
    if "mask" not in sym:
        return x.mean(dim=axes, keepdim=keepdim)
    count = sym["count"]
    if keepdim:
        count = count.reshape(*count.shape, *([1] * d))
    return (x * sym["mask"]).sum(dim=axes, keepdim=keepdim) / count


def _increment(model: AllenCahnReaction, c: torch.Tensor, dt: torch.Tensor, nu_prev: torch.Tensor,
               elastic, sym: dict, corrections: int = 0):
    """The tensor core of one step: (Δc, ν, ⟨R⟩, saturated, (K, splitting), elastic).

    ``corrections`` > 0 moves the stabilised step towards the backward-Euler step Δc = Δt R(c + Δc) by
    that many preconditioned fixed-point iterations, Δc ← Δc + P⁻¹[Δt R(c + Δc) − Δc], with P the
    stabiliser (the explicit potential stays at its value at c, ν is re-solved for each iterate so every
    iterate carries the current exactly). The splitting measure is then the remaining defect
    max|Δt R(c + Δc) − Δc| of the last iterate instead of max|Δt R(c) − Δc|. ν, ⟨R⟩ and ``saturated`` are
    those of the start state either way."""
    d = model.d
    axes = spectral.spatial_axes(d)
    batch = dt.shape
    m, elastic, m_el = _potential(model, c, elastic, sym)
    nu, r, slope = _rate(model, c, m, nu_prev, batch, sym)
    k_stab = slope.amax(dim=axes)
    dt_b, k_b = _pe(dt, d, c), _pe(k_stab, d, c)
    a = dt_b * k_b * sym["inv_scale"]
    mean_stiffness = None
    if model.current_per_s is None:
        # potentiostatic: the mean mode relaxes with the mean curvature ⟨f''⟩ (galvanostatic: it is
        # fixed by the current, so k = 0 is left alone and the charge count is exact)
        mean_curv = torch.nan_to_num(_particle_mean(model.free_energy.curvature(c), sym, d, keepdim=True))
        mean_stiffness = mean_curv.clamp_min(0)
    delta = _stabilised(model, r, a, mean_stiffness, sym, dt_b)
    defect = dt_b * r - delta
    nu_k = nu
    for _ in range(corrections):
        c_k = c + delta
        m_k = _potential(model, c_k, None, sym, m_el)[0]
        nu_k, r_k, _ = _rate(model, c_k, m_k, nu_k, batch, sym, warm=True)
        defect = dt_b * r_k - delta
        delta = delta + _stabilised(model, defect, a, mean_stiffness, sym)
    saturated = ((m - _pe(nu, d, c)).abs() >= _ETA_CLIP).flatten(start_dim=c.ndim - d).any(dim=-1)
    splitting = defect.abs().amax(dim=axes)
    return delta, nu, _particle_mean(r, sym, d), saturated, (k_stab, splitting), elastic


def _potential(model: AllenCahnReaction, c: torch.Tensor, elastic, sym: dict, frozen=None):
    """(μ/k_BT, elastic carry, μ_el): the chemical potential with the explicit potential μ_el (GPa)
    evaluated at c, or with the given ``frozen`` μ_el (a corrector iterate of the same step)."""
    mu = _local_potential(model, c, sym)
    if frozen is None and model.explicit_potential is not None:
        frozen, elastic = model.explicit_potential(c, elastic)
    if frozen is not None:
        mu = mu + frozen
    return mu * sym["inv_scale"], elastic, frozen


def _rate(model: AllenCahnReaction, c: torch.Tensor, m: torch.Tensor, nu_prev: torch.Tensor, batch,
          sym: dict, warm: bool = False):
    """(ν, R, ∂R/∂η) at state c with potential m: ν re-solved for the current (galvanostatic; ``warm``:
    ``nu_prev`` is a nearby converged potential) or fixed."""
    d = model.d
    weight = sym.get("mask")
    if model.current_per_s is not None:
        current = sym["current"].expand(batch)
        nu = solve_reservoir(model.rate_law, c, m, current, d, nu_prev, weight=weight, newton=sym["newton"],
                             warm=warm)
    else:
        nu = sym["reservoir"].expand(batch)
    r, slope = model.rate_law.rate_and_slope(c, m - _pe(nu, d, c), m)
    if weight is not None:
        r, slope = r * weight, slope * weight
    return nu, r, slope


def _stabilised(model: AllenCahnReaction, x: torch.Tensor, a: torch.Tensor, mean_stiffness, sym: dict,
                scale: torch.Tensor | float = 1.0):
    """``scale`` · P⁻¹ x: the stabiliser P = 1 + a (S + G(k) + B(k)) inverted (in Fourier space, or
    locally on a mask); the mean mode is left alone when galvanostatic and relaxes with
    ``mean_stiffness`` otherwise."""
    d = model.d
    weight = sym.get("mask")
    if weight is not None:
        mean_x = _particle_mean(x, sym, d, keepdim=True)
        mean_den = 1.0 if model.current_per_s is not None else 1 + a * mean_stiffness
        return scale * ((x - mean_x) / (1 + a * (sym["S"] + sym["local"])) + mean_x / mean_den) * weight
    s = sym["S"] + sym["quadratic"]
    if model.current_per_s is None:
        s = s + sym["mean_mode"] * (mean_stiffness - sym["S"])
    else:
        s = s * (1 - sym["mean_mode"])
    xe = spectral.mirror(x, d) if _mirrored(model) else x
    out = spectral.irfft(spectral.scale_spectrum(spectral.rfft(xe, d), scale / (1 + a * s)),
                         model.stepped_grid.shape)
    return spectral.crop(out, model.grid.shape) if _mirrored(model) else out


def acr_symbols(model: AllenCahnReaction, like: torch.Tensor) -> dict:
    """What :func:`acr_increment` needs besides the field (kernels, stabiliser, mask stencil), built for
    the dtype and device of ``like``; rebuild it when the model changes. Differentiable in the model's
    parameter tensors."""
    return _symbols(model, like)


def acr_increment(model: AllenCahnReaction, c: torch.Tensor, dt: torch.Tensor, aux: ReactionAux, sym: dict):
    """One stabilised step of size dt ((*batch,), s) from c; returns (c', aux'). Pure function; the
    stabiliser is part of the discrete map and is differentiated with it. ``aux'`` holds this try's
    potential, current, carry and ``saturated`` flag; ``nonfinite`` is the stepper's to set."""
    delta, nu, current, saturated, _, elastic = _increment(model, c, dt, aux.nu, aux.elastic, sym,
                                                                    model.corrections)
    new_aux = ReactionAux(nu=nu, current_per_s=current, saturated=saturated, nonfinite=aux.nonfinite,
                          elastic=elastic)
    return c + delta, new_aux


_FLUCTUATION_FLOOR = 1e-5  # composition rms below which growth is measured absolutely (float32 round-off)


def _control_error(model: AllenCahnReaction, state: PhaseFieldState, delta: torch.Tensor, dt: torch.Tensor,
                   control: tuple, nu: torch.Tensor, sym: dict) -> torch.Tensor:
    """The physics part of the step control, (*batch,), 1 on target: the largest of Δt K S/(ρ_s kT) /
    relaxation_tol, the relative growth of the fluctuation rms per step / growth_tol, and the change of
    the reservoir potential predicted for this step, |ν − ν_last| Δt/Δt_last / potential_tol, and the
    splitting error max|Δt R − Δc| / splitting_tol."""
    d = model.d
    c = state.c
    k_stab, splitting = control

    def rms(x):
        dev = x - _particle_mean(x, sym, d, keepdim=True)
        if "mask" in sym:
            dev = dev * sym["mask"]
        return torch.sqrt(_particle_mean(dev * dev, sym, d))

    before = rms(c)
    growth = ((rms(c + delta) - before) / (before + _FLUCTUATION_FLOOR)).clamp_min(0)
    relaxation = dt * k_stab * sym["stiffness_per_kT"]
    last = state.aux.last_dt_s
    drift = (nu - state.aux.nu).abs() * dt / last.clamp_min(1e-30)
    drift = torch.where(last > 0, drift, torch.zeros_like(dt))
    error = torch.maximum(relaxation / sym["relaxation_tol"], growth / sym["growth_tol"])
    error = torch.maximum(error, splitting / sym["splitting_tol"])
    return torch.maximum(error, torch.nan_to_num(drift, nan=0.0) / sym["potential_tol"])


def _acr_step(model: AllenCahnReaction, sym: dict, state: PhaseFieldState,
              dt_cap: torch.Tensor | None) -> PhaseFieldState:
    d = model.d
    dt = state.dt if dt_cap is None else torch.minimum(state.dt, dt_cap)
    delta, nu, current, saturated, control, elastic = _increment(model, state.c, dt, state.aux.nu,
                                                                 state.aux.elastic, sym, model.corrections)
    new = state.c + delta
    if model.noise is not None:
        xi = model.noise(state, dt)
        if "mask" in sym:
            xi = (xi - _particle_mean(xi, sym, d, keepdim=True)) * sym["mask"]
        new = new + xi
    nonfinite = ~torch.isfinite(new).all(dim=spectral.spatial_axes(d)) | ~torch.isfinite(nu)
    aux = ReactionAux(nu=nu, current_per_s=current, saturated=saturated, nonfinite=state.aux.nonfinite,
                      elastic=elastic, last_dt_s=state.aux.last_dt_s)
    out = adapt(state, new, dt, aux, d=d, dc_tol=sym["dc_tol"], dt_min=model.dt_min_s,
                dt_max=model.dt_max_s, growth_limit=model.growth_limit,
                extra_error=_control_error(model, state, delta, dt, control, nu, sym))
    # a rejected element keeps the reservoir potential it had, so observers see a consistent state
    moved = out.steps > state.steps
    aux = replace(
        out.aux,
        nu=torch.where(moved, nu, state.aux.nu),
        current_per_s=torch.where(moved, current, state.aux.current_per_s),
        nonfinite=nonfinite & (dt > 0),
        saturated=saturated & (dt > 0),
        last_dt_s=torch.where(moved, dt, state.aux.last_dt_s),
    )
    return replace(out, aux=aux)


def allen_cahn_reaction(model: AllenCahnReaction, compile: bool | str = "auto"):
    """Factory: ``init_fn(c0, dt0) -> state`` and ``step_fn(state, dt_cap=None) -> state``.

    ``state.aux`` is a :class:`ReactionAux`: the reservoir potential and mean rate of the last accepted
    step, the explicit potential's warm start, and the per-element flags ``saturated`` and ``nonfinite``
    of the last try (both False for elements that did not move). The step never synchronises with the
    host (accept/reject and the next Δt are decided on the device).

    Args:
      model: the :class:`AllenCahnReaction` model.
      compile: ``True`` fuses each step with ``torch.compile`` (inductor: the pointwise work between the
        FFTs becomes a few kernels), ``False`` runs it eagerly, ``"auto"`` compiles on CUDA tensors only
        (decided per device at the first step there). Both paths compute the same map (tested to float
        tolerance on CPU).
    """
    if compile not in (True, False, "auto"):
        raise InputError("compile", "True, False or 'auto'", compile)
    d = model.d
    cache: dict = {}
    steppers: dict = {}

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
        aux = ReactionAux(nu=z.clone(), current_per_s=z.clone(), saturated=no, nonfinite=no,
                          last_dt_s=z.clone())
        return PhaseFieldState(c=c0, time=z, dt=dt, steps=zi, rejected=zi.clone(), aux=aux)

    def stepper(c: torch.Tensor):
        key = (c.dtype, c.device)
        if key not in steppers:
            sym = symbols(c)

            def one(state, dt_cap):
                return _acr_step(model, sym, state, dt_cap)

            fuse = compile is True or (compile == "auto" and c.device.type == "cuda")
            steppers[key] = torch.compile(one, dynamic=False) if fuse else one
        return steppers[key]

    def step_fn(state: PhaseFieldState, dt_cap: torch.Tensor | None = None) -> PhaseFieldState:
        return stepper(state.c)(state, dt_cap)

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
        return c + _increment(model, c, dt_b, zero, None, cache[key], model.corrections)[0]

    return step
