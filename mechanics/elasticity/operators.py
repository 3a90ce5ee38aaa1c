"""Discrete derivative and Green operators on the periodic grid, in Mandel notation.

Layout: symmetric-tensor fields are (B, m, *grid) Mandel vectors (shear × √2, see
:mod:`mechanics.stiffness`), vector fields (B, d, *grid); their ``rfftn`` over the last d axes have
the same leading dimensions.

Two derivative schemes (multiplier ξ_j(k) of ∂_j acting on a Fourier mode):
  ``"spectral"``  ξ_j = i k_j (exact for band-limited fields; Moulinec & Suquet, CMAME 157, 69 (1998)).
                  The Nyquist entry of an even axis is zeroed where ξ acts on a displacement.
  ``"rotated"``   Willot's rotated scheme (C. R. Mécanique 343, 232 (2015)): displacements on the cell
                  corners, strains at cell centres from the average of the 2^{d−1} edge differences,
                  ξ_j = (e^{iq_j} − 1)/h · Π_{m≠j} (1 + e^{iq_m})/2, q_j = k_j h. It is the one-point
                  (reduced) integration of trilinear finite elements: local fields without the Gibbs
                  ringing of the spectral scheme at sharp interfaces and voids.
In both, conj(ξ_i) ξ_j = g_i g_j is real (a common phase cancels), so the acoustic tensor
N_ik = C_ijkl g_j g_l and the Green operator Γ = sym(g ⊗ N⁻¹ ⊗ g) are real.
"""

from __future__ import annotations

import functools
import math

import torch

from mechanics.errors import InputError
from mechanics.grid import Grid
from mechanics.stiffness import PAIRS

SCHEMES = ("spectral", "rotated")
SQRT2 = math.sqrt(2.0)


