"""Anisotropic stiffness tensors in the crystal frame, batched, with 2-D reductions.

Conventions: crystal axes (a, b, c) = (0, 1, 2); Voigt order (11, 22, 33, 23, 13, 12) with engineering
shear strain, so σ_V = C_V ε_V with ε_V = (ε11, ε22, ε33, 2ε23, 2ε13, 2ε12). Internally the solvers use
Mandel vectors (shear components times √2), in which the double contraction A:B is the plain dot
product and the stiffness is a symmetric m × m matrix (m = 6 in 3-D, 3 in 2-D).

2-D reductions for in-plane crystal axes (p, q), out-of-plane axis o:
  plane strain            ε_oj = 0:  C2_ijkl = C_ijkl, i, j, k, l ∈ {p, q}
  generalized plane stress σ_oj = 0:  C2 = [S_in]⁻¹, S = C_V⁻¹ the Voigt compliance and S_in its
                                      (pp, qq, pq) block (eliminates the out-of-plane strains exactly).
In 2-D only the in-plane eigenstrain enters: plane strain takes ε⁰_oj = 0, plane stress makes the
out-of-plane eigenstrain irrelevant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mechanics.errors import InputError

# Voigt index of the symmetric pair (i, j) in 3-D, and the pairs in Voigt/Mandel order for d = 2, 3.
_VOIGT_3D = {
    (0, 0): 0, (1, 1): 1, (2, 2): 2, (1, 2): 3, (2, 1): 3, (0, 2): 4, (2, 0): 4, (0, 1): 5, (1, 0): 5,
}
PAIRS = {2: ((0, 0), (1, 1), (0, 1)), 3: ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))}
PLANES = ("strain", "stress")


def mandel_weights(d: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """w_a = 1 for normal, √2 for shear components (Mandel order of :data:`PAIRS`)."""
    return torch.tensor([1.0 if i == j else math.sqrt(2.0) for i, j in PAIRS[d]], dtype=dtype, device=device)


def tensor_to_mandel(t: torch.Tensor, d: int) -> torch.Tensor:
    """Symmetric (..., d, d) tensor → Mandel vector (..., m)."""
    w = mandel_weights(d, t.dtype, t.device)
    return torch.stack([t[..., i, j] for i, j in PAIRS[d]], dim=-1) * w


def mandel_to_tensor(v: torch.Tensor, d: int) -> torch.Tensor:
    """Mandel vector (..., m) → symmetric tensor (..., d, d)."""
    w = mandel_weights(d, v.dtype, v.device)
    s = v / w
    rows = []
    index = {p: a for a, p in enumerate(PAIRS[d])}
    for i in range(d):
        rows.append(torch.stack([s[..., index[(min(i, j), max(i, j))]] for j in range(d)], dim=-1))
    return torch.stack(rows, dim=-2)


def voigt_to_mandel(voigt: torch.Tensor) -> torch.Tensor:
    """Voigt stiffness (..., m, m) (engineering shear) → Mandel matrix (..., m, m)."""
    m = voigt.shape[-1]
    d = 3 if m == 6 else 2
    w = mandel_weights(d, voigt.dtype, voigt.device)
    return voigt * w[:, None] * w[None, :]


def voigt_to_tensor(voigt: torch.Tensor) -> torch.Tensor:
    """Voigt stiffness (..., m, m) → fourth-order tensor (..., d, d, d, d), m = 6 (d = 3) or 3 (d = 2)."""
    m = voigt.shape[-1]
    d = 3 if m == 6 else 2
    index = {}
    for a, (i, j) in enumerate(PAIRS[d]):
        index[(i, j)] = index[(j, i)] = a
    flat = [index[(i, j)] for i in range(d) for j in range(d)]
    idx = torch.tensor(flat, device=voigt.device)
    t = voigt.index_select(-2, idx).index_select(-1, idx)
    return t.reshape(*voigt.shape[:-2], d, d, d, d)


def _as_tensor(value, field: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value
    else:
        try:
            t = torch.as_tensor(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError):
            raise InputError(field, "a real (..., 6, 6) Voigt matrix in GPa", value) from None
    if not (t.is_floating_point()):
        t = t.to(torch.float64)
    return t


def check_plane_axes(plane: str, axes) -> tuple[int, int]:
    if plane not in PLANES:
        raise InputError("plane", "'strain' or 'stress'", plane)
    try:
        p, q = (int(a) for a in axes)
    except (TypeError, ValueError):
        raise InputError("axes", "two distinct crystal axes from {0, 1, 2}", axes) from None
    if p == q or p not in (0, 1, 2) or q not in (0, 1, 2):
        raise InputError("axes", "two distinct crystal axes from {0, 1, 2}", axes)
    return p, q


@dataclass(frozen=True)
class Stiffness:
    """Elastic stiffness in the crystal frame, Voigt 6×6 in GPa, optionally batched.

    Fields:
      voigt_GPa: tensor (*batch, 6, 6), symmetric, GPa, Voigt order (11, 22, 33, 23, 13, 12).
    """

    voigt_GPa: torch.Tensor

    def __post_init__(self) -> None:
        v = _as_tensor(self.voigt_GPa, "voigt_GPa")
        if v.ndim < 2 or tuple(v.shape[-2:]) != (6, 6):
            raise InputError("voigt_GPa", "a (..., 6, 6) Voigt matrix in GPa", tuple(v.shape))
        if v.is_complex():
            raise InputError("voigt_GPa", "a real Voigt matrix", v.dtype)
        with torch.no_grad():
            if not torch.isfinite(v).all():
                raise InputError("voigt_GPa", "finite entries", "non-finite values")
            scale = v.abs().amax().clamp_min(1e-300)
            if (v - v.transpose(-1, -2)).abs().amax() > 1e-8 * scale:
                raise InputError("voigt_GPa", "a symmetric Voigt matrix", "an asymmetric matrix")
        object.__setattr__(self, "voigt_GPa", v)

    # ---- constructors -------------------------------------------------------------------------
    @classmethod
    def from_voigt(cls, voigt_GPa) -> Stiffness:
        """From a (6, 6) or (*batch, 6, 6) Voigt matrix in GPa (numpy, list or torch; torch keeps its
        dtype, device and autograd graph, anything else becomes float64)."""
        return cls(_as_tensor(voigt_GPa, "voigt_GPa"))

    @classmethod
    def orthorhombic(
        cls,
        *,
        C11_GPa: float,
        C22_GPa: float,
        C33_GPa: float,
        C12_GPa: float,
        C13_GPa: float,
        C23_GPa: float,
        C44_GPa: float,
        C55_GPa: float,
        C66_GPa: float,
    ) -> Stiffness:
        """Nine independent constants (GPa); C44 = bc shear, C55 = ac shear, C66 = ab shear."""
        v = np.zeros((6, 6))
        v[0, 0], v[1, 1], v[2, 2] = C11_GPa, C22_GPa, C33_GPa
        v[0, 1] = v[1, 0] = C12_GPa
        v[0, 2] = v[2, 0] = C13_GPa
        v[1, 2] = v[2, 1] = C23_GPa
        v[3, 3], v[4, 4], v[5, 5] = C44_GPa, C55_GPa, C66_GPa
        return cls(torch.as_tensor(v))

    @classmethod
    def cubic(cls, *, C11_GPa: float, C12_GPa: float, C44_GPa: float) -> Stiffness:
        return cls.orthorhombic(
            C11_GPa=C11_GPa, C22_GPa=C11_GPa, C33_GPa=C11_GPa, C12_GPa=C12_GPa, C13_GPa=C12_GPa,
            C23_GPa=C12_GPa, C44_GPa=C44_GPa, C55_GPa=C44_GPa, C66_GPa=C44_GPa,
        )

    @classmethod
    def isotropic(cls, *, E_GPa: float, nu: float) -> Stiffness:
        """Young's modulus E (GPa) and Poisson ratio ν ∈ (-1, ½): λ = Eν/((1+ν)(1−2ν)), μ = E/(2(1+ν))."""
        if not (E_GPa > 0) or not (-1.0 < nu < 0.5):
            raise InputError("E_GPa, nu", "E_GPa > 0 and -1 < nu < 0.5", (E_GPa, nu))
        lam = E_GPa * nu / ((1 + nu) * (1 - 2 * nu))
        mu = E_GPa / (2 * (1 + nu))
        return cls.cubic(C11_GPa=lam + 2 * mu, C12_GPa=lam, C44_GPa=mu)

    # ---- views --------------------------------------------------------------------------------
    @property
    def batch_shape(self) -> torch.Size:
        return self.voigt_GPa.shape[:-2]

    @property
    def dtype(self) -> torch.dtype:
        return self.voigt_GPa.dtype

    @property
    def device(self) -> torch.device:
        return self.voigt_GPa.device

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Stiffness:
        return Stiffness(self.voigt_GPa.to(dtype=dtype, device=device))

    def tensor(self) -> torch.Tensor:
        """C_ijkl, shape (*batch, 3, 3, 3, 3), GPa."""
        return voigt_to_tensor(self.voigt_GPa)

    def reduced_voigt(self, axes=(0, 1), plane: str = "stress") -> torch.Tensor:
        """In-plane 2-D Voigt stiffness (*batch, 3, 3) in order (pp, qq, pq), GPa (see module doc)."""
        p, q = check_plane_axes(plane, axes)
        idx = torch.tensor([_VOIGT_3D[(p, p)], _VOIGT_3D[(q, q)], _VOIGT_3D[(p, q)]], device=self.device)
        if plane == "strain":
            return self.voigt_GPa.index_select(-2, idx).index_select(-1, idx)
        compliance = torch.linalg.inv(self.voigt_GPa)
        return torch.linalg.inv(compliance.index_select(-2, idx).index_select(-1, idx))

    def reduced(self, axes=(0, 1), plane: str = "stress") -> torch.Tensor:
        """In-plane stiffness tensor (*batch, 2, 2, 2, 2), GPa; grid axis 0 ↔ crystal ``axes[0]``."""
        return voigt_to_tensor(self.reduced_voigt(axes, plane))

    def mandel(self, ndim: int = 3, axes=(0, 1), plane: str = "stress") -> torch.Tensor:
        """Mandel matrix (*batch, m, m): 6×6 in 3-D, or the reduced 3×3 in 2-D."""
        if ndim == 3:
            return voigt_to_mandel(self.voigt_GPa)
        return voigt_to_mandel(self.reduced_voigt(axes, plane))

    def __repr__(self) -> str:
        return f"Stiffness(batch_shape={tuple(self.batch_shape)}, dtype={self.dtype}, device={self.device})"
