"""Matrix-free Q1 finite elements of a traction-free platelet, solved by FFT-preconditioned CG in torch:
:class:`PlateletPCG`, the any-device implementation of
:class:`~mechanics.elasticity.platelet.PlateletOperator`.

The same discretisation as :mod:`mechanics.elasticity.platelet_lu` (one bilinear square element per mask
pixel, 2×2 Gauss stiffness, element-mean strain, load of a uniform eigenstrain per element), so the two
solvers give the same strain to the CG tolerance. This one needs no sparse factorisation and runs on any
torch device (it is the calibration's GPU path); the sparse LU of
:class:`~mechanics.elasticity.platelet_lu.PlateletLU` is faster on a CPU.

Unknowns: nodal displacements u (n, 2, H+1, W+1) on the full node lattice; nodes that no mask element
touches are inactive (zero rows and columns). The operator is applied element by element: u at the
four corners of every pixel → element forces ke·u_e (weighted, masked) → scattered back. Two forms of
it give the same numbers: 2×2 convolutions (the gather with ke folded in, then its transpose: about 17
kernels per CG iteration in all, for GPUs and small grids, where launch latency bounds a solve) and
array slices (faster arithmetic for large grids on a CPU); ``conv=None`` picks by device and size.

Preconditioner (fictitious domain): M⁻¹ r = R K₀⁺ Rᵀ r, with K₀ the same Q1 operator for the same
stiffness on every element of a periodic node box that holds the platelet's bounding box plus a margin,
diagonal in Fourier space (a 2×2 Hermitian symbol per wave vector, pseudo-inverted at k = 0), and R the
restriction to the active nodes. The system is singular (rigid-body motion of each piece); every
eigenstrain load is self-equilibrated, so CG stays in the range of K and the strain, which rigid motion
does not change, is well defined. The iteration count hardly depends on the grid (measured 30–34 to
rtol 1e-9 on an LFP-like ellipse from 64² to 512²); each iteration costs one operator application and
two FFTs of the node field.

Stopping rule: ‖r‖₂ ≤ rtol·‖b‖₂ per right-hand side; in a batch an RHS that converged stops moving, a
single RHS is checked every 4 iterations. A solve that does not converge in ``max_iter`` raises
:class:`mechanics.errors.SolverError` (no silent inaccurate result). The stiffness per element (several
materials mixed per pixel) is the construction's ``weights``, or a per-call ``stiffness_scale`` of
:meth:`PlateletPCG.strain`, which differentiates through both the eigenstrain and that scale.

Difference from :mod:`~mechanics.elasticity.platelet_lu`: pieces of the mask that touch only at a corner
share that node here (a hinge), where the sparse solver gives them separate nodes; for an edge-connected
particle the two are identical.

Symbols: H, W pixel grid; h = ``spacing_nm``; C in-plane stiffness (GPa, grid axes 0 and 1, tensor
form 2×2×2×2); strains dimensionless (tensor shear). Shapes: eigenstrain and strain (n, H, W, 2, 2).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from mechanics.elasticity.platelet import CORNERS, GAUSS, b_matrix, check_field, platelet_inputs, voigt_2d
from mechanics.errors import InputError, SolverError
from mechanics.grid import next_fast_size

CONV_MAX_CPU_ELEMENTS = 80 * 80  # on a CPU, the convolution form up to this many cropped elements


class PlateletPCG:
    """Q1 finite elements of a traction-free platelet on a torch device (matrix-free, PCG; a
    :class:`~mechanics.elasticity.platelet.PlateletOperator`).

    Args:
      mask: (H, W) bool, True inside the particle.
      stiffness_2d: (2, 2, 2, 2) in-plane stiffness in GPa along grid axes (0, 1), uniform; or
        (M, 2, 2, 2, 2) for M materials mixed per element by ``weights``.
      spacing_nm: pixel pitch h in nm.
      weights: optional per-element weight of each material, (H, W) for one material or (M, H, W):
        element stiffness Σ_m weight_m C_m and load Σ_m weight_m C_m:ε⁰; ≥ 0 per material and > 0 in
        sum on every mask pixel. Default: material 0 alone with weight 1. With one material and w the
        covered area fraction, rim pixels are partial-coverage elements (as the ``weights`` of
        :class:`~mechanics.elasticity.platelet_lu.PlateletLU`).
      device: torch device (default CPU); dtype: float64 (default) or float32.
      rtol: relative residual at which CG stops (per right-hand side), > 0.
      max_iter: iteration cap (≥ 1); a solve that reaches it raises :class:`~mechanics.errors.SolverError`.
      conv: True for the convolution form of the element operators, False for array slices, None
        (default) for convolutions on a GPU and on a CPU up to ``CONV_MAX_CPU_ELEMENTS`` cropped elements.
      check_every: K, the residual is checked (one host synchronisation) every K iterations, so a solve
        takes up to K − 1 iterations more than it needs; None (default): 8 for a batch, 4 for one RHS.

    Raises:
      InputError: a malformed argument (the field is named).

    Attributes: ``mask`` (numpy), ``shape``, ``spacing_nm``, ``device``, ``dtype``, ``rtol``,
    ``max_iter``, ``use_conv``, ``n_materials``; and run state: ``iterations`` (of the last solve, per
    RHS), ``n_solves`` and ``n_iterations`` (running totals; a batch counts once, with its longest RHS).
    """

    def __init__(self, mask, stiffness_2d, spacing_nm: float, *, weights=None, device=None,
                 dtype=torch.float64, rtol: float = 1e-9, max_iter: int = 5000,
                 conv: bool | None = None, check_every: int | None = None) -> None:
        mask_np, c, h = platelet_inputs(mask, stiffness_2d, spacing_nm)
        if c.shape == (2, 2, 2, 2):
            c = c[None]
        if c.ndim != 5 or c.shape[1:] != (2, 2, 2, 2):
            raise InputError("stiffness_2d", "shape (2, 2, 2, 2) or (M, 2, 2, 2, 2) (GPa)", c.shape)
        try:
            self.device = torch.device(device) if device is not None else torch.device("cpu")
        except (RuntimeError, TypeError):
            raise InputError("device", "a torch device ('cpu', 'cuda', 'cuda:N')", device) from None
        if dtype not in (torch.float32, torch.float64):
            raise InputError("dtype", "torch.float32 or torch.float64", dtype)
        if not (isinstance(rtol, (int, float)) and math.isfinite(rtol) and rtol > 0):
            raise InputError("rtol", "a positive finite relative residual", rtol)
        if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
            raise InputError("max_iter", "an integer >= 1", max_iter)
        if check_every is not None and (isinstance(check_every, bool) or not isinstance(check_every, int)
                                        or check_every < 1):
            raise InputError("check_every", "an integer >= 1 or None", check_every)
        # residual checked (one host sync) every K iterations: 8 for a batch, 4 for one RHS by default
        self._check_batch = check_every or 8
        self._check_single = check_every or 4
        self.dtype = dtype
        self._rtol = float(rtol)
        self._max_iter = int(max_iter)
        self.mask = mask_np
        self.shape = mask_np.shape
        self.spacing_nm = h
        self.iterations = np.zeros(0, dtype=int)
        self.n_solves = 0  # PCG runs so far (a batch counts once) and their iterations (batch: the longest)
        self.n_iterations = 0
        # last single-RHS forward and adjoint solutions: warm starts for an optimiser's next call
        self._warm: torch.Tensor | None = None
        self._warm_adj: torch.Tensor | None = None
        self.n_materials = c.shape[0]
        self.stiffness_voigt = np.stack([voigt_2d(ci) for ci in c])  # (M, 3, 3)

        # crop to the bounding box of the mask (plus one empty pixel ring): the work scales with it
        rows, cols = np.nonzero(mask_np)
        self._r0, self._r1 = rows.min(), rows.max() + 1
        self._c0, self._c1 = cols.min(), cols.max() + 1
        crop = mask_np[self._r0:self._r1, self._c0:self._c1]
        self._crop_shape = crop.shape
        hh, ww = crop.shape

        ke = np.zeros((self.n_materials, 8, 8))  # element stiffness per material
        for s in GAUSS:
            for t in GAUSS:
                b = b_matrix(s, t, h)
                ke += 0.25 * h * h * np.einsum("ai,mab,bj->mij", b, self.stiffness_voigt, b)
        b_centre = b_matrix(0.5, 0.5, h)
        le = h * h * np.einsum("ai,mab->mib", b_centre, self.stiffness_voigt)  # (M, 8, 3)
        self._ke_np = ke
        kw = {"dtype": dtype, "device": self.device}
        self._ke = torch.as_tensor(ke, **kw)
        # corner gather as a 2×2 convolution (output channel 2a+c = component c at corner a) and the
        # element stiffness folded into it: one kernel each way instead of a stack of slices
        g = np.zeros((8, 2, 2, 2))
        for a, (dr, dc) in enumerate(CORNERS):
            g[2 * a, 0, dr, dc] = g[2 * a + 1, 1, dr, dc] = 1.0
        self._g = torch.as_tensor(g, **kw)
        self._ke_conv = torch.as_tensor(
            np.einsum("mij,jcrs->micrs", ke, g).reshape(8 * self.n_materials, 2, 2, 2), **kw)
        # convolutions where kernel launches bound the time (GPU, small grids); slices on a CPU for large
        # grids, where the float64 convolution is the slower (benchmarks/platelet_pcg.py)
        self._use_conv = (self.device.type != "cpu" or hh * ww <= CONV_MAX_CPU_ELEMENTS) if conv is None \
            else bool(conv)
        self._le = torch.as_tensor(le, **kw)
        self._bc = torch.as_tensor(b_centre, **kw)
        self._emask = torch.as_tensor(crop, device=self.device).to(dtype)  # (hh, ww)
        node = np.zeros((hh + 1, ww + 1), dtype=bool)
        for dr, dc in CORNERS:
            node[dr:dr + hh, dc:dc + ww] |= crop
        self._nmask = torch.as_tensor(node, device=self.device).to(dtype)  # (hh+1, ww+1)

        # periodic box for the preconditioner: the node lattice plus a margin of a quarter side
        self._box = (next_fast_size(hh + 1 + max(4, hh // 4)), next_fast_size(ww + 1 + max(4, ww // 4)))
        self._ref_cache: tuple | None = None  # (key, inverted symbol) of the last per-call scale
        # the configured element weights of each material, (M, hh, ww), and the preconditioner's
        # reference medium for them; the default is material 0 alone with weight 1
        if weights is None:
            self._escale = torch.zeros(self.n_materials, hh, ww, dtype=dtype, device=self.device)
            self._escale[0] = self._emask
            ref = np.zeros(self.n_materials)
            ref[0] = 1.0
            self._sym_inv = self._reference_symbol(ref)
        else:
            self._escale, self._sym_inv = self._scale_config(weights, "weights")

    # configuration: read-only after construction
    @property
    def rtol(self) -> float:
        """Relative residual at which CG stops by default (per right-hand side)."""
        return self._rtol

    @property
    def max_iter(self) -> int:
        """CG iteration cap of every solve."""
        return self._max_iter

    @property
    def use_conv(self) -> bool:
        """True: the convolution form of the element operators; False: array slices."""
        return self._use_conv

    def _scale_config(self, scale, field: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(element weights (M, hh, ww), inverted preconditioner symbol) for a per-element weight of each
        material, ``scale`` (H, W) for one material or (M, H, W).

        The preconditioner's reference medium is Σ_m max_r(scale_m) C_m, which bounds every element from
        above, so the spectrum of M⁻¹K stays in (0, 1] and CG keeps its iteration count for moderate
        contrasts.
        """
        s = torch.as_tensor(scale, device=self.device, dtype=self.dtype).detach()
        if s.dim() == 2:
            s = s[None]
        if tuple(s.shape) != (self.n_materials, *self.shape):
            raise InputError(field, f"shape {(self.n_materials, *self.shape)} (or {self.shape} for one "
                             "material)", tuple(s.shape))
        crop = s[:, self._r0:self._r1, self._c0:self._c1] * self._emask
        inside = self._emask > 0
        if not bool(torch.all(crop.sum(0)[inside] > 0)) or bool(torch.any(crop < 0)):
            raise InputError(field, ">= 0 per material and > 0 in sum on every mask pixel",
                             "a negative or all-zero element")
        ref = crop.reshape(self.n_materials, -1).amax(dim=1).cpu().numpy()
        return crop, self._reference_symbol(ref)

    def _reference_symbol(self, weights: np.ndarray) -> torch.Tensor:
        """FFT symbol of the periodic Q1 operator of the reference medium Σ_m weights_m C_m, inverted
        (the last one is kept: optimisers call the solver many times with one scale)."""
        key = tuple(np.round(np.asarray(weights, dtype=float), 12))
        if self._ref_cache is not None and self._ref_cache[0] == key:
            return self._ref_cache[1]
        ke = np.einsum("m,mij->ij", weights, self._ke_np)
        k0 = 2 * np.pi * np.fft.fftfreq(self._box[0])
        k1 = 2 * np.pi * np.fft.rfftfreq(self._box[1])
        phase = [np.exp(1j * (dr * k0[:, None] + dc * k1[None, :])) for dr, dc in CORNERS]
        symbol = np.zeros((2, 2, k0.size, k1.size), dtype=complex)
        for a in range(4):
            for b in range(4):
                blk = ke[2 * a:2 * a + 2, 2 * b:2 * b + 2]
                symbol += blk[:, :, None, None] * (np.conj(phase[a]) * phase[b])[None, None]
        sym = np.moveaxis(symbol, (0, 1), (-2, -1))  # (K0, K1, 2, 2)
        sym[0, 0] = np.eye(2)
        inv = np.linalg.inv(sym)
        inv[0, 0] = 0.0  # rigid translation: pseudo-inverse
        cplx = torch.complex128 if self.dtype == torch.float64 else torch.complex64
        sym_inv = torch.as_tensor(np.moveaxis(inv, (-2, -1), (0, 1)).copy()).to(
            dtype=cplx, device=self.device)  # (2, 2, K0, K1)
        self._ref_cache = (key, sym_inv)
        return sym_inv

    # -- element-level operators on the cropped lattice ----------------------------------------------
    def _gather(self, u: torch.Tensor) -> torch.Tensor:
        """Corner DOFs of every element: (n, 2, hh+1, ww+1) → (n, 8, hh, ww), DOF order [corner, comp]."""
        if self._use_conv:
            return F.conv2d(u, self._g)
        hh, ww = self._crop_shape
        parts = [u[:, :, dr:dr + hh, dc:dc + ww] for dr, dc in CORNERS]
        return torch.stack(parts, dim=1).reshape(u.shape[0], 8, hh, ww)

    def _scatter(self, fe: torch.Tensor) -> torch.Tensor:
        """Element nodal vectors (n, 8, hh, ww) → assembled nodal field (n, 2, hh+1, ww+1)."""
        if self._use_conv:
            return F.conv_transpose2d(fe, self._g)
        hh, ww = self._crop_shape
        out = fe.new_zeros(fe.shape[0], 2, hh + 1, ww + 1)
        for a, (dr, dc) in enumerate(CORNERS):
            out[:, :, dr:dr + hh, dc:dc + ww] += fe[:, 2 * a:2 * a + 2]
        return out

    def _mix(self, mats: torch.Tensor, field: torch.Tensor, escale: torch.Tensor) -> torch.Tensor:
        """Σ_m weight_m(e) · mats_m @ field(e) per element: mats (M, p, q), field (n, q, hh, ww),
        weights ``escale`` (M, hh, ww)."""
        n, q, hh, ww = field.shape
        flat = field.reshape(n, q, hh * ww)
        out = None
        for m in range(self.n_materials):
            term = torch.matmul(mats[m], flat).reshape(n, -1, hh, ww) * escale[m]
            out = term if out is None else out + term
        return out

    def _matvec(self, u: torch.Tensor, escale: torch.Tensor) -> torch.Tensor:
        if not self._use_conv:
            return self._scatter(self._mix(self._ke, self._gather(u), escale))
        fe = F.conv2d(u, self._ke_conv)  # (n, 8M, hh, ww): ke_m u_e for every material m
        if self.n_materials == 1:
            fe = fe * escale[0]
        else:
            n, _, hh, ww = fe.shape
            fe = (fe.view(n, self.n_materials, 8, hh, ww) * escale[:, None]).sum(1)
        return F.conv_transpose2d(fe, self._g)

    def _precondition(self, r: torch.Tensor, sym_inv: torch.Tensor) -> torch.Tensor:
        hh, ww = self._crop_shape
        rf = torch.fft.rfft2(r, s=self._box)  # zero-extended into the box
        zf = (sym_inv * rf[:, None]).sum(2)  # Σ_j symbol_ij rf_j per wave vector
        z = torch.fft.irfft2(zf, s=self._box)[:, :, :hh + 1, :ww + 1]
        return z * self._nmask

    def _cg(self, b: torch.Tensor, x0: torch.Tensor | None, escale: torch.Tensor, sym_inv: torch.Tensor,
            rtol: float) -> torch.Tensor:
        """Solve K u = b for every RHS of b (n, 2, hh+1, ww+1) by PCG, element weights ``escale`` and
        preconditioner ``sym_inv``, to relative residual ``rtol``."""
        n = b.shape[0]
        x = torch.zeros_like(b) if x0 is None else x0.clone()
        r = b - self._matvec(x, escale) if x0 is not None else b.clone()
        bnorm = torch.linalg.vector_norm(b.reshape(n, -1), dim=1)
        target = rtol * torch.where(bnorm > 0, bnorm, torch.ones_like(bnorm))
        z = self._precondition(r, sym_inv)
        p = z.clone()
        rz = (r * z).sum(dim=(1, 2, 3))
        if n == 1:
            return self._cg_single(x, r, p, rz, bnorm, target, escale, sym_inv, rtol)
        iters = torch.zeros(n, dtype=torch.long, device=b.device)
        shape = (n, 1, 1, 1)
        for it in range(self._max_iter + 1):
            rnorm = torch.linalg.vector_norm(r.reshape(n, -1), dim=1)
            active = rnorm > target
            if it % self._check_batch == 0 or it == self._max_iter:  # a host sync every K iterations only
                if not bool(active.any()):
                    break
                if it == self._max_iter:
                    self._not_converged(rnorm, bnorm, rtol)
            iters += active.long()
            q = self._matvec(p, escale)
            pq = (p * q).sum(dim=(1, 2, 3))
            alpha = torch.where(active, rz / torch.where(pq != 0, pq, 1.0), 0.0)
            x = x + alpha.reshape(shape) * p
            r = r - alpha.reshape(shape) * q
            z = self._precondition(r, sym_inv)
            rz_new = (r * z).sum(dim=(1, 2, 3))
            beta = torch.where(active, rz_new / torch.where(rz != 0, rz, 1.0), 0.0)
            p = torch.where(active.reshape(shape), z + beta.reshape(shape) * p, p)
            rz = torch.where(active, rz_new, rz)
        self.iterations = iters.cpu().numpy()
        self._count()
        return x

    def _cg_single(self, x, r, p, rz, bnorm, target, escale, sym_inv, rtol) -> torch.Tensor:
        """One right-hand side: the plain PCG recurrences (fewer kernels per iteration than the batched
        loop, which matters when kernel launches, not memory, bound a small solve); the residual is
        checked every K iterations (one host sync; K = 4 unless ``check_every``), so a solve may take up to
        K − 1 extra iterations."""
        it = 0
        while True:
            if it % self._check_single == 0:
                rnorm = torch.linalg.vector_norm(r)
                if bool(rnorm <= target[0]):
                    break
                if it >= self._max_iter:
                    self._not_converged(rnorm[None], bnorm, rtol)
            q = self._matvec(p, escale)
            alpha = rz / torch.dot(p.reshape(-1), q.reshape(-1))
            x.addcmul_(alpha, p)
            r.addcmul_(alpha, q, value=-1.0)
            z = self._precondition(r, sym_inv)
            rz_new = torch.dot(r.reshape(-1), z.reshape(-1))
            p = torch.addcmul(z, rz_new / rz, p)
            rz = rz_new
            it += 1
        self.iterations = np.array([it])
        self._count()
        return x

    def _count(self) -> None:
        self.n_solves += 1
        self.n_iterations += int(self.iterations.max(initial=0))

    def _not_converged(self, rnorm, bnorm, rtol):
        worst = float((rnorm / torch.where(bnorm > 0, bnorm, 1.0)).max())
        raise SolverError("PlateletPCG", f"conjugate gradients did not reach rtol={rtol:g} in "
                          f"{self._max_iter} iterations (relative residual {worst:.3g})")

    # -- load, strain and their adjoints ---------------------------------------------------------------
    def _crop(self, field: torch.Tensor) -> torch.Tensor:
        return field[:, self._r0:self._r1, self._c0:self._c1]

    def _uncrop(self, field: torch.Tensor) -> torch.Tensor:
        out = field.new_zeros(field.shape[0], *self.shape, *field.shape[3:])
        out[:, self._r0:self._r1, self._c0:self._c1] = field
        return out

    @staticmethod
    def _to_voigt(e: torch.Tensor) -> torch.Tensor:
        """(n, hh, ww, 2, 2) → (n, 3, hh, ww), engineering shear."""
        return torch.stack([e[..., 0, 0], e[..., 1, 1], e[..., 0, 1] + e[..., 1, 0]], dim=1)

    def _load(self, eig: torch.Tensor, escale: torch.Tensor) -> torch.Tensor:
        fe = self._mix(self._le, self._to_voigt(eig), escale)
        return self._scatter(fe)

    def _strain(self, u: torch.Tensor) -> torch.Tensor:
        v = torch.einsum("ij,njhw->nihw", self._bc, self._gather(u)) * self._emask  # (n, 3, hh, ww)
        e = torch.stack([torch.stack([v[:, 0], 0.5 * v[:, 2]], -1),
                         torch.stack([0.5 * v[:, 2], v[:, 1]], -1)], -2)
        return e  # (n, hh, ww, 2, 2)

    def _strain_T(self, g: torch.Tensor) -> torch.Tensor:
        gv = torch.stack([g[..., 0, 0], g[..., 1, 1], 0.5 * (g[..., 0, 1] + g[..., 1, 0])], dim=1)
        fe = torch.einsum("ji,njhw->nihw", self._bc, gv * self._emask)
        return self._scatter(fe)

    def _load_T(self, lam: torch.Tensor, escale: torch.Tensor) -> torch.Tensor:
        ev = self._mix(self._le.transpose(1, 2), self._gather(lam), escale)  # (n, 3, hh, ww)
        return torch.stack([torch.stack([ev[:, 0], ev[:, 2]], -1),
                            torch.stack([ev[:, 2], ev[:, 1]], -1)], -2)

    def _stop_tol(self, rtol: float | None) -> float:
        if rtol is None:
            return self._rtol
        if not (isinstance(rtol, (int, float)) and math.isfinite(rtol) and rtol > 0):
            raise InputError("rtol", "a positive finite relative residual, or None", rtol)
        return float(rtol)

    # -- public interface ------------------------------------------------------------------------------
    def solve(self, eigenstrain: torch.Tensor, *, rtol: float | None = None) -> torch.Tensor:
        """Total strain (n, H, W, 2, 2) of eigenstrain fields (n, H, W, 2, 2), without autograd.

        Args:
          eigenstrain: (n, H, W, 2, 2) tensor (moved to the solver's device and dtype).
          rtol: stopping tolerance for this call (default: the constructor's ``rtol``).

        Returns:
          the strain in the input's dtype and on its device.

        Raises:
          InputError: a malformed argument. SolverError: CG did not converge in ``max_iter``.
        """
        x = check_field(eigenstrain, self.shape, "eigenstrain")
        e = self._crop(x.detach().to(device=self.device, dtype=self.dtype))
        u = self._cg(self._load(e, self._escale), None, self._escale, self._sym_inv, self._stop_tol(rtol))
        return self._uncrop(self._strain(u)).to(dtype=x.dtype, device=x.device)

    def solve_adjoint(self, strain_grad: torch.Tensor, *, rtol: float | None = None) -> torch.Tensor:
        """Lᵀ K⁻¹ Bᵀ of a strain cotangent (n, H, W, 2, 2): the exact transpose of :meth:`solve`."""
        x = check_field(strain_grad, self.shape, "strain_grad")
        g = self._crop(x.detach().to(device=self.device, dtype=self.dtype))
        lam = self._cg(self._strain_T(g), None, self._escale, self._sym_inv, self._stop_tol(rtol))
        return self._uncrop(self._load_T(lam, self._escale)).to(dtype=x.dtype, device=x.device)

    def strain(self, eigenstrain: torch.Tensor, *, stiffness_scale: torch.Tensor | None = None,
               rtol: float | None = None) -> torch.Tensor:
        """Differentiable total strain (n, H, W, 2, 2) of eigenstrain (n, H, W, 2, 2).

        Args:
          eigenstrain: (n, H, W, 2, 2) tensor.
          stiffness_scale: optional per-element weight of each material for this call, (H, W) or
            (M, H, W) as the constructor's ``weights`` (which it replaces for the call); differentiable
            too (for fitting a stiffness contrast).
          rtol: stopping tolerance of this call's solves, forward and backward (default: the
            constructor's).

        Returns:
          the strain in the input's dtype, on the solver's device. Single-RHS solves warm-start from the
          previous one (an optimiser's successive calls are close).
        """
        x = check_field(eigenstrain, self.shape, "eigenstrain")
        return _PlateletStrain.apply(x, stiffness_scale, self, self._stop_tol(rtol))

    def apply(self, eigenstrain: np.ndarray) -> np.ndarray:
        """numpy float64 in and out, like :meth:`~mechanics.elasticity.platelet_lu.PlateletLU.apply`."""
        out = self.solve(torch.as_tensor(np.asarray(eigenstrain)))
        return out.double().cpu().numpy()

    def apply_adjoint(self, strain_grad: np.ndarray) -> np.ndarray:
        """The exact transpose of :meth:`apply`, numpy float64 in and out."""
        out = self.solve_adjoint(torch.as_tensor(np.asarray(strain_grad)))
        return out.double().cpu().numpy()

    def work(self) -> dict[str, int]:
        """PCG runs so far (a batch counts once) and their iterations (a batch: its longest RHS)."""
        return {"pcg_solves": self.n_solves, "pcg_iterations": self.n_iterations}