def solve_small_symmetric(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x = A⁻¹ b for symmetric A (..., d, d), d ∈ {2, 3}, by the adjugate (elementwise, batched, any
    device, differentiable). b (..., d) may be complex; A real. Singular A gives inf/nan: callers mask."""
    d = a.shape[-1]
    if d == 2:
        a00, a01, a11 = a[..., 0, 0], a[..., 0, 1], a[..., 1, 1]
        det = a00 * a11 - a01 * a01
        x0 = (a11 * b[..., 0] - a01 * b[..., 1]) / det
        x1 = (a00 * b[..., 1] - a01 * b[..., 0]) / det
        return torch.stack([x0, x1], dim=-1)
    a00, a01, a02 = a[..., 0, 0], a[..., 0, 1], a[..., 0, 2]
    a11, a12, a22 = a[..., 1, 1], a[..., 1, 2], a[..., 2, 2]
    c00 = a11 * a22 - a12 * a12
    c01 = a02 * a12 - a01 * a22
    c02 = a01 * a12 - a02 * a11
    c11 = a00 * a22 - a02 * a02
    c12 = a01 * a02 - a00 * a12
    c22 = a00 * a11 - a01 * a01
    det = a00 * c00 + a01 * c01 + a02 * c02
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    x0 = (c00 * b0 + c01 * b1 + c02 * b2) / det
    x1 = (c01 * b0 + c11 * b1 + c12 * b2) / det
    x2 = (c02 * b0 + c12 * b1 + c22 * b2) / det
    return torch.stack([x0, x1, x2], dim=-1)


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise InputError("scheme", "'spectral' or 'rotated'", scheme)
    return scheme


def real_multipliers(grid: Grid, scheme: str, dtype, device) -> list[torch.Tensor]:
    """Real vector g(k) (rad/nm), d tensors broadcastable to the rfft shape: conj(ξ_i)ξ_j = g_i g_j."""
    q = grid.frequencies(dtype=dtype, device=device, rfft=True)
    h = grid.spacing_nm
    if scheme == "spectral":
        return [qi / h for qi in q]
    out = []
    for j in range(grid.ndim):
        g = (2.0 / h) * torch.sin(q[j] / 2)
        for m in range(grid.ndim):
            if m != j:
                g = g * torch.cos(q[m] / 2)
        out.append(g)
    return out


def complex_multipliers(grid: Grid, scheme: str, dtype, device) -> list[torch.Tensor]:
    """ξ_j(k) of the derivative acting on a displacement (complex), d broadcastable tensors."""
    q = grid.frequencies(dtype=dtype, device=device, rfft=True)
    h = grid.spacing_nm
    d = grid.ndim
    if scheme == "spectral":
        out = []
        for j, n in enumerate(grid.shape):
            k = q[j] / h
            if n % 2 == 0:  # the Nyquist mode has no odd (derivative) part on a real field
                k = torch.where(q[j] == -math.pi if j < d - 1 else q[j] == math.pi, torch.zeros_like(k), k)
            out.append(torch.complex(torch.zeros_like(k), k))
        return out
    e = [torch.polar(torch.ones_like(qi), qi) for qi in q]
    out = []
    for j in range(d):
        x = (e[j] - 1.0) / h
        for m in range(d):
            if m != j:
                x = x * (1.0 + e[m]) / 2.0
        out.append(x)
    return out


def nyquist_modes(grid: Grid, device=None) -> torch.Tensor:
    """Modes with the Nyquist index on at least one even axis, bool (*rfft_shape)."""
    out = torch.zeros(grid.rfft_shape, dtype=torch.bool, device=device)
    d = grid.ndim
    for i, n in enumerate(grid.shape):
        if n % 2:
            continue
        view = [1] * d
        size = grid.rfft_shape[i]
        hit = torch.zeros(size, dtype=torch.bool, device=device)
        hit[n // 2] = True  # fftfreq index N/2 (value −N/2), and the last rfft entry on the last axis
        view[i] = size
        out = out | hit.reshape(view)
    return out


def stress_free_modes(grid: Grid, scheme: str, device=None) -> torch.Tensor:
    """Modes the homogeneous solver leaves stress-free: k = 0 (mean strain = mean eigenstrain) and, for
    the spectral scheme, the Nyquist modes."""
    out = torch.zeros(grid.rfft_shape, dtype=torch.bool, device=device)
    out.view(-1)[0] = True
    if scheme == "spectral":
        out = out | nyquist_modes(grid, device)
    return out


def _device(device) -> torch.device:
    return torch.device("cpu") if device is None else torch.device(device)


@functools.lru_cache(maxsize=32)
def _homogeneous_constants(grid: Grid, scheme: str, dtype: torch.dtype, device: torch.device):
    # built outside inference mode so that the cached tensors can enter autograd graphs later
    with torch.inference_mode(False), torch.no_grad():
        g = tuple(real_multipliers(grid, scheme, dtype, device))
        gg = outer_real(list(g))
        return g, gg, nonzero_modes(gg), stress_free_modes(grid, scheme, device)


def homogeneous_constants(grid: Grid, scheme: str, dtype, device):
    """Cached (g, G = g⊗g, valid modes, stress-free modes) of the Green operator on ``grid``."""
    g, gg, valid, free = _homogeneous_constants(grid, scheme, dtype, _device(device))
    return list(g), gg, valid, free


@functools.lru_cache(maxsize=32)
def _particle_constants(grid: Grid, scheme: str, dtype: torch.dtype, device: torch.device):
    with torch.inference_mode(False), torch.no_grad():
        xi = tuple(complex_multipliers(grid, scheme, dtype, device))
        gg = outer_complex(list(xi))
        n_last = grid.shape[-1]
        w = torch.full((n_last // 2 + 1,), 2.0, dtype=dtype, device=device)
        w[0] = 1.0
        if n_last % 2 == 0:
            w[-1] = 1.0
        xi_conj = tuple(x.conj().resolve_conj() for x in xi)
        return xi, xi_conj, gg, nonzero_modes(gg), w.reshape(*([1] * (grid.ndim - 1)), -1)


def particle_constants(grid: Grid, scheme: str, dtype, device):
    """Cached (ξ, conj ξ, G = Re(conj ξ ⊗ ξ), valid modes, rfft weights) for the PCG operators."""
    xi, xi_conj, gg, valid, w = _particle_constants(grid, scheme, dtype, _device(device))
    return list(xi), list(xi_conj), gg, valid, w


def mandel_dot(s: torch.Tensor, g: list[torch.Tensor], d: int) -> torch.Tensor:
    """t_i = Σ_j s_ij g_j for a Mandel field s (B, m, *K) and vector multipliers g; returns (B, d, *K)."""
    index = {}
    for a, (i, j) in enumerate(PAIRS[d]):
        index[(i, j)] = index[(j, i)] = a
    rows = []
    for i in range(d):
        acc = 0
        for j in range(d):
            a = index[(i, j)]
            comp = s[:, a] if i == j else s[:, a] / SQRT2
            acc = acc + comp * g[j]
        rows.append(acc)
    return torch.stack(rows, dim=1)


def mandel_sym_outer(g: list[torch.Tensor], u: torch.Tensor, d: int) -> torch.Tensor:
    """Mandel vector of sym(g ⊗ u) for multipliers g and a vector field u (B, d, *K); (B, m, *K)."""
    comps = []
    for i, j in PAIRS[d]:
        if i == j:
            comps.append(g[i] * u[:, i])
        else:
            comps.append((g[i] * u[:, j] + g[j] * u[:, i]) / SQRT2)
    return torch.stack(comps, dim=1)


def outer_real(g: list[torch.Tensor]) -> torch.Tensor:
    """G_ij = g_i g_j, (*K, d, d), for real multipliers."""
    shape = torch.broadcast_shapes(*(gi.shape for gi in g))
    gg = torch.stack([gi.expand(shape) for gi in g], dim=-1)
    return gg[..., :, None] * gg[..., None, :]


def outer_complex(xi: list[torch.Tensor]) -> torch.Tensor:
    """G_ij = Re(conj(ξ_i) ξ_j) (= g_i g_j), (*K, d, d), for complex multipliers."""
    shape = torch.broadcast_shapes(*(x.shape for x in xi))
    xx = torch.stack([x.expand(shape) for x in xi], dim=-1)
    return (xx.conj()[..., :, None] * xx[..., None, :]).real


def acoustic(c4: torch.Tensor, gg: torch.Tensor) -> torch.Tensor:
    """N_ik = C_ijkl G_jl, (B, *K, d, d), for c4 (B, d, d, d, d) and G (*K, d, d)."""
    return torch.einsum("bijkl,...jl->b...ik", c4, gg)


def inverse_acoustic_apply(n: torch.Tensor, t: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """x = N⁻¹ t for N (B, *K, d, d) and t (B, d, *K); zero where ``valid`` (*K) is False."""
    eye = torch.eye(n.shape[-1], dtype=n.dtype, device=n.device)
    safe = torch.where(valid[..., None, None], n, eye)
    x = solve_small_symmetric(safe, t.movedim(1, -1))
    x = torch.where(valid[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))
    return x.movedim(-1, 1)


def nonzero_modes(gg: torch.Tensor) -> torch.Tensor:
    """Modes where the derivative does not vanish (excludes k = 0 and hourglass modes), bool (*K)."""
    total = torch.diagonal(gg, dim1=-2, dim2=-1).sum(-1)
    return total > 1e-12 * total.amax().clamp_min(1e-300)
