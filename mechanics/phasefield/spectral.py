"""Spectral helpers of the phase-field steppers: the anisotropic gradient symbol and the mirror (even)
extension that turns a periodic FFT into a cosine transform for no-flux boundaries. The wavevectors
come from the grid (:meth:`mechanics.grid.Grid.axis_wavevectors`).

Fields have shape ``(*batch, *grid)`` with ``d = len(grid)`` spatial axes last; spectra use the real
FFT over those axes, shape ``(*batch, *rfft_shape)`` with ``rfft_shape = (*grid[:-1], grid[-1]//2 + 1)``.
Units: lengths in nm, wavenumbers in rad/nm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def spatial_axes(d: int) -> tuple[int, ...]:
    return tuple(range(-d, 0))


def gradient_symbol(ks: Sequence[torch.Tensor], kappa: torch.Tensor) -> torch.Tensor:
    """G(k) = Σ_i κ_i k_i², the Fourier symbol of −∇·(κ∇) for a diagonal κ.

    ``kappa``: (*batch, d) in aJ/nm (or any unit; G carries kappa's unit per nm²).
    Returns (*batch, *rfft_shape).
    """
    d = len(ks)
    kappa = torch.as_tensor(kappa, dtype=ks[0].dtype, device=ks[0].device)
    if kappa.ndim == 0:
        kappa = kappa.expand(d)
    batch = kappa.shape[:-1]
    out = 0
    for i, k in enumerate(ks):
        out = out + kappa[..., i].reshape(*batch, *([1] * d)) * k**2
    return out


def k_squared(ks: Sequence[torch.Tensor]) -> torch.Tensor:
    out = 0
    for k in ks:
        out = out + k**2
    return out


def per_element(value: torch.Tensor | float, d: int, *, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-batch-element parameter of shape (*batch,) to (*batch, 1, ..., 1) (d ones)."""
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return value.reshape(*value.shape, *([1] * d))


def mirror(c: torch.Tensor, d: int) -> torch.Tensor:
    """Even (half-sample symmetric) extension along the last d axes: (…, n) → (…, 2n).

    A periodic FFT of the mirrored field is a DCT-II of the original, so gradients vanish at the
    cell faces of the boundary: zero flux.
    """
    for axis in spatial_axes(d):
        c = torch.cat([c, torch.flip(c, dims=(axis,))], dim=axis)
    return c


def crop(c: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    d = len(shape)
    index = (Ellipsis, *[slice(0, n) for n in shape])
    assert c.ndim >= d
    return c[index]


def rfft(c: torch.Tensor, d: int) -> torch.Tensor:
    return torch.fft.rfftn(c, dim=spatial_axes(d))


def irfft(c_hat: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    d = len(shape)
    return torch.fft.irfftn(c_hat, s=tuple(shape), dim=spatial_axes(d))


def spectral_gradient(
    c_hat: torch.Tensor, ks: Sequence[torch.Tensor], shape: Sequence[int]
) -> list[torch.Tensor]:
    """∂_i c for each spatial axis from the rfft of c (the Nyquist mode of even lengths is zeroed)."""
    out = []
    for i, k in enumerate(ks):
        if shape[i] % 2 == 0:
            k = torch.where(k.abs() >= k.abs().max(), torch.zeros_like(k), k)
        out.append(irfft(1j * k * c_hat, shape))
    return out


def scale_spectrum(c_hat: torch.Tensor, symbol: torch.Tensor) -> torch.Tensor:
    """ĉ·L(k) for a real symbol L, computed on the real view of ĉ (inductor generates no code for
    complex arithmetic, so the fused steps keep Fourier-space pointwise work real). ``symbol`` broadcasts
    on ĉ; returns a complex tensor of ĉ's shape."""
    out = torch.view_as_real(c_hat) * symbol.unsqueeze(-1)
    return torch.view_as_complex(out)


def mirror_odd(c: torch.Tensor, d: int, value: torch.Tensor | float) -> torch.Tensor:
    """Odd (half-sample antisymmetric) extension of c − value along the last d axes, plus value:
    (…, n) → (…, 2n). A periodic FFT of it is a DST-II of c − value, so c equals ``value`` on the cell faces
    of the boundary (a fixed surface composition). ``value`` broadcasts on c (e.g. (*batch, 1, …, 1))."""
    x = c - value
    for axis in spatial_axes(d):
        x = torch.cat([x, -torch.flip(x, dims=(axis,))], dim=axis)
    return x + value


def masked_divergence(c: torch.Tensor, kappa: torch.Tensor, spacing: float, open_faces: list[torch.Tensor],
                      surface: torch.Tensor | None = None, wet_faces: list[torch.Tensor] | None = None
                      ) -> torch.Tensor:
    """∇·(κ∇c) by second-order finite differences with fluxes only through open cell faces.

    Args:
      c: (*batch, *grid); kappa: (*batch, d) or (d,) per grid axis; spacing: h.
      open_faces: per axis i, a {0, 1} tensor broadcast on c: 1 where the face between cell j and j+1
        (periodic index) carries flux (both cells inside the particle, not across a no-flux grid edge).
      surface, wet_faces: optional fixed surface composition (broadcast on c) and, per axis, two {0, 1}
        tensors (faces at j+½ and j−½) marking particle cells whose face there is a wetted surface: the
        flux through it is 2κ(c_s − c_j)/h² (the value c_s sits on the face, half a cell away).

    Returns (*batch, *grid), κ's unit per length².
    """
    d = len(open_faces)
    out = torch.zeros_like(c)
    h2 = spacing * spacing
    for i, axis in enumerate(spatial_axes(d)):
        k_i = kappa[..., i].reshape(*kappa.shape[:-1], *([1] * d)) / h2
        flux = k_i * (torch.roll(c, -1, dims=axis) - c) * open_faces[i]  # face j+½
        out = out + flux - torch.roll(flux, 1, dims=axis)
        if wet_faces is not None:
            out = out + 2 * k_i * (surface - c) * (wet_faces[2 * i] + wet_faces[2 * i + 1])
    return out
