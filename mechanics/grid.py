"""Regular periodic grids and their discrete wavevectors: the one place that turns a shape and a
spacing into Fourier modes.

A :class:`Grid` is ``shape`` cells of edge ``spacing_nm`` (nm) along every axis (1, 2 or 3 axes); fields
live at cell centres. The box is periodic with edge L_i = N_i h. Discrete Fourier transforms follow
``torch.fft``: the mode with integer index m_i along axis i has wavevector k_i = 2π m_i / L_i (rad/nm),
m_i in ``fftfreq`` order (the real-to-complex ``rfftn`` keeps m ≥ 0 along the last axis).

Two forms of the same modes are offered, each computed the way its users always have (they agree to
one unit in the last place; merging them would change every result at round-off):
:meth:`Grid.frequencies` (the phase per cell q_i = k_i h, for the lattice operators of the elastic
solvers) with :meth:`Grid.wavevectors` (k = q/h stacked, for the coherency kernel), and
:meth:`Grid.axis_wavevectors` (k_i = 2π·fftfreq(N_i, h) per axis, for the spectral phase-field steppers).
Elastic solvers need 2 or 3 axes and say so; the phase-field steppers also run on 1-D grids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mechanics.errors import InputError


def next_fast_size(n: int) -> int:
    """Smallest integer ≥ n whose prime factors are 2, 3 and 5 (a fast FFT length)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


@dataclass(frozen=True)
class Grid:
    """A periodic box of ``shape`` cells with edge ``spacing_nm`` (nm), 1-D, 2-D or 3-D.

    Fields:
      shape: cells per axis, 1 to 3 positive integers.
      spacing_nm: cell edge h in nm (> 0), the same along every axis. (A model in other length units,
        e.g. the dimensionless PFHub benchmarks, reads it as its own length unit.)
    """

    shape: tuple[int, ...]
    spacing_nm: float = 1.0

    def __post_init__(self) -> None:
        try:
            shape = tuple(int(n) for n in self.shape)
        except (TypeError, ValueError):
            raise InputError("shape", "a tuple of 1 to 3 positive integers", self.shape) from None
        if len(shape) not in (1, 2, 3) or any(n < 1 for n in shape) or any(
            int(n) != n for n in self.shape
        ):
            raise InputError("shape", "a tuple of 1 to 3 positive integers", self.shape)
        object.__setattr__(self, "shape", shape)
        try:
            h = float(self.spacing_nm)
        except (TypeError, ValueError):
            raise InputError("spacing_nm", "a positive finite number (nm)", self.spacing_nm) from None
        if not math.isfinite(h) or h <= 0:
            raise InputError("spacing_nm", "a positive finite number (nm)", self.spacing_nm)
        object.__setattr__(self, "spacing_nm", h)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def n_cells(self) -> int:
        return math.prod(self.shape)

    @property
    def cell_volume(self) -> float:
        """h^d: nm³ in 3-D, nm² (area per nm of thickness) in 2-D, nm in 1-D."""
        return self.spacing_nm**self.ndim

    @property
    def volume(self) -> float:
        """Box volume N_cells h^d (nm^d)."""
        return self.n_cells * self.cell_volume

    @property
    def rfft_shape(self) -> tuple[int, ...]:
        """Shape of ``torch.fft.rfftn`` of a field on this grid (last axis halved)."""
        return (*self.shape[:-1], self.shape[-1] // 2 + 1)

    def frequencies(
        self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None, rfft: bool = True
    ) -> list[torch.Tensor]:
        """Phase advance per cell q_i = k_i h (rad) along each axis, each shaped to broadcast.

        Returns d tensors; tensor i has shape (1, ..., n_i, ..., 1) with n_i = N_i (or N_last//2+1 for
        the last axis when ``rfft``), values in [-π, π).
        """
        out = []
        d = self.ndim
        for i, n in enumerate(self.shape):
            if rfft and i == d - 1:
                m = torch.fft.rfftfreq(n, dtype=dtype, device=device) * n
            else:
                m = torch.fft.fftfreq(n, dtype=dtype, device=device) * n
            view = [1] * d
            view[i] = m.numel()
            out.append((2.0 * math.pi / n * m).reshape(view))
        return out

    def wavevectors(
        self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None, rfft: bool = True
    ) -> torch.Tensor:
        """Continuous wavevectors k (rad/nm) on the FFT grid, shape (*fft_shape, d).

        ``fft_shape`` is :attr:`rfft_shape` when ``rfft`` else :attr:`shape`. The Nyquist mode of an
        even axis carries k = -π/h (``fftfreq`` convention).
        """
        q = self.frequencies(dtype=dtype, device=device, rfft=rfft)
        fft_shape = self.rfft_shape if rfft else self.shape
        return torch.stack([qi.expand(fft_shape) / self.spacing_nm for qi in q], dim=-1)

    def axis_wavevectors(
        self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None, rfft: bool = True
    ) -> list[torch.Tensor]:
        """Wavevector components k_i = 2π·fftfreq(N_i, h) (rad/nm), one tensor per axis, shaped to broadcast.

        Tensor i has shape (1, ..., n_i, ..., 1) with n_i = N_i (or N_last//2+1 for the last axis when
        ``rfft``, from ``rfftfreq``); the Nyquist mode of an even axis carries k = -π/h except on the
        rfft axis (+π/h).
        """
        d = self.ndim
        out = []
        for i, n in enumerate(self.shape):
            if rfft and i == d - 1:
                k = torch.fft.rfftfreq(n, d=self.spacing_nm, dtype=dtype, device=device) * (2 * math.pi)
            else:
                k = torch.fft.fftfreq(n, d=self.spacing_nm, dtype=dtype, device=device) * (2 * math.pi)
            view = [1] * d
            view[i] = k.numel()
            out.append(k.reshape(view))
        return out

    def coordinates_nm(
        self,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        centered: bool = True,
    ) -> torch.Tensor:
        """Cell-centre coordinates (nm), shape (*shape, d).

        With ``centered`` the origin is the box centre (x_i = (j + ½ − N_i/2) h), else the box corner
        (x_i = (j + ½) h).
        """
        axes = []
        for n in self.shape:
            x = (torch.arange(n, dtype=dtype, device=device) + 0.5) * self.spacing_nm
            if centered:
                x = x - 0.5 * n * self.spacing_nm
            axes.append(x)
        mesh = torch.meshgrid(*axes, indexing="ij")
        return torch.stack(mesh, dim=-1)
