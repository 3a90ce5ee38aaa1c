"""Metrics of phase-field runs: pure functions on fields, plus small observers that keep running records.

Fields are (*batch, *grid) (scalars) or (*batch, *grid, d, d) (tensors, GPa, tensor shear).
"""

from __future__ import annotations

import math

import torch

from mechanics.errors import InputError
from mechanics.grid import Grid
from mechanics.phasefield import spectral


def max_principal_stress(stress: torch.Tensor) -> torch.Tensor:
    """Largest principal stress (GPa), (*batch, *grid); 2×2 closed form, eigvalsh for 3×3.

    σ₁ = (σ₀₀ + σ₁₁)/2 + √(((σ₀₀ − σ₁₁)/2)² + σ₀₁²) in 2-D.
    """
    if stress.shape[-1] == 2:
        mean = 0.5 * (stress[..., 0, 0] + stress[..., 1, 1])
        half = 0.5 * (stress[..., 0, 0] - stress[..., 1, 1])
        return mean + torch.sqrt(half**2 + stress[..., 0, 1] ** 2)
    return torch.linalg.eigvalsh(0.5 * (stress + stress.transpose(-1, -2)))[..., -1]


def elastic_energy_density(
    stress: torch.Tensor, strain: torch.Tensor, eigenstrain: torch.Tensor
) -> torch.Tensor:
    """w = ½ σ : (ε − ε⁰) (GPa = aJ/nm³; ×1e3 for MJ/m³), (*batch, *grid)."""
    return 0.5 * (stress * (strain - eigenstrain)).sum(dim=(-2, -1))


def phase_separation_index(c: torch.Tensor, d: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Spatial standard deviation of c, (*batch,): 0 for a solid solution, ½ for two pure phases of
    equal area."""
    axes = spectral.spatial_axes(d)
    if mask is None:
        return c.std(dim=axes, unbiased=False)
    w = mask.to(c.dtype)
    n = w.sum()
    mean = (c * w).sum(dim=axes, keepdim=True) / n
    return torch.sqrt((((c - mean) ** 2) * w).sum(dim=axes) / n)


def interface_normal_angle_deg(c: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Mean angle (degrees, [0, 90]) between the interface normal and grid axis 0, (*batch,).

    Per cell the normal is ∇c (spectral gradient of the periodic field), folded into the first quadrant,
    θ = atan2(|∂₁c|, |∂₀c|), and averaged with weight |∇c|² (the interfaces dominate). Folding makes the
    mirror-related families ±θ (both present in an orthorhombic crystal) count alike. For the a–c
    platelet: 0° = interfaces normal to a, 90° = normal to c. Meaningful once the field phase separates.

    Args:
      c: (*batch, *grid.shape) field on ``grid``.
      grid: a 2-D :class:`mechanics.Grid`.
    """
    d = 2
    if grid.ndim != d or tuple(c.shape[-d:]) != grid.shape:
        raise InputError("c", f"a (*batch, {', '.join(map(str, grid.shape))}) field on a 2-D grid",
                         tuple(c.shape))
    shape = grid.shape
    ks = grid.axis_wavevectors(dtype=c.dtype, device=c.device)
    g0, g1 = spectral.spectral_gradient(spectral.rfft(c, d), ks, shape)
    weight = g0**2 + g1**2
    theta = torch.rad2deg(torch.atan2(g1.abs(), g0.abs()))
    axes = spectral.spatial_axes(d)
    return (theta * weight).sum(dim=axes) / weight.sum(dim=axes).clamp_min(1e-30)


def critical_size_nm(curvature: float, kappa: float, kernel: float = 0.0) -> float:
    """Period below which a uniform state is linearly stable in a periodic cell: every k ≥ 2π/L
    satisfies f'' + κk² + B > 0, i.e. L_c = 2π √(κ / −(f'' + B)); 0 when f'' + B ≥ 0 (stable at any
    size). Per-volume units throughout (κ in energy·length⁻¹, f'' and B in energy·length⁻³)."""
    total = curvature + kernel
    if total >= 0:
        return 0.0
    return 2 * math.pi * math.sqrt(kappa / -total)
