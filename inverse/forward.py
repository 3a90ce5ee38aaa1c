"""The forward model of a correlative image set: total strain of a free platelet as a function of X.

For a platelet with mask M imaged along [010] (in-plane crystal axes a and c), uniform stiffness C in
generalized plane stress, and a diagonal eigenstrain ε⁰(X) = diag(f_a(X), f_c(X)) in the crystal frame,
the measured total strain is linear in the law:

    ε(r) = Σ_i Σ_k θ_ik · S[φ_k(X(r)) · e_i ⊗ e_i](r) + ε_ref,

with S the (linear) eigenstrain → strain operator of the traction-free body (Q1 finite elements, a
:class:`mechanics.elasticity.PlateletOperator`: the sparse LU on a CPU, the matrix-free PCG on a GPU),
φ_k the piecewise-linear hat functions on the knots, e_i the crystal axes in the grid frame, and ε_ref a
uniform offset of the strain reference. The columns S[φ_k e_i e_i] are computed with one factorisation.

The in-plane stiffness is the core's ``Stiffness.reduced(axes=(0, 2), plane)``: generalized plane
stress (σ_bj = 0) inverts the in-plane block of the compliance, so the out-of-plane eigenstrain drops out
of the in-plane problem; plane strain keeps the in-plane block of C.
"""

from __future__ import annotations

import numpy as np
import torch

from inverse.images import crystal_rotation, stiffness_to_grid
from mechanics.elasticity import PlateletLU, PlateletOperator, PlateletPCG


def lfp_material():
    """Reference LFP parameters of the mechanics core (Maxisch–Ceder stiffness, Padhi lattices)."""
    from mechanics.parameters.lfp import lfp_params

    return lfp_params()


def resolve_device(device=None, solver: str = "auto") -> tuple[torch.device, str]:
    """(device, solver kind) for the calibration's platelet solves.

    device: None or "auto" (the first CUDA device when there is one, else the CPU), or any torch device
    string. solver: "auto" (sparse LU on a CPU, matrix-free PCG elsewhere), "lu" or "pcg".
    """
    from mechanics.errors import InputError

    if device in (None, "auto"):
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise InputError("device", "'auto', 'cpu', 'cuda' or 'cuda:N'", device) from err
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise InputError("device", "a CUDA device present on this machine (torch sees none)", device)
    if solver not in ("auto", "lu", "pcg"):
        raise InputError("solver", "'auto', 'lu' or 'pcg'", solver)
    if solver == "auto":
        solver = "lu" if dev.type == "cpu" else "pcg"
    if solver == "lu" and dev.type != "cpu":
        raise InputError("solver", "'pcg' or 'auto' on a GPU (the sparse LU runs on the CPU)", solver)
    return dev, solver


# Rim pixels outside the data mask become elements when at least this fraction of them is covered:
# thinner slivers carry < 5 % of a pixel's stiffness, and near-zero weights slow the PCG down.
MIN_COVERAGE = 0.05