class _PlateletStrain(torch.autograd.Function):
    """ε = B K(s)⁻¹ L(s) ε⁰ with the implicit adjoint: λ = K⁻¹ Bᵀ ḡ (one more solve), then
    ∂ℓ/∂ε⁰_e = s_e leᵀ λ_e and ∂ℓ/∂s_e = λ_eᵀ (le ε⁰_e − ke u_e) (per element e, summed over RHS)."""

    @staticmethod
    def forward(ctx, eigenstrain, scale, solver: PlateletPCG, rtol: float):
        escale, sym_inv = (solver._escale, solver._sym_inv) if scale is None else \
            solver._scale_config(scale, "stiffness_scale")
        e = solver._crop(eigenstrain.detach().to(device=solver.device, dtype=solver.dtype))
        u = solver._cg(solver._load(e, escale), solver._warm, escale, sym_inv, rtol)
        solver._warm = u if u.shape[0] == 1 else None
        ctx.solver = solver
        ctx.rtol = rtol
        ctx.has_scale = scale is not None
        ctx.save_for_backward(e, u, scale if scale is not None else torch.empty(0))
        return solver._uncrop(solver._strain(u)).to(eigenstrain.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        solver: PlateletPCG = ctx.solver
        e, u, scale = ctx.saved_tensors
        escale, sym_inv = (solver._scale_config(scale, "stiffness_scale") if ctx.has_scale
                           else (solver._escale, solver._sym_inv))
        g = solver._crop(grad_output.to(device=solver.device, dtype=solver.dtype))
        lam = solver._cg(solver._strain_T(g), solver._warm_adj, escale, sym_inv, ctx.rtol)
        solver._warm_adj = lam if lam.shape[0] == 1 else None
        grad_e = solver._uncrop(solver._load_T(lam, escale)).to(grad_output.dtype)
        grad_s = None
        if ctx.has_scale and ctx.needs_input_grad[1]:
            lam_e = solver._gather(lam)
            load_e = torch.einsum("mij,njhw->mnihw", solver._le, solver._to_voigt(e))
            force_e = torch.einsum("mij,njhw->mnihw", solver._ke, solver._gather(u))
            per_el = (lam_e[None] * (load_e - force_e)).sum(dim=(1, 2)) * solver._emask  # (M, hh, ww)
            grad_s = solver._uncrop(per_el).reshape(scale.shape).to(scale.dtype)
        return grad_e, grad_s, None, None
