"""Joint estimation of the composition map and the law (errors in variables by maximum likelihood).

Both maps are noisy: x_obs = X + noise (σ_X) and ε_obs = S[ε⁰_θ(X)] + offsets + defects + noise (σ_ε).
With both σ known, maximising the joint likelihood over the law θ and the true map X is consistent
(the structural errors-in-variables model with a known noise ratio; Fuller, *Measurement Error Models*
(1987), §1.3, here with a nonlocal, linear-in-θ forward operator). The strain carries much information
on X (ε_aa changes by ~5 % from X = 0 to 1 against σ_ε ~ 5e-4), so X̂ ends far closer to the truth than
any denoiser of x_obs alone, and the attenuation bias of the law goes with it.

The calibration alternates: θ-step = the linear least squares of :mod:`inverse.fit` with the current X̂;
X-step = minimise over X (mask pixels), with θ, offsets and defect fields fixed,

    J(X) = ½ Σ_r w_r ‖S[ε⁰_θ(X)](r) + ε_other(r) − ε_obs(r)‖²_rows + ½ Σ_r (X_r − x_obs,r)² / σ_eff²,

by L-BFGS through the differentiable free-platelet operator (``PlateletOperator.strain``: the sparse LU,
whose backward pass is one more solve with the same factor, or the PCG on a GPU, whose solves
warm-start from the previous evaluation). σ_eff is the composition noise after
registration (interpolation averages neighbours and shrinks it; propagated exactly for white noise).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from inverse.forward import axis_tensors

_ROWS = ((0, 0), (1, 1), (0, 1))
INNER_RTOL = 1e-7  # CG tolerance of the X-step's solves (an iterative operator's; the LU ignores it)


def refine_composition(
    solver,
    x_start: np.ndarray,
    x_obs: np.ndarray,
    sigma_eff: float,
    knots: np.ndarray,
    values_ac: np.ndarray,
    angle_deg: float,
    strain_obs: np.ndarray,
    strain_other: np.ndarray,
    weight: np.ndarray,
    n_iter: int = 20,
    strain_blur=None,
    composition_blur=None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """X̂ (H, W) minimising J(X) above; NaN outside the mask.

    Args: x_start, x_obs (H, W); knots (K,), values_ac (2, K) the law along a and c; strain_obs and
    strain_other (H, W, 2, 2) grid frame (other = offsets + defect fields); weight (H, W) per-pixel
    1/σ_ε² times robust weights (0 drops a pixel from the strain term). strain_blur and
    composition_blur: the probes' PSFs (:class:`inverse.psf.MaskedGaussian`, None: none); the model
    strain is blurred before it is compared, and the prior compares the blurred X with x_obs.
    mask: the data pixels (default: the solver's elements); rim elements of the solver outside it
    (partial coverage, :func:`inverse.forward.rim_elements`) take the X of their nearest mask pixel.
    """
    from inverse.forward import element_index
    from mechanics.laws import PiecewiseLinearLaw

    mask = solver.mask if mask is None else mask
    rows, cols = np.nonzero(mask)
    dev = solver.device
    kw = {"dtype": torch.float64, "device": dev}
    law = PiecewiseLinearLaw(knots, np.zeros((3, knots.size)))
    vals = torch.as_tensor(values_ac, **kw)
    axes = torch.as_tensor(axis_tensors(angle_deg), **kw)
    target = torch.as_tensor(strain_obs[rows, cols] - strain_other[rows, cols], **kw)
    w = torch.as_tensor(weight[rows, cols], **kw)
    prior = torch.as_tensor(np.nan_to_num(x_obs[rows, cols]), **kw)
    x = torch.as_tensor(np.nan_to_num(x_start[rows, cols]), **kw).clone().requires_grad_(True)
    ri, ci = torch.as_tensor(rows, device=dev), torch.as_tensor(cols, device=dev)
    el_r, el_c, source = element_index(mask, solver.mask, dev)
    inv_var = 1.0 / sigma_eff**2
    # scale the objective to O(1) per pixel so L-BFGS's default tolerances are meaningful
    scale = 1.0 / rows.size

    def objective():
        f = law.basis(x) @ vals.T  # (n, 2)
        eig_px = torch.einsum("ni,ipq->npq", f, axes)[source]
        eig = torch.zeros((1, *mask.shape, 2, 2), **kw)
        eig = eig.index_put((torch.zeros_like(el_r), el_r, el_c), eig_px)
        # an iterative operator's inner solves only need the strain to ~1e-7 of its load (the misfit
        # resolves σ_ε ~ 1e-2 of the strain); warm starts then take a handful of iterations per evaluation
        strain_map = solver.strain(eig, rtol=INNER_RTOL)[0]
        if strain_blur is not None:
            strain_map = strain_blur(strain_map.permute(2, 3, 0, 1)).permute(2, 3, 0, 1)
        r = strain_map[ri, ci] - target
        misfit = sum((w * r[:, i, j] ** 2).sum() for i, j in _ROWS)
        x_seen = x
        if composition_blur is not None:
            x_map = torch.zeros(mask.shape, **kw).index_put((ri, ci), x)
            x_seen = composition_blur(x_map)[ri, ci]
        return scale * 0.5 * (misfit + inv_var * ((x_seen - prior) ** 2).sum())

    opt = torch.optim.LBFGS([x], max_iter=n_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)
    _run_lbfgs(opt, objective)
    out = np.full(mask.shape, np.nan)
    out[rows, cols] = x.detach().cpu().numpy()
    return out


def effective_sigma(sigma: float, to_grid, shape, valid: np.ndarray, mask: np.ndarray,
                    seed: int = 0) -> float:
    """σ of white composition noise after ``to_grid`` (registration/resampling), by propagating one
    white-noise realisation (exact in expectation for linear interpolation)."""
    rng = np.random.default_rng(seed)
    noise = np.where(valid, rng.normal(size=shape), np.nan)
    moved = to_grid(noise)
    return float(sigma * np.sqrt(np.nanmean(moved[mask] ** 2)))


def fit_law_autograd(images, law: torch.nn.Module, *, x=None, n_iter: int = 100, plane: str = "stress",
                     material=None, device=None) -> tuple[torch.nn.Module, np.ndarray]:
    """Fit any differentiable law module (``forward(X) -> (..., 3)``, e.g. a monotone
    ``PiecewiseLinearLaw`` or a nonlinear parametric form) and a uniform reference offset to one image
    set by L-BFGS through the free-platelet operator (the general path for laws that are not linear in
    their parameters).

    Minimises ½ Σ_r w_r ‖S[ε⁰(X)](r) + ε_ref − ε_obs(r)‖² over the law's parameters and ε_ref (grid
    frame). ``x``: composition on the strain grid (default: registered, non-local-means denoised).
    ``device``: as for :func:`inverse.calibrate` (None: a GPU when there is one); the law is moved there.
    Returns the trained law (in place) and the offset (2, 2) in the crystal frame.
    """
    from inverse.forward import element_index, lfp_material, platelet_solver
    from inverse.images import grid_to_crystal

    material = material or lfp_material()
    mask = images.mask
    if x is None:
        x = default_composition(images)
    solver = platelet_solver(mask, images.crystal_angle_deg, images.pixel_size_nm,
                             material.stiffness_voigt(), plane, device=device, coverage=images.coverage)
    dev = solver.device
    kw = {"dtype": torch.float64, "device": dev}
    law.to(dev)
    rows, cols = np.nonzero(mask)
    ri, ci = torch.as_tensor(rows, device=dev), torch.as_tensor(cols, device=dev)
    el_r, el_c, source = element_index(mask, solver.mask, dev)  # rim elements take their neighbour's X
    xt = torch.as_tensor(np.nan_to_num(x)[rows, cols], **kw)
    target = torch.as_tensor(images.strain_grid()[rows, cols], **kw)
    sig = images.strain_sigma if images.strain_sigma is not None else 1.0
    w = torch.as_tensor(1.0 / np.square(np.broadcast_to(sig, mask.shape))[rows, cols], **kw)
    axes = torch.as_tensor(axis_tensors(images.crystal_angle_deg), **kw)
    offset = torch.zeros(3, requires_grad=True, **kw)
    params = [*law.parameters(), offset]
    scale = 1.0 / (rows.size * float(w.mean()))

    def objective():
        f = law(xt)[:, [0, 2]].to(torch.float64)[source]
        eig = torch.zeros((1, *mask.shape, 2, 2), **kw)
        eig = eig.index_put((torch.zeros_like(el_r), el_r, el_c), torch.einsum("ni,ipq->npq", f, axes))
        strain = solver.strain(eig)[0, ri, ci]
        off = torch.stack([torch.stack([offset[0], offset[2]]), torch.stack([offset[2], offset[1]])])
        r = strain + off - target
        return scale * 0.5 * sum((w * r[:, i, j] ** 2).sum() for i, j in _ROWS)

    opt = torch.optim.LBFGS(params, max_iter=n_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-15)

    _run_lbfgs(opt, objective)
    o = offset.detach().cpu().numpy()
    return law, grid_to_crystal(np.array([[o[0], o[2]], [o[2], o[1]]]), images.crystal_angle_deg)


def default_composition(images) -> np.ndarray:
    """The composition on the strain grid for the autograd fits: registered, then non-local-means
    denoised with its stated σ (raw when no σ is given)."""
    from inverse.denoise import denoise_nlm
    from inverse.registration import align_composition, field_to_strain_grid

    reg = align_composition(images)
    comp = images.composition
    valid = np.isfinite(comp)
    sig_map = np.broadcast_to(images.composition_sigma or 0.0, comp.shape)
    sigma = float(np.sqrt(np.mean(np.square(sig_map[valid]))))
    return field_to_strain_grid(denoise_nlm(comp, valid, sigma) if sigma > 0 else comp, images, reg)


@contextmanager
def single_thread():
    """Run torch on one thread inside the block. The optimisers' per-step tensors are a few vectors of
    pixel length: one thread beats a fan-out whose barriers dominate (measured 5 ms per 26k-element dot
    with 2 threads on a shared 2-core machine; PCG iterations 1 ms on one thread against 7 ms on two,
    96² particle)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _run_lbfgs(opt: torch.optim.LBFGS, objective) -> None:
    """One L-BFGS run of ``objective`` on a single torch thread."""

    def closure():
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    with single_thread():
        opt.step(closure)