def rim_elements(mask: np.ndarray, coverage: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(elements, weights) of the forward model for a data ``mask`` and an optional pixel ``coverage``.

    Without coverage the elements are the mask pixels, all of full weight (the outline is the pixel
    staircase). With it, every mask pixel on the rim (one with an edge neighbour outside the mask) is an
    element of weight = its covered area fraction, and pixels outside the mask that share an edge with
    it and are covered by at least :data:`MIN_COVERAGE` are added (partial-coverage elements): the
    model's outline then follows the particle's sub-pixel edge instead of the staircase. Interior
    mask pixels keep weight 1 whatever the map says there.
    """
    from scipy import ndimage

    if coverage is None:
        return mask, None
    cov = np.nan_to_num(np.asarray(coverage, dtype=float))
    ring = ndimage.binary_dilation(mask) & ~mask  # edge neighbours: no element hangs on a corner
    elements = mask | (ring & (cov >= MIN_COVERAGE))
    weights = np.where(elements, np.clip(cov, MIN_COVERAGE, 1.0), 0.0)
    # pixels whose four neighbours are all in the mask are inside the particle: full weight, so that
    # noise or thickness contrast in a measured coverage map does not make the interior heterogeneous
    weights[ndimage.binary_erosion(mask, border_value=0)] = 1.0
    return elements, weights


def nearest_in_mask(mask: np.ndarray, elements: np.ndarray) -> np.ndarray:
    """For every element pixel (row-major order of ``np.nonzero(elements)``), the index of the nearest
    mask pixel in the row-major list of ``np.nonzero(mask)``: how rim elements take their composition."""
    from scipy import ndimage

    _, (near_r, near_c) = ndimage.distance_transform_edt(~mask, return_indices=True)
    position = np.full(mask.shape, -1, dtype=np.int64)
    position[mask] = np.arange(int(mask.sum()))
    rows, cols = np.nonzero(elements)
    return position[near_r[rows, cols], near_c[rows, cols]]


def element_index(mask: np.ndarray, elements: np.ndarray, device=None):
    """Torch indices for putting per-mask-pixel values onto the solver's elements: (rows, cols) of the
    elements and, per element, the index of its source pixel in the list of mask pixels (itself, or the
    nearest one for a rim element outside the mask): ``field[rows, cols] = values[source]``."""
    el_r, el_c = (torch.as_tensor(v, device=device) for v in np.nonzero(elements))
    return el_r, el_c, torch.as_tensor(nearest_in_mask(mask, elements), device=device)


def extend_to_elements(field: np.ndarray, mask: np.ndarray, elements: np.ndarray) -> np.ndarray:
    """``field`` (H, W, ...) with the rim elements outside ``mask`` filled from their nearest mask pixel
    (and zero elsewhere outside the mask)."""
    if elements is mask or np.array_equal(elements, mask):
        return field
    out = np.where(mask.reshape(mask.shape + (1,) * (field.ndim - 2)), field, 0.0)
    src = nearest_in_mask(mask, elements)
    rows, cols = np.nonzero(mask)
    er, ec = np.nonzero(elements)
    out[er, ec] = field[rows[src], cols[src]]
    return out


def platelet_solver(mask: np.ndarray, angle_deg: float, pixel_nm: float, voigt_GPa=None,
                    plane: str = "stress", device=None, solver: str = "auto",
                    coverage=None) -> PlateletOperator:
    """Free-platelet operator on the image grid for a crystal rotated by ``angle_deg``: a factorised
    :class:`mechanics.elasticity.PlateletLU` or a :class:`mechanics.elasticity.PlateletPCG` on ``device``
    (see :func:`resolve_device`); the same discretisation and contract
    (:class:`mechanics.elasticity.PlateletOperator`). ``coverage`` (H, W), optional: the covered area
    fraction of each pixel; the solver's elements and weights are then :func:`rim_elements`
    (``solver.mask`` is the element set, which may extend one pixel beyond ``mask``)."""
    from mechanics.stiffness import Stiffness

    dev, kind = resolve_device(device, solver)
    elements, weights = rim_elements(np.asarray(mask, dtype=bool), coverage)
    if voigt_GPa is None:
        voigt_GPa = lfp_material().stiffness_voigt()
    c_ac = Stiffness.from_voigt(np.asarray(voigt_GPa, dtype=float)).reduced(axes=(0, 2), plane=plane)
    c_grid = stiffness_to_grid(c_ac.numpy(), angle_deg)
    if kind == "pcg":
        return PlateletPCG(elements, c_grid, pixel_nm, weights=weights, device=dev)
    return PlateletLU(elements, c_grid, pixel_nm, weights=weights)


def axis_tensors(angle_deg: float) -> np.ndarray:
    """(2, 2, 2): e_i ⊗ e_i in grid components for crystal axes i = a, c."""
    r = crystal_rotation(angle_deg)
    return np.einsum("ip,iq->ipq", r, r)


def hat_basis(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """φ_k(x), shape (..., K): the design matrix of the core's PiecewiseLinearLaw (linear continuation
    beyond [0, 1]), so that the fitted knot values mean exactly what the law module evaluates."""
    from mechanics.laws import PiecewiseLinearLaw

    law = PiecewiseLinearLaw(np.asarray(knots, float), np.zeros((3, len(knots))))
    return law.basis(torch.as_tensor(np.asarray(x, dtype=float))).numpy()


def eigenstrain_grid(values_ac: np.ndarray, angle_deg: float) -> np.ndarray:
    """Grid-frame eigenstrain (..., 2, 2) of crystal-frame diagonal values (..., 2) = (f_a, f_c)."""
    return np.einsum("...i,ipq->...pq", values_ac, axis_tensors(angle_deg))


def basis_responses(solver: PlateletOperator, phi: np.ndarray, angle_deg: float, chunk: int = 16,
                    blur=None) -> np.ndarray:
    """Strain responses to each law coefficient: (2, K−1, H, W, 2, 2), the grid-frame strain of
    φ_k(X)·e_i⊗e_i for i = a, c and k = 1..K−1 (the knot at X = 0 is fixed to ε⁰ = 0), passed through
    ``blur`` (an :class:`inverse.psf.MaskedGaussian`, or None) when given.

    phi: (H, W, K) hat values per pixel (φ_k(X), or their posterior mean under composition noise), on
    the solver's elements (rim elements outside the data mask: :func:`extend_to_elements`).
    The fields are built, solved and blurred on the solver's device and copied back once.
    """
    phi = np.where(solver.mask[..., None], np.nan_to_num(phi[..., 1:]), 0.0)
    kw = {"dtype": solver.dtype, "device": solver.device}
    phi_t = torch.as_tensor(phi, **kw)
    axes_t = torch.as_tensor(axis_tensors(angle_deg), **kw)
    fields = torch.einsum("hwk,ipq->ikhwpq", phi_t, axes_t).reshape(-1, *solver.shape, 2, 2)
    parts = []
    for i in range(0, fields.shape[0], chunk):
        strain = solver.solve(fields[i:i + chunk])
        if blur is not None:
            strain = blur(strain.permute(0, 3, 4, 1, 2)).permute(0, 3, 4, 1, 2)
        parts.append(strain.double().cpu().numpy())
    return np.concatenate(parts).reshape(2, phi.shape[-1], *solver.shape, 2, 2)
