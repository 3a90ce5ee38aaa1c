"""Homogeneous (bulk) free-energy densities of the phase-field models.

Every model is a frozen dataclass whose parameters broadcast against the field ``c`` of shape
``(*batch, *grid)`` (build per-element parameters with :func:`mechanics.phasefield.spectral.per_element`).
Each gives the density f(c), its derivative f'(c) (the bulk chemical potential per volume) and the
curvature f''(c), all per unit volume: aJ/nm³ = GPa in the internal units of ``mechanics.units``
(benchmarks with dimensionless units use the same code with dimensionless numbers).

- :class:`RegularSolution`: ρ_s [k_BT (c ln c + (1−c) ln(1−c)) + Ω c(1−c)]
  (Bai, Cogswell, Bazant, Nano Lett. 11, 4890 (2011));
- :class:`DoubleWell`: ρ (c − c_α)² (c_β − c)² (PFHub BM1, Jokisaari et al., Comput. Mater. Sci. 126,
  139 (2017));
- :class:`Polynomial`: w Σ_j a_j c^j (PFHub BM4, Jokisaari et al., Comput. Mater. Sci. 149, 336 (2018)).

The derivatives are written by hand and tested against autograd.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# c is kept away from 0 and 1 inside the logarithms so f, f', f'' stay finite (and differentiable);
# 1e-7 keeps ln(c) representable in float32.
_LOG_EPS = 1.0e-7


def _clamp01(c: torch.Tensor) -> torch.Tensor:
    return c.clamp(_LOG_EPS, 1.0 - _LOG_EPS)


@dataclass(frozen=True)
class RegularSolution:
    """Regular-solution free energy per volume, f = ρ_s [kT (c ln c + (1−c) ln(1−c)) + Ω c(1−c)].

    Symbols: ρ_s ``site_density_per_nm3`` (nm⁻³), kT ``kT_aJ`` (aJ), Ω ``omega_aJ`` (aJ per site).
    f' = ρ_s [kT ln(c/(1−c)) + Ω (1 − 2c)], f'' = ρ_s [kT / (c(1−c)) − 2Ω].
    """

    site_density_per_nm3: torch.Tensor | float
    kT_aJ: torch.Tensor | float
    omega_aJ: torch.Tensor | float

    def density(self, c: torch.Tensor) -> torch.Tensor:
        x = _clamp01(c)
        entropy = x * torch.log(x) + (1 - x) * torch.log1p(-x)
        return self.site_density_per_nm3 * (self.kT_aJ * entropy + self.omega_aJ * c * (1 - c))

    def derivative(self, c: torch.Tensor) -> torch.Tensor:
        x = _clamp01(c)
        return self.site_density_per_nm3 * (
            self.kT_aJ * (torch.log(x) - torch.log1p(-x)) + self.omega_aJ * (1 - 2 * c)
        )

    def curvature(self, c: torch.Tensor) -> torch.Tensor:
        x = _clamp01(c)
        return self.site_density_per_nm3 * (self.kT_aJ / (x * (1 - x)) - 2 * self.omega_aJ)

    def stabilization(self) -> torch.Tensor | float:
        """A constant S with S ≥ −min f'' (the largest concave curvature): ρ_s (2Ω − 4kT)⁺ + ρ_s kT."""
        return self.site_density_per_nm3 * (
            torch.clamp(torch.as_tensor(2 * self.omega_aJ - 4 * self.kT_aJ), min=0.0) + self.kT_aJ
        )


@dataclass(frozen=True)
class DoubleWell:
    """f = ρ (c − c_α)² (c_β − c)² (PFHub benchmark 1: ρ = 5, c_α = 0.3, c_β = 0.7).

    f' = 2ρ (c − c_α)(c_β − c)(c_α + c_β − 2c), f'' = 2ρ [(c_β − c)² − 4(c − c_α)(c_β − c) + (c − c_α)²].
    """

    rho: torch.Tensor | float = 5.0
    c_alpha: torch.Tensor | float = 0.3
    c_beta: torch.Tensor | float = 0.7

    def density(self, c: torch.Tensor) -> torch.Tensor:
        return self.rho * (c - self.c_alpha) ** 2 * (self.c_beta - c) ** 2

    def derivative(self, c: torch.Tensor) -> torch.Tensor:
        return 2 * self.rho * (c - self.c_alpha) * (self.c_beta - c) * (self.c_alpha + self.c_beta - 2 * c)

    def curvature(self, c: torch.Tensor) -> torch.Tensor:
        a = c - self.c_alpha
        b = self.c_beta - c
        return 2 * self.rho * (b**2 - 4 * a * b + a**2)

    def stabilization(self) -> torch.Tensor | float:
        """−min f'' = ρ (c_β − c_α)² (attained at the midpoint)."""
        return self.rho * (self.c_beta - self.c_alpha) ** 2


# PFHub benchmark 4 bulk polynomial coefficients a_0..a_10 (Jokisaari et al. 2018)
PFHUB_BM4_COEFFICIENTS = (
    0.0, 0.0, 8.072789087, -81.24549382, 408.0297321, -1244.129167, 2444.046270, -3120.635139,
    2506.663551, -1151.003178, 230.2006355,
)


@dataclass(frozen=True)
class Polynomial:
    """f = w Σ_j a_j c^j (Horner evaluation); PFHub BM4 with ``w = 0.1`` aJ/nm³ and
    :data:`PFHUB_BM4_COEFFICIENTS`."""

    w: torch.Tensor | float = 0.1
    coefficients: tuple[float, ...] = PFHUB_BM4_COEFFICIENTS

    def density(self, c: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(c)
        for a in reversed(self.coefficients):
            out = out * c + a
        return self.w * out

    def derivative(self, c: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(c)
        for j in range(len(self.coefficients) - 1, 0, -1):
            out = out * c + j * self.coefficients[j]
        return self.w * out

    def curvature(self, c: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(c)
        for j in range(len(self.coefficients) - 1, 1, -1):
            out = out * c + j * (j - 1) * self.coefficients[j]
        return self.w * out

    def stabilization(self) -> torch.Tensor | float:
        """−min f'' over c ∈ [0, 1] (sampled at 10⁴ points, +1 % for what the sampling misses)."""
        grid = torch.linspace(0, 1, 10001, dtype=torch.float64)
        return 1.01 * float(torch.clamp(-self.curvature(grid).min(), min=0.0))
