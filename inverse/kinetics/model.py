"""The forward model the kinetics fit differentiates: learned μ_h(X), k₀(X) and k(r) inside the project's
Allen-Cahn-reaction (ACR) stepper, rolled out over frame intervals (multiple shooting).

Parametrisation (θ = (a, b, ℓ)):

    μ_h(X) = k_BT ln(X/(1−X)) + Σ_j a_j B_j(X)          (eV; a_j in units of ``MU_UNIT_EV``)
    k₀(X) = exp(Σ_j b_j B_j(X))                        (A/m², positive)
    k(r)  = exp(ℓ(r) − ⟨ℓ⟩)                             (relative prefactor, mean log 0 over the particle)

B_j: the uniform cubic B-splines on [0, 1] (``n`` functions, n − 3 intervals). The ideal-mixing entropy is
kept out of the spline (it is exact and diverges at the ends); the spline carries everything else
(Ω(1−2X), corrections, a spinodal of any shape: the spline is not monotone). The rate laws
(:data:`mechanics.phasefield.reaction.RATE_LAWS`) with the learned prefactors, R per site:

| law | R |
|---|---|
| ``butler-volmer`` | k(r) k̃₀(c) [e^{−αη} − e^{(1−α)η}] |
| ``butler-volmer-activity`` | k(r) k̃₀(c) e^{α(μ − μ_h(c))/k_BT} [e^{−αη} − e^{(1−α)η}] |
| ``ciet`` | k(r) k̃₀(c) [k_red(η) − k_ox(η)]/k_red(0) (Marcus-Hush-Chidsey, λ = 8.3 k_BT) |

k̃₀ = k₀·2/(e ρ_s L) is k₀ as a rate per site (two faces of a platelet of thickness L). For a homogeneous
state each law's k₀(X) is the exchange prefactor it has there: i₀ of ideal BV, k(1−X)a^α of the activity
form (the e^{α(μ−μ_h)} factor carries the gradient and coherency part of the activity), k(1−X) of CIET.
Coherency strain enters through the Khachaturyan kernel of an LFP platelet (reference misfit and
stiffness, plane stress, not fitted) when the particle fills its bounding box; a particle of another
outline runs on its mask without coherency (the stepper takes no kernel with a mask).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from mechanics.phasefield.reaction import ButlerVolmer, CoupledIonElectron

MU_UNIT_EV = 0.01
"""Unit of the μ_h spline coefficients (10 meV), so that every parameter of the fit is of order one."""

REORGANIZATION_KT = 8.3
"""λ of the CIET law (Fraggedakis et al., Electrochim. Acta 367, 137432 (2021), as in the reference set)."""


def bspline_basis(x: torch.Tensor, n: int) -> torch.Tensor:
    """The n uniform cubic B-splines on [0, 1] at x (clamped to [0, 1]): (..., n), rows sum to 1."""
    intervals = n - 3
    t = x.clamp(0.0, 1.0) * intervals
    i = t.detach().floor().clamp(0, intervals - 1)
    u = t - i
    w = torch.stack(
        [(1 - u) ** 3 / 6, (3 * u**3 - 6 * u**2 + 4) / 6, (-3 * u**3 + 3 * u**2 + 3 * u + 1) / 6, u**3 / 6],
        dim=-1,
    )
    idx = i.long().unsqueeze(-1) + torch.arange(4, device=x.device)
    out = torch.zeros(*x.shape, n, dtype=x.dtype, device=x.device)
    return out.scatter_add(-1, idx, w)


def spline(x: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """Σ_j coefficients_j B_j(x), shape of x (the four B-splines that are non-zero at x, gathered)."""
    intervals = coefficients.shape[-1] - 3
    t = x.clamp(0.0, 1.0) * intervals
    i = t.detach().floor().clamp(0, intervals - 1)
    u = t - i
    i = i.long()
    u2 = u * u
    u3 = u2 * u
    return (
        (1 - u) ** 3 * coefficients[i]
        + (3 * u3 - 6 * u2 + 4) * coefficients[i + 1]
        + (-3 * u3 + 3 * u2 + 3 * u + 1) * coefficients[i + 2]
        + u3 * coefficients[i + 3]
    ) / 6


def spline_derivative(x: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """d/dx of :func:`spline` (by autograd on a copy of x)."""
    with torch.enable_grad():
        xx = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(spline(xx, coefficients.detach()).sum(), xx)
    return g


@dataclass(frozen=True)
class Physics:
    """The fixed physics of a particle (not fitted), in the stepper's units (nm, aJ, GPa, s).

    Attributes:
        kT_aJ: k_BT.
        site_density_per_nm3: ρ_s.
        kappa_aJ_per_nm: gradient-energy coefficient.
        rate_per_A_m2: s⁻¹ per site per A/m² of exchange current (two faces, thickness L).
        alpha: transfer coefficient of the Butler-Volmer laws.
    """

    kT_aJ: float
    site_density_per_nm3: float
    kappa_aJ_per_nm: float
    rate_per_A_m2: float
    alpha: float

    @staticmethod
    def lfp(temperature_K: float, thickness_nm: float) -> Physics:
        """The LFP reference set (Bai, Cogswell & Bazant 2011) at a temperature and thickness."""
        from mechanics import units
        from mechanics.parameters.lfp import lfp_params

        p = lfp_params()
        rate = 2.0 / units.ELEMENTARY_CHARGE_C * units.M_PER_NM**2 / (p.site_density_per_nm3 * thickness_nm)
        return Physics(
            units.kT_aJ(temperature_K),
            p.site_density_per_nm3,
            p.kappa_aJ_per_nm[0],
            rate,
            p.charge_transfer_alpha,
        )

    @property
    def kT_eV(self) -> float:
        from mechanics import units

        return self.kT_aJ / units.AJ_PER_EV


@dataclass(frozen=True)
class SplineFreeEnergy:
    """Bulk free energy per volume (GPa) whose derivative is ρ_s μ_h(c), μ_h from the module docstring.

    ``mu_coefficients`` (n,) in units of :data:`MU_UNIT_EV`."""

    physics: Physics
    mu_coefficients: torch.Tensor

    def _mu_aJ(self, c: torch.Tensor) -> torch.Tensor:
        from mechanics import units

        x = c.clamp(1e-6, 1 - 1e-6)
        a = self.mu_coefficients.to(c.dtype)
        return (
            self.physics.kT_aJ * (torch.log(x) - torch.log1p(-x))
            + spline(c, a) * MU_UNIT_EV * units.AJ_PER_EV
        )

    def mu_h_kT(self, c: torch.Tensor) -> torch.Tensor:
        """μ_h(c)/k_BT."""
        return self._mu_aJ(c) / self.physics.kT_aJ

    def derivative(self, c: torch.Tensor) -> torch.Tensor:
        return self.physics.site_density_per_nm3 * self._mu_aJ(c)

    def curvature(self, c: torch.Tensor) -> torch.Tensor:
        from mechanics import units

        x = c.clamp(1e-6, 1 - 1e-6)
        slope = spline_derivative(c, self.mu_coefficients.to(c.dtype)) * MU_UNIT_EV * units.AJ_PER_EV
        return self.physics.site_density_per_nm3 * (self.physics.kT_aJ / (x * (1 - x)) + slope)

    def stabilization(self) -> float:
        """S ≥ −min f'' over [0, 1] (from the current coefficients; a constant of the step) plus ρ_s k_BT."""
        grid = torch.linspace(0.0, 1.0, 201, dtype=torch.float64)
        curv = self.curvature(grid.to(self.mu_coefficients.dtype))
        return (
            float(torch.clamp(-curv.min(), min=0.0)) + self.physics.site_density_per_nm3 * self.physics.kT_aJ
        )


@dataclass(frozen=True)
class LearnedButlerVolmer(ButlerVolmer):
    """Butler-Volmer with the learned exchange current (module docstring); ``exchange_form`` "ideal" or
    "activity". ``rate_per_s`` is k(r) k̃₀-scale: the (H, W) map of k(r) times ``rate_per_A_m2``."""

    k0_coefficients: torch.Tensor | None = None
    free_energy: SplineFreeEnergy | None = None
    # the reservoir solve and the rate of one step ask for i₀ of the same field: the spline is evaluated
    # once per field (keyed by the tensor's identity; fields are never modified in place)
    _last: dict = field(default_factory=dict, compare=False, repr=False)

    def _prefactor(self, c: torch.Tensor) -> torch.Tensor:
        if self._last.get("c") is not c:
            k0 = torch.exp(spline(c, self.k0_coefficients.to(c.dtype)))
            self._last.update(c=c, value=self.rate_per_s * k0)
        return self._last["value"]

    def exchange(self, c: torch.Tensor, mu: torch.Tensor | None = None) -> torch.Tensor:
        i0 = self._prefactor(c)
        if self.exchange_form == "activity":
            excess = (mu - self.free_energy.mu_h_kT(c)).clamp(-60.0, 60.0)
            i0 = i0 * torch.exp(self.alpha * excess)
        return i0


@dataclass(frozen=True)
class LearnedCIET(CoupledIonElectron):
    """CIET with the learned prefactor k(r) k̃₀(c) (module docstring)."""

    k0_coefficients: torch.Tensor | None = None
    # Newton iterations of the galvanostatic solve: the rollout warm-starts ν from the previous step, where
    # a few iterations converge (quadratically); the first step of an interval starts from ν = 0 and
    # moves at most 2 kT per iteration
    reservoir_iterations: int = 12

    def _site_factor(self, c: torch.Tensor) -> torch.Tensor:
        """The learned k̃₀(c) spline in place of the (1 − c) of the fixed law (rate and slope in closed
        form, :meth:`CoupledIonElectron.rate_and_slope`)."""
        return torch.exp(spline(c, self.k0_coefficients.to(c.dtype)))


def make_rate_law(
    name: str,
    physics: Physics,
    k_map: torch.Tensor,
    k0_coefficients: torch.Tensor,
    free_energy: SplineFreeEnergy,
):
    """The learned rate law ``name`` (one of ``RATE_LAWS``) with k(r) = ``k_map`` (H, W)."""
    from mechanics.errors import InputError

    rate = k_map * physics.rate_per_A_m2
    if name == "butler-volmer":
        return LearnedButlerVolmer(rate, physics.alpha, "ideal", k0_coefficients, free_energy)
    if name == "butler-volmer-activity":
        return LearnedButlerVolmer(rate, physics.alpha, "activity", k0_coefficients, free_energy)
    if name == "ciet":
        return LearnedCIET(rate, REORGANIZATION_KT, k0_coefficients)
    raise InputError("rate_law", "butler-volmer, butler-volmer-activity or ciet", name)


@dataclass(frozen=True)
class Domain:
    """Where a particle is simulated: its bounding box (rows, cols slices) on the series' grid, the mask
    inside that box, and whether the mask fills it (then no-flux edges and the coherency kernel)."""

    rows: slice
    cols: slice
    mask: np.ndarray
    full: bool
    pixel_size_nm: float

    @staticmethod
    def of(mask: np.ndarray, pixel_size_nm: float) -> Domain:
        r = np.flatnonzero(mask.any(axis=1))
        c = np.flatnonzero(mask.any(axis=0))
        rows, cols = slice(int(r[0]), int(r[-1]) + 1), slice(int(c[0]), int(c[-1]) + 1)
        box = mask[rows, cols]
        return Domain(rows, cols, box, bool(box.all()), float(pixel_size_nm))

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.mask.shape)


def coherency_kernel(grid, dtype: torch.dtype) -> torch.Tensor:
    """The Khachaturyan kernel B(k) (GPa) of an LFP platelet (a–c plane, plane stress, Vegard misfit of
    the reference set) on the rfft grid of ``grid`` (the stepped grid of a no-flux model)."""
    from mechanics import Stiffness
    from mechanics.parameters.lfp import lfp_params
    from mechanics.phasefield import elastic as pf_elastic

    p = lfp_params()
    stiffness = Stiffness.from_voigt(torch.tensor(np.asarray([p.stiffness_voigt()]), dtype=torch.float64))
    coupling = pf_elastic.ElasticCoupling(
        grid,
        stiffness,
        torch.tensor([p.misfit], dtype=torch.float64),
        pf_elastic.law_shape(None),
        (0, 2),
        "stress",
        None,
    )
    return coupling.kernel(dtype)


@dataclass(frozen=True)
class Intervals:
    """A batch of frame intervals for multiple shooting (all tensors on the fit's dtype).

    Attributes:
        start: (B, h, w) denoised observed composition at the start of each interval (the domain box).
        target: (B, h, w) observed composition at its end (NaN where not observed).
        weight: (B, h, w) 1/σ_X at observed domain pixels, 0 elsewhere.
        dt_s: (B,) time step of the interval's fixed steps.
        currents_per_s: (B, n_steps) galvanostatic ⟨∂c/∂t⟩ of each step (s⁻¹).
        index: (B,) index of the end frame in its series.
        series: (B,) which series each interval comes from.
        start_observed: (B, h, w) observed composition at the start of each interval (0 where none).
        start_weight: (B, h, w) 1/σ_X where the start frame is observed, 0 elsewhere.
        start_voltage_V: (B,) cell voltage measured at the start frame (0 where none).
        voltage_weight: (B,) 1/σ_V where a voltage was measured at the start frame, 0 elsewhere.
    """

    start: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor
    dt_s: torch.Tensor
    currents_per_s: torch.Tensor
    index: np.ndarray
    series: np.ndarray
    start_observed: torch.Tensor
    start_weight: torch.Tensor
    start_voltage_V: torch.Tensor
    voltage_weight: torch.Tensor

    def take(self, rows: np.ndarray) -> Intervals:
        r = torch.as_tensor(rows, dtype=torch.long)
        return Intervals(
            self.start[r],
            self.target[r],
            self.weight[r],
            self.dt_s[r],
            self.currents_per_s[r],
            self.index[rows],
            self.series[rows],
            self.start_observed[r],
            self.start_weight[r],
            self.start_voltage_V[r],
            self.voltage_weight[r],
        )

    def __len__(self) -> int:
        return int(self.start.shape[0])


@dataclass
class ForwardModel:
    """Rolls the learned ACR model over a batch of intervals; differentiable in θ.

    Attributes:
        physics: the fixed physics.
        domain: the simulated box and mask.
        rate_law: one of ``RATE_LAWS``.
        n_steps: fixed steps per interval.
        checkpoint_every: steps per checkpointed segment (memory: O(n/k + k) step states).
        corrections: corrector iterations per step (:class:`AllenCahnReaction`; 0: the plain step).
    """

    physics: Physics
    domain: Domain
    rate_law: str
    n_steps: int
    checkpoint_every: int = 4
    corrections: int = 0

    def __post_init__(self) -> None:
        from mechanics.grid import Grid

        self.grid = Grid(self.domain.shape, spacing_nm=self.domain.pixel_size_nm)
        self._kernel: dict = {}

    def model(
        self,
        mu_coefficients: torch.Tensor,
        k0_coefficients: torch.Tensor,
        log_k: torch.Tensor,
        currents: torch.Tensor,
    ):
        """The :class:`AllenCahnReaction` of parameters θ for a batch of currents (B,)."""
        from mechanics.phasefield.cahn_hilliard import stepped_grid
        from mechanics.phasefield.reaction import AllenCahnReaction

        free = SplineFreeEnergy(self.physics, mu_coefficients)
        mask = torch.as_tensor(self.domain.mask)
        centred = log_k - (log_k * mask).sum() / mask.sum()
        law = make_rate_law(self.rate_law, self.physics, torch.exp(centred), k0_coefficients, free)
        common = dict(
            grid=self.grid,
            free_energy=free,
            kappa_aJ_per_nm=self.physics.kappa_aJ_per_nm,
            site_density_per_nm3=self.physics.site_density_per_nm3,
            kT_aJ=self.physics.kT_aJ,
            rate_law=law,
            current_per_s=currents,
            boundary="noflux",
            corrections=self.corrections,
        )
        if self.domain.full:
            dtype = log_k.dtype
            if dtype not in self._kernel:
                self._kernel[dtype] = coherency_kernel(stepped_grid(self.grid, "noflux"), dtype)
            return AllenCahnReaction(**common, linear_kernel_GPa=self._kernel[dtype])
        return AllenCahnReaction(**common, mask=mask)

    def predict(
        self, theta: tuple[torch.Tensor, torch.Tensor, torch.Tensor], batch: Intervals
    ) -> torch.Tensor:
        """(B, h, w) composition at the end of each interval, started from ``batch.start``."""
        return self.predict_with_potential(theta, batch)[0]

    def predict_with_potential(
        self, theta: tuple[torch.Tensor, torch.Tensor, torch.Tensor], batch: Intervals
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`predict` and (B,) ν = μ_res/k_BT of each interval's start state under its first step's
        current: the reservoir potential a cell voltage measured at the start frame reads,
        V = V₀ − ν k_BT/e (same state, same time)."""
        from mechanics.phasefield.reaction import ReactionAux, acr_increment, acr_symbols

        mu_c, k0_c, log_k = theta
        currents = batch.currents_per_s
        model = self.model(mu_c, k0_c, log_k, currents[:, 0])
        sym = acr_symbols(model, batch.start)
        b = len(batch)
        zeros = torch.zeros(b, dtype=batch.start.dtype)
        no = torch.zeros(b, dtype=torch.bool)

        def run(c, nu, first, count):
            for k in range(first, first + count):
                # each step's galvanostatic current (an interval may span a missing frame between two
                # protocol segments): the one entry of the step's symbols that changes
                step_sym = dict(sym, current=currents[:, k])
                aux = ReactionAux(nu=nu, current_per_s=zeros, saturated=no, nonfinite=no)
                c, aux = acr_increment(model, c, batch.dt_s, aux, step_sym)
                nu = aux.nu
            return c, nu

        c, nu = batch.start, zeros
        done, nu_start = 0, None
        while done < self.n_steps:
            # the first step runs on its own: its ν, solved from the start state, is the start's potential
            count = 1 if done == 0 else min(self.checkpoint_every, self.n_steps - done)
            if torch.is_grad_enabled() and self.checkpoint_every < self.n_steps and done > 0:
                c, nu = checkpoint(run, c, nu, done, count, use_reentrant=False)
            else:
                c, nu = run(c, nu, done, count)
            if nu_start is None:
                nu_start = nu
            done += count
        return c, nu_start


def rate_scale_guess() -> float:
    """ln of the reference k₀ (A/m²) of LFP, the prior centre of the k₀ spline."""
    from mechanics.parameters.lfp import lfp_params

    return math.log(lfp_params().exchange_rate_A_m2)
