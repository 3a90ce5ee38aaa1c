"""The free-platelet operator: the contract its solvers share and the Q1 element pieces they are built of.

A traction-free platelet is the set of mask pixels of an (H, W) image; every pixel is one bilinear
square (Q1) element of side h (``spacing_nm``) with the in-plane stiffness C (2×2×2×2, GPa, grid axes
0 and 1; generalized plane stress or plane strain is chosen by whoever reduces the 3-D stiffness) and a
uniform eigenstrain ε⁰. The displacement minimises Π(u) = ½ ∫ (ε(u) − ε⁰) : C : (ε(u) − ε⁰) dA, so the
discrete equations are K u = L e⁰ (Hughes, *The Finite Element Method*, Dover (2000), ch. 3-4). The
strain per pixel is the element mean B(centre) u: a linear map S from eigenstrain fields to strain fields.

:class:`PlateletOperator` is that map as a contract (ASE's calculator is the model: a few attributes and
methods, configured at construction, interchangeable). Two implementations discretise it identically:

| class | how | where |
|---|---|---|
| :class:`~mechanics.elasticity.platelet_lu.PlateletLU` | sparse LU, factorised once | CPU (scipy) |
| :class:`~mechanics.elasticity.platelet_pcg.PlateletPCG` | matrix-free FFT-preconditioned CG | any device |

Shapes: eigenstrain and strain (n, H, W, 2, 2), grid-axis components, tensor shear (ε_01 = ½ γ_01),
strain zero outside the mask; stiffness in GPa, lengths in nm.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from mechanics.errors import InputError

# 2×2 Gauss points on the unit square, local coordinates (s along grid axis 0, t along axis 1)
GAUSS = 0.5 + np.array([-1.0, 1.0]) / (2.0 * np.sqrt(3.0))
# element corners in local (s, t) order: (0,0), (1,0), (1,1), (0,1)
CORNERS = np.array([[0, 0], [1, 0], [1, 1], [0, 1]])


class PlateletOperator(Protocol):
    """Total strain S[ε⁰] of a traction-free platelet for eigenstrain fields ε⁰ (module docstring).

    An implementation is configured completely at construction (mask, stiffness, spacing, element
    weights, tolerances) and not reconfigured afterwards; it may keep running counters and the last
    solution as a warm start. Callers use only what is listed here and never ask which implementation
    they hold.

    Attributes:
      mask: (H, W) bool numpy array, True on the elements.
      shape: (H, W).
      spacing_nm: pixel pitch h (nm).
      device: the torch device :meth:`solve` and :meth:`strain` work on (their inputs may live
        elsewhere; results come back on the input's device).
      dtype: the working precision of the solves.
    """

    mask: np.ndarray
    shape: tuple[int, int]
    spacing_nm: float
    device: torch.device
    dtype: torch.dtype

    def solve(self, eigenstrain: torch.Tensor, *, rtol: float | None = None) -> torch.Tensor:
        """Strain of eigenstrain fields, without autograd.

        Args:
          eigenstrain: (n, H, W, 2, 2) tensor.
          rtol: stopping tolerance of an iterative operator for this call (default: its own); a direct
            operator is exact to round-off and ignores it.

        Returns:
          (n, H, W, 2, 2) strain in the input's dtype and on its device.
        """
        ...

    def strain(self, eigenstrain: torch.Tensor, *, rtol: float | None = None) -> torch.Tensor:
        """:meth:`solve` with autograd: the backward pass is the implicit adjoint Lᵀ K⁻¹ Bᵀ (one more
        solve with the same operator, K being symmetric)."""
        ...

    def apply(self, eigenstrain: np.ndarray) -> np.ndarray:
        """Strain (n, H, W, 2, 2) of eigenstrain (n, H, W, 2, 2), numpy float64 in and out."""
        ...

    def apply_adjoint(self, strain_grad: np.ndarray) -> np.ndarray:
        """The exact transpose of :meth:`apply` (Frobenius inner product of tensor fields)."""
        ...

    def work(self) -> dict[str, int]:
        """Running totals of the work done so far, keyed by metric name, for reports (an iterative
        solver counts solves and iterations; a direct one reports nothing beyond its factorisation)."""
        ...


def shape_gradients(s: float, t: float, h: float) -> np.ndarray:
    """∂N_a/∂x_i at local (s, t) for the four corners: shape (4, 2), 1/nm."""
    ds = np.array([-(1 - t), (1 - t), t, -t])
    dt = np.array([-(1 - s), -s, s, (1 - s)])
    return np.stack([ds, dt], axis=1) / h


def b_matrix(s: float, t: float, h: float) -> np.ndarray:
    """Strain-displacement matrix (3, 8): [ε00, ε11, 2ε01] from DOFs [u0, u1] per corner."""
    grad = shape_gradients(s, t, h)
    b = np.zeros((3, 8))
    b[0, 0::2] = grad[:, 0]
    b[1, 1::2] = grad[:, 1]
    b[2, 0::2] = grad[:, 1]
    b[2, 1::2] = grad[:, 0]
    return b


def voigt_2d(stiffness_2d: np.ndarray) -> np.ndarray:
    """3×3 matrix D with σ_voigt = D · [ε00, ε11, 2ε01] from an in-plane tensor C (2, 2, 2, 2) in GPa."""
    c = np.asarray(stiffness_2d, dtype=float)
    pairs = [(0, 0), (1, 1), (0, 1)]
    return np.array([[c[i, j, k, l] for (k, l) in pairs] for (i, j) in pairs])


def platelet_inputs(mask, stiffness_2d, spacing_nm) -> tuple[np.ndarray, np.ndarray, float]:
    """Checked numpy forms of a platelet's mask, stiffness and spacing.

    Args:
      mask: (H, W) boolean array or tensor with at least one True pixel.
      stiffness_2d: real array or tensor (its shape is the caller's to check).
      spacing_nm: the pixel pitch, a positive finite number.

    Returns:
      (mask as bool numpy, stiffness as float numpy, spacing as float).

    Raises:
      InputError: naming ``mask``, ``stiffness_2d`` or ``spacing_nm``.
    """
    expected = "a 2-D boolean array with at least one True pixel"
    try:
        mask_np = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask, dtype=bool)
    except (TypeError, ValueError):
        raise InputError("mask", expected, type(mask).__name__) from None
    if mask_np.ndim != 2 or not mask_np.any():
        raise InputError("mask", expected, f"shape {mask_np.shape}, {int(mask_np.sum())} True")
    try:
        h = float(spacing_nm)
    except (TypeError, ValueError):
        raise InputError("spacing_nm", "a positive finite pixel pitch in nm", spacing_nm) from None
    if not (np.isfinite(h) and h > 0):
        raise InputError("spacing_nm", "a positive finite pixel pitch in nm", spacing_nm)
    c = stiffness_2d.detach().cpu() if isinstance(stiffness_2d, torch.Tensor) else stiffness_2d
    try:
        c = np.asarray(c, dtype=float)
    except (TypeError, ValueError):
        raise InputError("stiffness_2d", "a real stiffness tensor in GPa", type(c).__name__) from None
    if not np.all(np.isfinite(c)):
        raise InputError("stiffness_2d", "finite values (GPa)", "non-finite entries")
    return mask_np, c, h


def check_field(x, shape: tuple[int, int], field: str) -> torch.Tensor:
    """``x`` as a tensor of shape (n, H, W, 2, 2); InputError naming ``field`` otherwise."""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.dim() != 5 or tuple(t.shape[1:]) != (*shape, 2, 2):
        raise InputError(field, f"shape (n, {shape[0]}, {shape[1]}, 2, 2)", tuple(t.shape))
    return t
