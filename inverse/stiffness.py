"""Fit of the FePO4/LiFePO4 stiffness contrast together with the law (L-BFGS through the FE adjoint).

Model: the in-plane stiffness of a pixel with Li fraction X is the linear mix of the end members

    C(X) = X · C_LFP + (1 − X) · r · C_FP,

with C_LFP and C_FP the Voigt constants of LiFePO4 and FePO4 (Maxisch & Ceder, Phys. Rev. B 73, 174112
(2006), :mod:`mechanics.parameters.maxisch_ceder2006`), each reduced to the a–c plane (generalized plane
stress by default) and rotated to the grid frame exactly as :func:`inverse.forward.platelet_solver`
does, and r > 0 the fitted FePO4 stiffness ratio (r = 1: the DFT values). X is clipped to [0, 1] in the
stiffness weights only (a denoised map may overshoot the end members slightly; the law itself is
continued linearly as everywhere else).

Why a ratio and not a scale: the strain of a traction-free body is homogeneous of degree 0 in the
stiffness (C → sC leaves it unchanged), so a uniform scale is not identifiable and C_LFP is held fixed.
Only the contrast between the end members moves the strain.

| symbol | meaning | variable | shape | unit |
|---|---|---|---|---|
| r | FePO4 stiffness ratio | ``ratio`` | () | 1 |
| x_k | law knots, x_0 = 0 < ... < x_{K-1} = 1 | ``knots_X`` | (K,) | 1 |
| v_ik | ε⁰ along a (i=0) and c (i=1) at the knots, v_i0 = 0 | ``values`` | (2, K) | 1 |
| ε_ref | uniform strain-reference offset, crystal frame (a, c) | ``offset`` | (2, 2) | 1 |
| w | per-pixel 1/σ_ε² | | (H, W) | 1 |
| b_di | Burgers vector of dislocation d along a (i=0) and c (i=1) | ``burgers_nm`` | (D, 2) | nm |

Objective (mask pixels, rows ε00, ε11, ε01 of the grid frame, as :func:`inverse.joint.fit_law_autograd`):

    χ²/2 = ½ Σ_r w_r ‖S_r[ε⁰(X)](r) + ε_ref + Σ_d Σ_i b_di D_di(r) − ε_obs(r)‖²,

minimised jointly over log r, the knot values (piecewise linear, :class:`mechanics.laws.PiecewiseLinearLaw`
basis) and ε_ref (3 free components when ``strain_reference`` is "unknown", −ε⁰(1) for "LiMPO4", 0 for
"MPO4") by L-BFGS (strong Wolfe) through the matrix-free solver :class:`mechanics.elasticity.PlateletPCG`
with two materials and per-pixel weights (X, (1 − X)·r), whose implicit adjoint gives the gradient in r.
D_di: the Volterra field of a unit edge dislocation at a given position with Burgers vector along
crystal axis i (:func:`inverse.dislocations.unit_fields`), b_di its Burgers components (nm), free nuisance
parameters for each position passed in ``dislocations`` (e.g. those the linear calibration found); pixels
within 1.5 px of a core are dropped, as in the calibration. Unmodelled dislocations bias r strongly (their
1/r fields look like stiffness contrast near phase boundaries; see docs/inverse.md "Stiffness contrast").
The law starts from the linear least-squares fit at r = ``r0`` (one solve per hat function and axis)
unless ``law_values`` are given. Uncertainty: Laplace, the inverse Hessian of χ²/2 (central differences
of the autograd gradient) times max(1, χ²_red) when σ_ε is declared, times χ²_red when it is not.

    from inverse.stiffness import fit_stiffness_ratio
    fit = fit_stiffness_ratio(images)          # StiffnessFit: .ratio, .ratio_std, .values, .offset, ...
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from inverse.joint import default_composition, single_thread
from mechanics.errors import InputError

_ROWS = ((0, 0), (1, 1), (0, 1))
_STRAIN_UNIT = 1e-3  # optimiser units of strain-like parameters: log r, knot values and offsets all O(1)


@dataclass(frozen=True)
class StiffnessFit:
    """Result of :func:`fit_stiffness_ratio`.

    ratio, ratio_std: r = C_FP(fitted)/C_FP(Maxisch–Ceder) and its 1σ (Laplace; r·σ(log r)).
    knots_X (K,); values, values_std (2, K): ε⁰ along a and c at the knots (column 0 is 0 by definition).
    offset (2, 2): strain-reference offset in the crystal frame (a, c).
    chi2_reduced: χ² / (3N − n_params) with the declared σ_ε (1 when none is declared).
    objective: χ²/2 at the optimum. n_iter: L-BFGS iterations; n_evals: objective evaluations.
    converged: the Newton step left to the minimum is below 0.1σ in every parameter.
    corr_ratio_law: correlation of log r with each knot value (2, K), from the same covariance.
    burgers_nm (D, 2): fitted Burgers components (a, c) of the dislocations passed in (D = 0 if none).
    """

    ratio: float
    ratio_std: float
    knots_X: np.ndarray
    values: np.ndarray
    values_std: np.ndarray
    offset: np.ndarray
    chi2_reduced: float
    objective: float
    n_iter: int
    n_evals: int
    converged: bool
    corr_ratio_law: np.ndarray
    burgers_nm: np.ndarray

    @property
    def vegard(self) -> tuple[float, float]:
        """Least-squares slopes through the origin of the knot values (a, c) (knots weighted equally)."""
        x = self.knots_X
        return tuple(float(v @ x / (x @ x)) for v in self.values)


def contrast_stiffness(angle_deg: float, plane: str = "stress", lfp_voigt_GPa=None,
                       fp_voigt_GPa=None) -> np.ndarray:
    """(2, 2, 2, 2, 2) GPa: the in-plane grid-frame stiffness of [C_LFP, C_FP] (the two materials of
    :class:`mechanics.elasticity.PlateletPCG`). Defaults: Maxisch & Ceder (2006) LiFePO4 and FePO4."""
    from inverse.images import stiffness_to_grid
    from mechanics.parameters.maxisch_ceder2006 import FEPO4, LIFEPO4
    from mechanics.stiffness import Stiffness

    out = []
    for voigt, default in ((lfp_voigt_GPa, LIFEPO4), (fp_voigt_GPa, FEPO4)):
        v = default.voigt() if voigt is None else np.asarray(voigt, dtype=float)
        c_ac = Stiffness.from_voigt(v).reduced(axes=(0, 2), plane=plane)
        out.append(stiffness_to_grid(c_ac.numpy(), angle_deg))
    return np.stack(out)


def contrast_weights(x, ratio):
    """Material weights (2, H, W) = (X, (1 − X)·r) with X clipped to [0, 1]; numpy or torch (then
    differentiable in ``ratio``)."""
    if isinstance(x, torch.Tensor) or isinstance(ratio, torch.Tensor):
        xc = torch.as_tensor(x).clamp(0.0, 1.0)
        return torch.stack([xc, (1.0 - xc) * ratio])
    xc = np.clip(x, 0.0, 1.0)
    return np.stack([xc, (1.0 - xc) * ratio])


def _check_inputs(images, knots, n_knots, law_values, x, r0, n_iter, dislocations):
    if knots is None:
        if not isinstance(n_knots, (int, np.integer)) or n_knots < 3:
            raise InputError("n_knots", "an integer >= 3", n_knots)
        knots = np.linspace(0.0, 1.0, int(n_knots))
    knots = np.asarray(knots, dtype=float)
    if (knots.ndim != 1 or knots.size < 3 or
            knots[0] != 0.0 or knots[-1] != 1.0 or np.any(np.diff(knots) <= 0)):
        raise InputError("knots", "strictly increasing knots from 0 to 1 (at least 3)", knots.tolist())
    if not (isinstance(r0, (int, float, np.floating)) and np.isfinite(r0) and r0 > 0):
        raise InputError("r0", "a finite stiffness ratio > 0", r0)
    if not isinstance(n_iter, (int, np.integer)) or n_iter < 1:
        raise InputError("n_iter", "an integer >= 1", n_iter)
    if images.strain_sigma is not None and not np.all(np.asarray(images.strain_sigma) > 0):
        raise InputError("strain_sigma", "> 0 everywhere (or None)", images.strain_sigma)
    if law_values is not None:
        law_values = np.asarray(law_values, dtype=float)
        if law_values.shape != (2, knots.size) or not np.all(np.isfinite(law_values)):
            raise InputError("law_values", f"a finite (2, {knots.size}) array (a, c at the knots)",
                             law_values.shape)
    if x is not None:
        x = np.asarray(x, dtype=float)
        if x.shape != images.mask.shape:
            raise InputError("x", f"a {images.mask.shape} composition map on the strain grid", x.shape)
        if not np.all(np.isfinite(x[images.mask])):
            bad = int(np.sum(~np.isfinite(x[images.mask])))
            raise InputError("x", "finite values on every mask pixel", f"{bad} non-finite")
    try:
        dislocations = np.asarray(np.zeros((0, 2)) if dislocations is None else dislocations, dtype=float)
    except (TypeError, ValueError):
        raise InputError("dislocations", "an (n, >= 2) array of (row, col) pixel positions",
                         dislocations) from None
    if dislocations.size == 0:
        dislocations = np.zeros((0, 2))
    if dislocations.ndim != 2 or dislocations.shape[1] < 2 or not np.all(np.isfinite(dislocations[:, :2])):
        raise InputError("dislocations", "an (n, >= 2) array of finite (row, col) pixel positions",
                         dislocations.shape)
    return knots, law_values, x, dislocations[:, :2]


def fit_stiffness_ratio(images, *, knots=None, n_knots: int = 11, law_values=None, x=None, r0: float = 1.0,
                        dislocations=None, n_iter: int = 200, plane: str = "stress", material=None,
                        fp_voigt_GPa=None, device=None) -> StiffnessFit:
    """Fit the FePO4 stiffness ratio r, the law ε⁰(X) along a and c and the reference offset to one image
    set (model and objective in the module docstring).

    Args:
      images: an :class:`inverse.images.ImageSet`.
      knots: law knots on [0, 1] (default: ``n_knots`` uniform).
      n_knots: number of uniform knots when ``knots`` is None (default 11).
      law_values: (2, K) starting law (a, c at the knots, e.g. a linear calibration's ``values``);
        default the linear least squares at r = r0.
      x: composition on the strain grid (H, W); default registered and non-local-means denoised.
      r0: starting ratio. n_iter: L-BFGS iteration cap.
      dislocations: (D, >= 2) positions (row, col) in pixels of edge dislocations whose Burgers vectors are
        fitted as nuisance parameters, e.g. ``calibration.residual[0]["dislocations"]``; None: none.
      plane: "stress" (generalized plane stress) or "strain" for the a–c reduction.
      material: LFP parameters (default the core's: Maxisch–Ceder LiFePO4 stiffness, Padhi misfit);
        its stiffness is C_LFP. fp_voigt_GPa: C_FP (6, 6) (default Maxisch–Ceder FePO4).
      device: torch device of the solves (default CPU).
    """
    with single_thread():
        return _fit(images, knots, n_knots, law_values, x, r0, dislocations, n_iter, plane, material,
                    fp_voigt_GPa, device)


def _fit(images, knots, n_knots, law_values, x, r0, dislocations, n_iter, plane, material, fp_voigt_GPa,
         device):
    from inverse.dislocations import unit_fields
    from inverse.forward import (
        axis_tensors,
        element_index,
        extend_to_elements,
        hat_basis,
        lfp_material,
        rim_elements,
    )
    from inverse.images import crystal_rotation, grid_to_crystal
    from mechanics.elasticity import PlateletPCG

    if plane not in ("stress", "strain"):
        raise InputError("plane", "'stress' or 'strain'", plane)
    knots, law_values, x, dislocations = _check_inputs(images, knots, n_knots, law_values, x, r0, n_iter,
                                                        dislocations)
    material = material or lfp_material()
    if x is None:
        x = default_composition(images)
    mask = images.mask
    angle = images.crystal_angle_deg
    stiff = contrast_stiffness(angle, plane, material.stiffness_voigt(), fp_voigt_GPa)
    elements, cover = rim_elements(mask, images.coverage)  # partial-coverage rim, as in calibrate
    solver = PlateletPCG(elements, stiff, images.pixel_size_nm, device=device)
    dev = solver.device
    kw = {"dtype": torch.float64, "device": dev}

    rows, cols = np.nonzero(mask)
    n_px, k_free = rows.size, knots.size - 1
    ri, ci = torch.as_tensor(rows, device=dev), torch.as_tensor(cols, device=dev)
    el_r, el_c, source = element_index(mask, elements, dev)
    cover_t = torch.as_tensor(cover, **kw) if cover is not None else None
    x_map = torch.as_tensor(extend_to_elements(np.where(mask, np.nan_to_num(x), 0.0), mask, elements), **kw)
    phi = torch.as_tensor(hat_basis(np.nan_to_num(x)[rows, cols], knots)[:, 1:], **kw)  # (N, K-1)
    axes = torch.as_tensor(axis_tensors(angle), **kw)  # (2, 2, 2) e_i ⊗ e_i, grid frame
    target = torch.as_tensor(images.strain_grid()[rows, cols], **kw)  # (N, 2, 2)
    declared = images.strain_sigma is not None
    sig = np.broadcast_to(images.strain_sigma if declared else 1.0, mask.shape)[rows, cols]
    w_np = 1.0 / np.square(sig)
    w_mean = float(w_np.mean())
    rot = crystal_rotation(angle)
    disl = np.zeros((len(dislocations), 2, n_px, 2, 2))
    for d, pos in enumerate(dislocations):
        disl[d] = unit_fields(mask.shape, tuple(pos), images.pixel_size_nm, rot)[:, rows, cols]
        w_np = np.where(np.hypot(rows - pos[0], cols - pos[1]) <= 1.5, 0.0, w_np)  # core: model invalid
    disl_t = torch.as_tensor(disl.reshape(-1, n_px, 2, 2), **kw)
    w = torch.as_tensor(w_np, **kw)
    free_offset = images.strain_reference == "unknown"
    n_off = 3 if free_offset else 0
    n_par = 1 + 2 * k_free + n_off + disl_t.shape[0]

    def unpack(theta):
        log_r = theta[0]
        vals = theta[1:1 + 2 * k_free].reshape(2, k_free) * _STRAIN_UNIT
        if free_offset:
            o = theta[1 + 2 * k_free:1 + 2 * k_free + 3] * _STRAIN_UNIT
            off = torch.stack([torch.stack([o[0], o[2]]), torch.stack([o[2], o[1]])])
        elif images.strain_reference == "LiMPO4":  # first order: the reference lattice is ε⁰(1)
            off = -torch.einsum("i,ipq->pq", vals[:, -1], axes)
        else:
            off = torch.zeros(2, 2, **kw)
        defects = torch.einsum("d,dnpq->npq", theta[1 + 2 * k_free + n_off:], disl_t)  # Burgers in nm
        return log_r, vals, off, defects

    def strain_of(log_r, eig_px):
        """Strain (n, N, 2, 2) on the mask pixels of eigenstrains (n, N, 2, 2) or (N, 2, 2)."""
        batch = eig_px.reshape(-1, n_px, 2, 2)
        eig = torch.zeros((batch.shape[0], *mask.shape, 2, 2), **kw)
        eig[:, el_r, el_c] = batch[:, source]
        scale = contrast_weights(x_map, torch.exp(log_r))
        if cover_t is not None:
            scale = scale * cover_t
        out = solver.strain(eig, stiffness_scale=scale)[:, ri, ci]
        return out.reshape(eig_px.shape)

    def chi2_half(theta):
        log_r, vals, off, defects = unpack(theta)
        eig_px = torch.einsum("nk,ik,ipq->npq", phi, vals, axes)
        res = strain_of(log_r, eig_px) + off + defects - target
        return 0.5 * sum((w * res[:, i, j] ** 2).sum() for i, j in _ROWS)

    # optimiser objective: χ²/2 per pixel in units of (σ_mean/_STRAIN_UNIT)², all curvatures O(0.1-1)
    to_opt = 1.0 / (n_px * w_mean * _STRAIN_UNIT**2)
    theta0 = torch.zeros(n_par, **kw)
    theta0[0] = float(np.log(r0))
    if law_values is None:  # law, offset and Burgers vectors of the linear least squares at r0
        lin = _linear_start(strain_of, theta0[0], phi, axes, target, w, images.strain_reference, free_offset,
                            disl_t)
        theta0[1:1 + 2 * k_free + n_off] = lin[:2 * k_free + n_off] / _STRAIN_UNIT
        theta0[1 + 2 * k_free + n_off:] = lin[2 * k_free + n_off:]
    else:
        theta0[1:1 + 2 * k_free] = torch.as_tensor(law_values[:, 1:].ravel() / _STRAIN_UNIT, **kw)
        if free_offset:
            with torch.no_grad():  # best uniform offset for the given law
                log_r, vals, _, _ = unpack(theta0)
                res = strain_of(log_r, torch.einsum("nk,ik,ipq->npq", phi, vals, axes)) - target
                mean = (w[:, None, None] * res).sum(0) / w.sum()
                theta0[1 + 2 * k_free:1 + 2 * k_free + 3] = torch.stack(
                    [-mean[0, 0], -mean[1, 1], -mean[0, 1]]) / _STRAIN_UNIT
    theta = theta0.clone().requires_grad_(True)
    tol_grad = 1e-7
    opt = torch.optim.LBFGS([theta], max_iter=n_iter, max_eval=int(n_iter * 1.5), history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=tol_grad, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = to_opt * chi2_half(theta)
        loss.backward()
        return loss

    opt.step(closure)
    state = opt.state[theta]

    theta_hat = theta.detach().clone()
    hess = _hessian_fd(lambda t: to_opt * chi2_half(t), theta_hat) / to_opt  # of χ²/2 in θ units
    with torch.no_grad():
        objective = float(chi2_half(theta_hat))
    grad = _grad(lambda t: to_opt * chi2_half(t), theta_hat) / to_opt  # of χ²/2 in θ units
    dof = max(3 * n_px - n_par, 1)
    chi2_red = 2.0 * objective / dof
    factor = max(1.0, chi2_red) if declared else chi2_red
    cov = np.linalg.pinv(hess) * factor
    std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    newton = np.linalg.pinv(hess) @ grad  # the step still left to the minimum, θ units

    log_r, vals, off, _ = unpack(theta_hat)
    ratio = float(torch.exp(log_r))
    values = np.zeros((2, knots.size))
    values[:, 1:] = vals.cpu().numpy()
    values_std = np.zeros((2, knots.size))
    values_std[:, 1:] = std[1:1 + 2 * k_free].reshape(2, k_free) * _STRAIN_UNIT
    corr = np.zeros((2, knots.size))
    law_idx = slice(1, 1 + 2 * k_free)
    corr[:, 1:] = (cov[0, law_idx] / np.maximum(std[0] * std[law_idx], 1e-300)).reshape(2, -1)
    return StiffnessFit(
        ratio=ratio,
        ratio_std=ratio * float(std[0]),
        knots_X=knots,
        values=values,
        values_std=values_std,
        offset=grid_to_crystal(off.cpu().numpy(), angle),
        chi2_reduced=float(chi2_red),
        objective=objective,
        n_iter=int(state.get("n_iter", 0)),
        n_evals=int(state.get("func_evals", 0)),
        converged=bool(np.all(np.abs(newton) <= 0.1 * np.maximum(std, 1e-300))),
        corr_ratio_law=corr,
        burgers_nm=theta_hat[1 + 2 * k_free + n_off:].cpu().numpy().reshape(-1, 2),
    )


def _linear_start(strain_of, log_r, phi, axes, target, w, reference, free_offset, defects) -> torch.Tensor:
    """Weighted linear least squares at fixed r (no smoothness penalty: only a starting point), with the
    same offset and dislocation model as the fit: (law a, law c (K−1 each), offset (3 if free), Burgers
    (2 per dislocation, nm)) in physical units."""
    cols = []
    with torch.no_grad():
        eig = torch.einsum("nk,ipq->iknpq", phi, axes).reshape(-1, *phi.shape[:1], 2, 2)
        for i, s in enumerate(strain_of(log_r, eig).reshape(2, phi.shape[1], -1, 2, 2)):
            if reference == "LiMPO4":  # the offset −ε⁰(1) moves with the last knot value
                s[-1] -= axes[i]
            cols += [torch.stack([sk[:, p, q] for p, q in _ROWS], -1).reshape(-1) for sk in s]
        n = target.shape[0]
        if free_offset:
            for p, q in _ROWS:
                e = torch.zeros(n, 3, dtype=target.dtype, device=target.device)
                e[:, _ROWS.index((p, q))] = 1.0
                cols.append(e.reshape(-1))
        cols += [torch.stack([f[:, p, q] for p, q in _ROWS], -1).reshape(-1) for f in defects]
        a = torch.stack(cols, 1)
        b = torch.stack([target[:, p, q] for p, q in _ROWS], -1).reshape(-1)
        sw = torch.sqrt(w).repeat_interleave(3)
        return torch.linalg.lstsq(a * sw[:, None], b * sw).solution


def _grad(fun, theta: torch.Tensor) -> np.ndarray:
    t = theta.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fun(t), t)
    return g.detach().cpu().numpy()


def _hessian_fd(fun, theta: torch.Tensor, step: float = 1e-3) -> np.ndarray:
    """Symmetrised central differences of the autograd gradient (the solver's backward pass is not
    twice differentiable). ``step`` is in the optimiser's O(1) units; the objective is quadratic in all
    but log r, so the truncation error is negligible."""
    n = theta.numel()
    h = np.zeros((n, n))
    for j in range(n):
        e = torch.zeros_like(theta)
        e[j] = step
        h[:, j] = (_grad(fun, theta + e) - _grad(fun, theta - e)) / (2 * step)
    return 0.5 * (h + h.T)
