"""Sparse finite elements for a traction-free platelet with eigenstrain, factorised once:
:class:`PlateletLU`, the CPU implementation of :class:`~mechanics.elasticity.platelet.PlateletOperator`.

The discretisation is the one of :mod:`mechanics.elasticity.platelet` (one Q1 element per mask pixel).
The discrete equations are ``K u = L e⁰``::

    K = Σ_e w_e ∫_e Bᵀ D B dA   (2×2 Gauss; exact for Q1 on squares),
    L = Σ_e w_e h² B(centre)ᵀ D (the load of a uniform eigenstrain; B is linear in the element, so its
        mean is its value at the centre),

with D the 3×3 (Voigt, engineering shear) form of C and w_e an optional element weight. Rigid-body
motion is removed by fixing three displacement components in every edge-connected piece of the mask;
pieces that touch only at a corner get separate nodes there (a corner transmits no force). A
self-equilibrated load (every eigenstrain load is) then has zero reactions, so the pins do not disturb
the strain.

K is factorised once (SuperLU on a nested-dissection ordering of the grid), after which ``solve``
handles any number of right-hand sides, and the operator is available to autograd
(:meth:`PlateletLU.strain`, whose backward pass reuses the same factor because K is symmetric).

Symbols: H, W grid shape; h = ``spacing_nm`` (nm); C stiffness (GPa); ε⁰, ε dimensionless tensors
(tensor shear). Shapes: eigenstrain and strain ``(n_rhs, H, W, 2, 2)``; stress in GPa.

Reference: T. J. R. Hughes, *The Finite Element Method*, Dover (2000), ch. 3-4 (Q1 elements, equivalent
nodal loads of initial strains). scipy is imported inside the functions that need it (CPU only).
"""

from __future__ import annotations

import numpy as np
import torch

from mechanics.elasticity.platelet import CORNERS, GAUSS, b_matrix, check_field, platelet_inputs, voigt_2d
from mechanics.errors import InputError


def _nested_dissection(coords: np.ndarray, leaf: int = 64) -> np.ndarray:
    """Ordering of points (n, 2) by recursive coordinate bisection, separators last (George 1973).

    For a 2-D grid this keeps the fill of a sparse factorisation at O(n log n).
    """
    order: list[np.ndarray] = []

    def split(idx: np.ndarray) -> None:
        if idx.size <= leaf:
            order.append(idx)
            return
        pts = coords[idx]
        axis = int(np.argmax(np.ptp(pts, axis=0)))
        values = pts[:, axis]
        cut = np.floor(np.median(values))
        lo = values < cut - 0.25
        hi = values > cut + 0.25
        sep = ~(lo | hi)
        if not lo.any() or not hi.any():
            order.append(idx)
            return
        split(idx[lo])
        split(idx[hi])
        order.append(idx[sep])

    split(np.arange(coords.shape[0]))
    return np.concatenate(order)


