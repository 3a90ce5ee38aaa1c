"""Eigenstrain laws ε⁰(X): Li fraction X → diagonal eigenstrain along the crystal axes (a, b, c).

All laws are plain ``torch.nn.Module`` objects (buffers and parameters only, no closures), so they
survive ``torch.save`` and ``mlflow.pytorch.log_model`` and evaluate on the device of X. Every law
satisfies ε⁰(0) = 0 exactly (the delithiated lattice is the reference, ARCHITECTURE.md §3).

| symbol | meaning | shape | unit |
|---|---|---|---|
| X | Li site fraction | (...) | 1 |
| ε⁰_i(X) | eigenstrain along crystal axis i | (..., 3) | 1 |
| x_k | knots of the piecewise-linear law, x_0 = 0 < ... < x_{K-1} = 1 | (K,) | 1 |
| v_ik | ε⁰_i(x_k), v_i0 = 0 | (3, K) | 1 |
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mechanics.errors import InputError

_ZERO_END = 1e-12  # |ε_i(1)| below this counts as "no misfit along i" in rescaled()


def _vector3(value, field: str) -> torch.Tensor:
    try:
        t = torch.as_tensor(np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value,
                                       dtype=np.float64))
    except (TypeError, ValueError):
        raise InputError(field, "three real numbers (a, b, c)", value) from None
    if t.shape != (3,) or not torch.isfinite(t).all():
        raise InputError(field, "three finite real numbers (a, b, c)", value)
    return t


class EigenstrainLaw(nn.Module):
    """Base class: ``forward(X) -> (..., 3)`` with ε⁰(0) = 0; X may have any shape, dtype, device."""

    def forward(self, X: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def derivative(self, X: torch.Tensor) -> torch.Tensor:
        """dε⁰/dX, shape (..., 3), by autograd (subclasses override with the analytic form)."""
        with torch.enable_grad():
            x = X.detach().requires_grad_(True)
            out = self.forward(x)
            grads = [torch.autograd.grad(out[..., i].sum(), x, retain_graph=i < 2)[0] for i in range(3)]
        return torch.stack(grads, dim=-1)

    def rescaled(self, misfit) -> EigenstrainLaw:  # pragma: no cover - abstract
        raise NotImplementedError


def _as_X(X) -> torch.Tensor:
    if not isinstance(X, torch.Tensor):
        X = torch.as_tensor(np.asarray(X, dtype=np.float64))
    if not X.is_floating_point():
        X = X.to(torch.float64)
    return X


class VegardLaw(EigenstrainLaw):
    """ε⁰_i(X) = X · misfit_i (Vegard's law); ``misfit`` = ε⁰(1) along (a, b, c)."""

    def __init__(self, misfit) -> None:
        super().__init__()
        self.register_buffer("misfit", _vector3(misfit, "misfit"))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        X = _as_X(X)
        return X[..., None] * self.misfit.to(dtype=X.dtype, device=X.device)

    def derivative(self, X: torch.Tensor) -> torch.Tensor:
        X = _as_X(X)
        return self.misfit.to(dtype=X.dtype, device=X.device).expand(*X.shape, 3)

    def rescaled(self, misfit) -> VegardLaw:
        return VegardLaw(misfit)

    def extra_repr(self) -> str:
        return f"misfit={tuple(round(float(m), 6) for m in self.misfit)}"


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


class PiecewiseLinearLaw(EigenstrainLaw):
    """ε⁰_i(X) = Σ_k v_ik φ_k(X): hat functions φ_k on knots x_0 = 0 < ... < x_{K-1} = 1, v_i0 = 0.

    Outside [0, 1] the end segments are continued linearly (noisy compositions slightly beyond the
    end members keep a finite slope). Parameters:

    - ``monotone=False``: ``free`` (3, K−1) holds v_ik for k ≥ 1 directly.
    - ``monotone=True``: each axis is monotone in X with the sign s_i of its end value (buffer
      ``signs``): v_ik = s_i Σ_{l≤k} softplus(θ_il), θ = ``free`` (3, K−1). Monotone by construction
      (no projection step, any optimizer works); an axis with end value 0 is taken increasing and its
      increments start at softplus⁻¹(1e-12), i.e. practically zero.

    ``basis(X)`` is the (..., K) design matrix Φ with ε⁰(X) = Φ(X) @ v.T, which makes the law linear in
    its knot values for calibration; ``set_values`` writes new knot values.
    """

    def __init__(self, knots_X, values, monotone: bool = False) -> None:
        super().__init__()
        knots = torch.as_tensor(np.asarray(
            knots_X.detach().cpu() if isinstance(knots_X, torch.Tensor) else knots_X, dtype=np.float64))
        if knots.ndim != 1 or knots.numel() < 2 or not torch.isfinite(knots).all():
            raise InputError("knots_X", "a 1-D increasing sequence from 0 to 1 with >= 2 knots", knots_X)
        if knots[0] != 0.0 or knots[-1] != 1.0 or not bool((knots[1:] > knots[:-1]).all()):
            raise InputError("knots_X", "strictly increasing knots with knots_X[0] = 0 and knots_X[-1] = 1",
                             knots.tolist())
        self.monotone = bool(monotone)
        self.register_buffer("knots_X", knots)
        K = knots.numel()
        v = self._check_values(values, K)
        self.register_buffer("signs", torch.where(v[:, -1] < 0, -1.0, 1.0).to(torch.float64))
        self.free = nn.Parameter(torch.zeros(3, K - 1, dtype=torch.float64))
        self.set_values(v)

    # ---- parameters <-> knot values ----------------------------------------------------------
    def _check_values(self, values, K: int) -> torch.Tensor:
        try:
            v = torch.as_tensor(np.asarray(
                values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64))
        except (TypeError, ValueError):
            raise InputError("values", f"a (3, {K}) array of eigenstrains at the knots", values) from None
        if tuple(v.shape) != (3, K) or not torch.isfinite(v).all():
            raise InputError("values", f"a finite (3, {K}) array of knot eigenstrains", tuple(v.shape))
        return v

    def set_values(self, values) -> None:
        """Write knot values (3, K) (column 0 is ignored: ε⁰(0) = 0 is pinned). With ``monotone`` the
        values must be monotone per axis in the direction of the stored signs."""
        v = self._check_values(values, self.knots_X.numel())
        v = v - v[:, :1]
        v[:, 0] = 0.0
        with torch.no_grad():
            if not self.monotone:
                self.free.copy_(v[:, 1:])
                return
            inc = (v[:, 1:] - v[:, :-1]) * self.signs[:, None]
            if bool((inc < -1e-15).any()):
                raise InputError("values", "values monotone per axis in the direction of the end value "
                                 f"(signs {self.signs.tolist()})", v.tolist())
            self.free.copy_(_inverse_softplus(inc.clamp_min(_ZERO_END)))

    def values(self) -> torch.Tensor:
        """Knot values v (3, K) (differentiable in the parameters), float64."""
        if self.monotone:
            inc = F.softplus(self.free)
            v = self.signs[:, None] * torch.cumsum(inc, dim=1)
        else:
            v = self.free
        return torch.cat([torch.zeros_like(v[:, :1]), v], dim=1)

    # ---- evaluation ---------------------------------------------------------------------------
    def basis(self, X) -> torch.Tensor:
        """Design matrix Φ(X), shape (..., K): ε⁰(X) = Φ(X) @ values().T."""
        X = _as_X(X)
        x = self.knots_X.to(dtype=X.dtype, device=X.device)
        Xc = X.clamp(0.0, 1.0)[..., None]
        left = torch.cat([x[:1] - 1.0, x[:-1]])  # dummy left neighbour of knot 0
        right = torch.cat([x[1:], x[-1:] + 1.0])  # dummy right neighbour of the last knot
        rising = (Xc - left) / (x - left)
        falling = (right - Xc) / (right - x)
        phi = torch.minimum(rising, falling).clamp(0.0, 1.0)
        # linear continuation beyond the ends: slope of the first / last segment
        K = x.numel()
        first = torch.zeros(K, dtype=X.dtype, device=X.device)
        last = torch.zeros(K, dtype=X.dtype, device=X.device)
        first[0], first[1] = -1.0, 1.0
        last[-2], last[-1] = -1.0, 1.0
        below = (X.clamp(max=0.0))[..., None] / (x[1] - x[0])
        above = (X - 1.0).clamp(min=0.0)[..., None] / (x[-1] - x[-2])
        return phi + below * first + above * last

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        X = _as_X(X)
        v = self.values().to(dtype=X.dtype, device=X.device)
        return self.basis(X) @ v.T

    def derivative(self, X: torch.Tensor) -> torch.Tensor:
        """dε⁰/dX: the slope of the segment holding X (right-continuous at knots; end slopes outside)."""
        X = _as_X(X)
        x = self.knots_X.to(dtype=X.dtype, device=X.device)
        v = self.values().to(dtype=X.dtype, device=X.device)
        slopes = (v[:, 1:] - v[:, :-1]) / (x[1:] - x[:-1])  # (3, K-1)
        seg = torch.bucketize(X.detach(), x[1:-1], right=True)  # 0 .. K-2
        return slopes.T[seg]

    # ---- constructors -------------------------------------------------------------------------
    @classmethod
    def from_vegard(cls, misfit, n_knots: int = 11, monotone: bool = False) -> PiecewiseLinearLaw:
        """Uniform knots, v_ik = x_k misfit_i (a Vegard law in piecewise-linear form)."""
        if int(n_knots) < 2:
            raise InputError("n_knots", "an integer >= 2", n_knots)
        m = _vector3(misfit, "misfit")
        knots = torch.linspace(0.0, 1.0, int(n_knots), dtype=torch.float64)
        return cls(knots, m[:, None] * knots[None, :], monotone=monotone)

    def rescaled(self, misfit) -> EigenstrainLaw:
        """Same per-axis shape g_i(X) = ε_i(X)/ε_i(1), new end point: ε_i(X) = misfit_i g_i(X).

        An axis with |ε_i(1)| < 1e-12 has no shape to carry over and falls back to Vegard."""
        m = _vector3(misfit, "misfit")
        with torch.no_grad():
            v = self.values().detach().clone()
            end = v[:, -1]
            flat = end.abs() < _ZERO_END
            shape = v / torch.where(flat, 1.0, end)[:, None]
            g = torch.where(flat[:, None], self.knots_X[None, :].expand_as(v), shape)
            new = m[:, None] * g
        monotone = self.monotone and bool(((new[:, 1:] - new[:, :-1]) * torch.where(
            m < 0, -1.0, 1.0)[:, None] >= -1e-15).all())
        return PiecewiseLinearLaw(self.knots_X.clone(), new, monotone=monotone)

    def extra_repr(self) -> str:
        return f"n_knots={self.knots_X.numel()}, monotone={self.monotone}"
