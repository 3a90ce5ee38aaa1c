"""Fracture criterion of a particle with an intrinsic flaw: pure functions, no I/O.

A particle of edge L carries an intrinsic flaw of length a₀ = f·L (flaw size proportional to particle
size, the scaling behind the critical-size arguments of Woodford, Chiang & Carter, J. Electrochem. Soc.
157, A1052 (2010) and Zhao, Pharr, Vlassak & Suo, J. Appl. Phys. 108, 073517 (2010)). It fractures when
the driving stress, the tensile stress normal to the crack plane averaged over the flaw, exceeds

    σ_c = K_Ic / (Y √(π a₀)),

Y = 1.12 for a straight edge crack in a half plane (Tada, Paris & Irwin, *The Stress Analysis of Cracks
Handbook*, 3rd ed. (2000), edge-cracked half plane). Where no K_Ic is measured it is estimated from
Griffith's energy balance in plane strain, G_c = 2γ,

    K_Ic = √(2 E γ / (1 − ν²)),

with the isotropic (Voigt-Reuss-Hill) E and ν of the crystal's stiffness.

| symbol | variable | unit |
|---|---|---|
| K_Ic | ``k_ic_MPa_sqrt_m`` | MPa·m^½ |
| a₀ | ``flaw_nm`` | nm |
| Y | ``geometry_factor`` | – |
| f | ``flaw_fraction`` | – |
| γ | ``surface_energy_J_m2`` | J/m² |
| E, ν | ``E_GPa``, ``nu`` | GPa, – |
| σ | ``stress`` (*batch, H, W, 2, 2) | GPa |
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mechanics.errors import InputError

EDGE_GEOMETRY_FACTOR = 1.12  # edge crack in a half plane (Tada, Paris & Irwin 2000)
FLAW_FRACTION = 0.1  # a₀ / L: an assumption (see docs/envelope.md), not a measured value


def _positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise InputError(name, "a positive finite number", value)
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise InputError(name, "a positive finite number", value)
    return value


def critical_stress_MPa(k_ic_MPa_sqrt_m: float, flaw_nm: float,
                        geometry_factor: float = EDGE_GEOMETRY_FACTOR) -> float:
    """σ_c = K_Ic / (Y √(π a₀)) in MPa.

    Args:
        k_ic_MPa_sqrt_m: fracture toughness K_Ic (MPa·m^½).
        flaw_nm: flaw length a₀ (nm).
        geometry_factor: Y (1.12: edge crack).

    Returns:
        The critical driving stress (MPa).

    Raises:
        InputError: a non-positive or non-finite argument.
    """
    k = _positive("k_ic_MPa_sqrt_m", k_ic_MPa_sqrt_m)
    a = _positive("flaw_nm", flaw_nm) * 1e-9
    y = _positive("geometry_factor", geometry_factor)
    return k / (y * math.sqrt(math.pi * a))


def critical_size_nm(k_ic_MPa_sqrt_m: float, driving_stress_MPa: float, flaw_fraction: float = FLAW_FRACTION,
                     safety_factor: float = 1.0, geometry_factor: float = EDGE_GEOMETRY_FACTOR) -> float:
    """Largest particle size L safe at safety factor s against a size-independent driving stress σ_d:
    σ_c(L) = K_Ic / (Y √(π f L)) = s σ_d solved for L,

        L_c = (K_Ic / (s σ_d Y))² / (π f).

    Args:
        k_ic_MPa_sqrt_m: fracture toughness K_Ic (MPa·m^½).
        driving_stress_MPa: driving stress σ_d (MPa), the same at every size.
        flaw_fraction: f = a₀ / L.
        safety_factor: s ≥ 1 (1: the size at which the particle fractures).
        geometry_factor: Y (1.12: edge crack).

    Returns:
        L_c (nm).

    Raises:
        InputError: a non-positive or non-finite argument (a compressive σ_d has no critical size).
    """
    k = _positive("k_ic_MPa_sqrt_m", k_ic_MPa_sqrt_m)
    sigma = _positive("driving_stress_MPa", driving_stress_MPa)
    f = _positive("flaw_fraction", flaw_fraction)
    s = _positive("safety_factor", safety_factor)
    y = _positive("geometry_factor", geometry_factor)
    return (k / (s * sigma * y)) ** 2 / (math.pi * f) * 1e9


def griffith_k_ic_MPa_sqrt_m(E_GPa: float, nu: float, surface_energy_J_m2: float) -> float:
    """Griffith estimate K_Ic = √(2 E γ / (1 − ν²)) (plane strain, G_c = 2γ), in MPa·m^½."""
    E = _positive("E_GPa", E_GPa) * 1e9
    g = _positive("surface_energy_J_m2", surface_energy_J_m2)
    if not (-1.0 < nu < 0.5):
        raise InputError("nu", "a Poisson ratio in (-1, 0.5)", nu)
    return math.sqrt(2.0 * E * g / (1.0 - nu**2)) / 1e6


def isotropic_moduli(voigt_GPa) -> tuple[float, float]:
    """Voigt-Reuss-Hill isotropic Young's modulus (GPa) and Poisson ratio of a 6×6 Voigt stiffness.

    Hill, Proc. Phys. Soc. A 65, 349 (1952): K and G are the means of the Voigt (uniform strain) and
    Reuss (uniform stress) bounds; E = 9KG/(3K + G), ν = (3K − 2G)/(2(3K + G)).
    """
    c = np.asarray(voigt_GPa, dtype=float)
    if c.shape != (6, 6):
        raise InputError("voigt_GPa", "a 6x6 Voigt matrix", c.shape)
    s = np.linalg.inv(c)
    k_v = (c[0, 0] + c[1, 1] + c[2, 2] + 2 * (c[0, 1] + c[1, 2] + c[0, 2])) / 9
    g_v = (c[0, 0] + c[1, 1] + c[2, 2] - (c[0, 1] + c[1, 2] + c[0, 2])
           + 3 * (c[3, 3] + c[4, 4] + c[5, 5])) / 15
    k_r = 1.0 / (s[0, 0] + s[1, 1] + s[2, 2] + 2 * (s[0, 1] + s[1, 2] + s[0, 2]))
    g_r = 15.0 / (4 * (s[0, 0] + s[1, 1] + s[2, 2]) - 4 * (s[0, 1] + s[1, 2] + s[0, 2])
                  + 3 * (s[3, 3] + s[4, 4] + s[5, 5]))
    k, g = 0.5 * (k_v + k_r), 0.5 * (g_v + g_r)
    return 9 * k * g / (3 * k + g), (3 * k - 2 * g) / (2 * (3 * k + g))


def _segment_means(field: torch.Tensor, width: float) -> torch.Tensor:
    """Means of ``field`` (*batch, H, W) over segments [s, s + width] (cell units, piecewise-constant
    cells) along the last axis, for integer starts s = 0 … ⌊W − width⌋: (*batch, H, S)."""
    n = field.shape[-1]
    cum = torch.nn.functional.pad(torch.cumsum(field, dim=-1), (1, 0))  # C[k] = Σ_{j<k}
    starts = torch.arange(0, int(math.floor(n - width + 1e-9)) + 1, device=field.device)
    ends = starts.to(field.dtype) + width
    k = torch.clamp(torch.floor(ends + 1e-9).long(), max=n)
    frac = (ends - k.to(field.dtype)).clamp_min(0)
    tail = torch.where(k < n, field[..., torch.clamp(k, max=n - 1)], torch.zeros_like(field[..., :1]))
    upper = cum[..., k] + frac * tail
    return (upper - cum[..., starts]) / width


def flaw_averaged_stress(stress: torch.Tensor, flaw_cells: float) -> torch.Tensor:
    """Largest tensile stress normal to a straight flaw of length a₀, averaged over the flaw, (*batch,).

    Flaws lie along the grid axes (for an orthorhombic platelet imaged in the a–c plane the misfit
    stresses are aligned with a and c): a flaw along grid axis 1 is opened by σ₀₀, one along axis 0 by
    σ₁₁. Every straight segment of length a₀ inside the field is tried, from either end of each line
    (so edge flaws that start at a surface are among them); the largest mean wins. For a₀ → one cell the
    result tends to the largest normal stress of any cell; for a uniform field it is that field.

    Args:
        stress: (*batch, H, W, 2, 2) stress in grid axes (GPa), the particle only (void cropped).
        flaw_cells: a₀ in cells, 1 ≤ a₀ ≤ min(H, W).

    Returns:
        (*batch,) driving stress (GPa); negative when every flaw is closed (compressive).

    Raises:
        InputError: a₀ outside [1, min(H, W)] cells or a field of the wrong shape.
    """
    if stress.ndim < 4 or tuple(stress.shape[-2:]) != (2, 2):
        raise InputError("stress", "a (*batch, H, W, 2, 2) tensor", tuple(stress.shape))
    h, w = stress.shape[-4], stress.shape[-3]
    if not (isinstance(flaw_cells, (int, float)) and 1.0 <= flaw_cells <= min(h, w)):
        raise InputError("flaw_cells", f"a flaw length in cells within [1, {min(h, w)}]", flaw_cells)
    best = []
    # σ₀₀ opens flaws running along axis 1 (the last spatial axis); σ₁₁ flaws along axis 0
    for comp, along_last in ((stress[..., 0, 0], True), (stress[..., 1, 1], False)):
        f = comp if along_last else comp.transpose(-1, -2)
        for g in (f, torch.flip(f, dims=(-1,))):
            best.append(_segment_means(g, float(flaw_cells)).amax(dim=(-2, -1)))
    return torch.stack(best).amax(dim=0)


__all__ = [
    "EDGE_GEOMETRY_FACTOR",
    "FLAW_FRACTION",
    "critical_size_nm",
    "critical_stress_MPa",
    "flaw_averaged_stress",
    "griffith_k_ic_MPa_sqrt_m",
    "isotropic_moduli",
]