class PlateletLU:
    """Q1 finite elements of a traction-free platelet, factorised once for many eigenstrain fields (a
    :class:`~mechanics.elasticity.platelet.PlateletOperator` on the CPU, float64).

    Args:
      mask: (H, W) bool, True inside the particle (numpy array or tensor).
      stiffness_2d: (2, 2, 2, 2) in-plane stiffness in GPa along grid axes (0, 1), uniform.
      spacing_nm: pixel pitch h in nm.
      weights: optional (H, W) stiffness weight per element, > 0 on every mask pixel (default 1):
        element stiffness w·C and eigenstrain load w·C:ε⁰. With w the area fraction of a pixel covered
        by the particle, rim pixels are partial-coverage elements (the same ersatz-material model as
        the ``weights`` of :class:`~mechanics.elasticity.platelet_pcg.PlateletPCG`).

    Raises:
      InputError: a malformed mask, stiffness, spacing or weights (the field is named).

    Attributes: ``mask``, ``shape``, ``spacing_nm``, ``device`` (CPU), ``dtype`` (float64), ``n_elements``,
    ``n_dofs``, ``pinned_dofs`` (three per connected piece), ``operators`` (scipy sparse L
    (dofs × 3·elements) and B (3·elements × dofs)).
    """

    def __init__(self, mask, stiffness_2d, spacing_nm: float, weights=None) -> None:
        from scipy import ndimage, sparse
        from scipy.sparse import linalg as splinalg

        mask_np, c, h = platelet_inputs(mask, stiffness_2d, spacing_nm)
        if c.shape != (2, 2, 2, 2):
            raise InputError("stiffness_2d", "shape (2, 2, 2, 2) (GPa, grid axes 0 and 1)", c.shape)
        self.mask = mask_np
        self.shape = mask_np.shape
        self.spacing_nm = h
        self.device = torch.device("cpu")
        self.dtype = torch.float64
        d = voigt_2d(c)
        self.stiffness_voigt = d

        # elements and their pieces (edge-connected); nodes are keyed by (piece, lattice corner)
        labels, n_pieces = ndimage.label(mask_np)
        rows, cols = np.nonzero(mask_np)
        self.element_rows, self.element_cols = rows, cols
        n_el = rows.size
        self.n_elements = n_el
        if weights is None:
            w_el = np.ones(n_el)
        else:
            w_map = np.asarray(weights, dtype=float)
            if w_map.shape != self.shape:
                raise InputError("weights", f"shape {self.shape}", w_map.shape)
            w_el = w_map[rows, cols]
            if not np.all(np.isfinite(w_el) & (w_el > 0)):
                raise InputError("weights", "finite and > 0 on every mask pixel", "a value <= 0 or NaN")
        width = self.shape[1] + 1
        corner_r = rows[:, None] + CORNERS[None, :, 0]
        corner_c = cols[:, None] + CORNERS[None, :, 1]
        piece = labels[rows, cols].astype(np.int64)
        lattice_node = corner_r * width + corner_c
        key = (piece[:, None] - 1) * (self.shape[0] + 1) * width + lattice_node
        unique_keys, node_of = np.unique(key.ravel(), return_inverse=True)
        node_of = node_of.reshape(n_el, 4)
        n_nodes = unique_keys.size
        self.n_dofs = 2 * n_nodes
        dofs = np.empty((n_el, 8), dtype=np.int64)
        dofs[:, 0::2] = 2 * node_of
        dofs[:, 1::2] = 2 * node_of + 1

        # element matrices (identical for all elements: uniform C and h)
        ke = np.zeros((8, 8))
        for s in GAUSS:
            for t in GAUSS:
                b = b_matrix(s, t, h)
                ke += 0.25 * h * h * b.T @ d @ b
        b_centre = b_matrix(0.5, 0.5, h)
        le = h * h * b_centre.T @ d  # (8, 3) nodal force per unit eigenstrain (Voigt, engineering shear)

        ii = np.repeat(dofs, 8, axis=1).ravel()
        jj = np.tile(dofs, (1, 8)).ravel()
        k_full = sparse.coo_matrix((np.outer(w_el, ke.ravel()).ravel(), (ii, jj)),
                                   shape=(self.n_dofs,) * 2).tocsr()

        el_cols = 3 * np.arange(n_el)[:, None] + np.arange(3)[None, :]  # (n_el, 3)
        l_rows = np.repeat(dofs, 3, axis=1).ravel()
        l_cols = np.tile(el_cols, (1, 8)).ravel()
        load = sparse.coo_matrix(
            (np.outer(w_el, le.ravel()).ravel(), (l_rows, l_cols)), shape=(self.n_dofs, 3 * n_el)
        ).tocsr()
        b_rows = np.repeat(el_cols, 8, axis=1).ravel()
        b_cols = np.tile(dofs, (1, 3)).ravel()
        strain_op = sparse.coo_matrix(
            (np.tile(b_centre.ravel(), n_el), (b_rows, b_cols)), shape=(3 * n_el, self.n_dofs)
        ).tocsr()
        self.operators = {"L": load, "B": strain_op}

        # three pins per piece: both components of the first node of its first element, and the axis-0
        # component of the node one pixel further along axis 1 (corner (0, 1)), which stops rotation
        _, first_el = np.unique(piece, return_index=True)
        # node (0, 0): u0 and u1; node (0, 1), one pixel along axis 1: u0
        pinned = np.concatenate([dofs[first_el, 0], dofs[first_el, 1], dofs[first_el, 6]])
        self.pinned_dofs = np.sort(pinned)
        free = np.ones(self.n_dofs, dtype=bool)
        free[self.pinned_dofs] = False
        self._free = np.flatnonzero(free)

        # nested-dissection ordering of the free DOFs (node coordinates), then an unpivoted LU
        node_rc = np.stack([unique_keys % ((self.shape[0] + 1) * width) // width,
                            unique_keys % width], axis=1).astype(float)
        dof_rc = np.repeat(node_rc, 2, axis=0)[self._free]
        perm = _nested_dissection(dof_rc)
        self._perm = perm
        k_ff = k_full[self._free][:, self._free]
        k_perm = k_ff[perm][:, perm].tocsc()
        self._lu = splinalg.splu(
            k_perm, permc_spec="NATURAL", diag_pivot_thresh=0.0, options={"SymmetricMode": True}
        )
        self._inv_perm = np.empty_like(perm)
        self._inv_perm[perm] = np.arange(perm.size)

    # -- linear algebra on numpy float64 --------------------------------------------------------------
    def _solve_dofs(self, rhs: np.ndarray) -> np.ndarray:
        """K⁻¹ rhs for rhs (n_dofs, n) with zero displacement at the pins."""
        sol = np.zeros_like(rhs)
        reduced = rhs[self._free][self._perm]
        sol[self._free] = self._lu.solve(np.ascontiguousarray(reduced))[self._inv_perm]
        return sol

    def _pack(self, field: np.ndarray) -> np.ndarray:
        """(n, H, W, 2, 2) tensor field → (3·n_el, n) Voigt columns (engineering shear)."""
        e = field[:, self.element_rows, self.element_cols]  # (n, n_el, 2, 2)
        voigt = np.stack([e[..., 0, 0], e[..., 1, 1], e[..., 0, 1] + e[..., 1, 0]], axis=-1)
        return voigt.reshape(field.shape[0], -1).T

    def _unpack(self, columns: np.ndarray) -> np.ndarray:
        """(3·n_el, n) Voigt columns (engineering shear) → (n, H, W, 2, 2), zero outside the mask."""
        n = columns.shape[1]
        v = columns.T.reshape(n, self.n_elements, 3)
        out = np.zeros((n, *self.shape, 2, 2))
        out[:, self.element_rows, self.element_cols, 0, 0] = v[..., 0]
        out[:, self.element_rows, self.element_cols, 1, 1] = v[..., 1]
        out[:, self.element_rows, self.element_cols, 0, 1] = 0.5 * v[..., 2]
        out[:, self.element_rows, self.element_cols, 1, 0] = 0.5 * v[..., 2]
        return out

    def apply(self, eigenstrain: np.ndarray) -> np.ndarray:
        """Total strain (n, H, W, 2, 2) of eigenstrain fields (n, H, W, 2, 2), numpy float64."""
        ops = self.operators
        u = self._solve_dofs(ops["L"] @ self._pack(eigenstrain))
        return self._unpack(ops["B"] @ u)

    def apply_adjoint(self, strain_grad: np.ndarray) -> np.ndarray:
        """Adjoint of :meth:`apply`: Lᵀ K⁻¹ Bᵀ applied to a strain cotangent (n, H, W, 2, 2).

        The Voigt packing doubles the shear; the factor ½ on unpacking and the symmetric split make this
        the exact transpose with respect to the Frobenius inner product of tensor fields.
        """
        ops = self.operators
        g = strain_grad[:, self.element_rows, self.element_cols]  # (n, n_el, 2, 2)
        # d(strain tensor)/d(voigt): ε00 = v0, ε11 = v1, ε01 = ε10 = v2/2
        gv = np.stack([g[..., 0, 0], g[..., 1, 1], 0.5 * (g[..., 0, 1] + g[..., 1, 0])], axis=-1)
        gv = gv.reshape(g.shape[0], -1).T
        lam = self._solve_dofs(ops["B"].T @ gv)
        ev = (ops["L"].T @ lam).T.reshape(g.shape[0], self.n_elements, 3)
        out = np.zeros((g.shape[0], *self.shape, 2, 2))
        r, c = self.element_rows, self.element_cols
        out[:, r, c, 0, 0] = ev[..., 0]
        out[:, r, c, 1, 1] = ev[..., 1]
        # voigt shear = ε01 + ε10, so each off-diagonal entry receives the full shear cotangent
        out[:, r, c, 0, 1] = ev[..., 2]
        out[:, r, c, 1, 0] = ev[..., 2]
        return out

    # -- tensor interface ------------------------------------------------------------------------------
    def solve(self, eigenstrain: torch.Tensor, *, rtol: float | None = None) -> torch.Tensor:
        """Total strain of a traction-free platelet, without autograd.

        Args:
          eigenstrain: (n_rhs, H, W, 2, 2), grid-axis components, tensor shear.
          rtol: ignored (the factorised solve is exact to round-off); part of the operator contract.

        Returns:
          strain (same shape, dtype and device), zero outside the mask. Use :meth:`strain` for autograd.

        Raises:
          InputError: ``eigenstrain`` of the wrong shape.
        """
        x = check_field(eigenstrain, self.shape, "eigenstrain")
        out = self.apply(x.detach().cpu().double().numpy())
        return torch.from_numpy(out).to(dtype=x.dtype if x.is_floating_point() else torch.float64,
                                        device=x.device)

    def strain(self, eigenstrain: torch.Tensor, *, rtol: float | None = None) -> torch.Tensor:
        """Differentiable total strain (n, H, W, 2, 2) of eigenstrain (n, H, W, 2, 2).

        Backward: ∂ℓ/∂ε⁰ = Lᵀ K⁻¹ Bᵀ ∂ℓ/∂ε, one more solve with the same factor (K is symmetric).
        ``rtol`` is ignored, as in :meth:`solve`.
        """
        return _PlateletStrain.apply(check_field(eigenstrain, self.shape, "eigenstrain"), self)

    def work(self) -> dict[str, int]:
        """Nothing to count: the cost is the one factorisation."""
        return {}

    def stress(self, strain: torch.Tensor, eigenstrain: torch.Tensor) -> torch.Tensor:
        """σ = C : (ε − ε⁰) in GPa, zero outside the mask."""
        c = torch.as_tensor(self._stiffness_tensor(), dtype=strain.dtype, device=strain.device)
        sigma = torch.einsum("ijkl,...kl->...ij", c, strain - eigenstrain)
        m = torch.as_tensor(self.mask, device=strain.device)[..., None, None]
        return torch.where(m, sigma, torch.zeros_like(sigma))

    def _stiffness_tensor(self) -> np.ndarray:
        d = self.stiffness_voigt
        idx = {(0, 0): 0, (1, 1): 1, (0, 1): 2, (1, 0): 2}
        c = np.zeros((2, 2, 2, 2))
        for (i, j), p in idx.items():
            for (k, l), q in idx.items():
                c[i, j, k, l] = d[p, q]
        return c


class _PlateletStrain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, eigenstrain: torch.Tensor, solver: PlateletLU) -> torch.Tensor:
        ctx.solver = solver
        out = solver.apply(eigenstrain.detach().cpu().double().numpy())
        return torch.from_numpy(out).to(dtype=eigenstrain.dtype, device=eigenstrain.device)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        solver: PlateletLU = ctx.solver
        g = solver.apply_adjoint(grad_output.detach().cpu().double().numpy())
        return torch.from_numpy(g).to(dtype=grad_output.dtype, device=grad_output.device), None

