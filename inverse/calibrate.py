"""Calibrate the composition–eigenstrain law ε⁰(X) from correlative images (Deng et al., Nature
Materials 21, 547 (2022)).

Pipeline per particle: put X on the strain grid (:mod:`inverse.registration`), denoise it with its
known σ (:mod:`inverse.denoise`, errors in variables), factorise the free-platelet FE operator once and
compute the strain response of every law coefficient (:mod:`inverse.forward`). All particles share
the law; each has its own uniform reference offset (strain_reference "unknown"; "LiMPO4" shifts by
−ε⁰(1), "MPO4" by nothing). The weighted, smoothness-regularised least squares of :mod:`inverse.fit`
gives the law; GCV picks λ. The law is returned as the core's ``PiecewiseLinearLaw`` with the b axis
set to Vegard with the reference misfit (an [010] image does not see b).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from scipy import ndimage
from skimage.feature import peak_local_max

from inverse import fit as lsq
from inverse.denoise import denoise_composition, denoise_nlm, estimate_noise, posterior_hats
from inverse.dislocations import MatchedFilter, refine_position, unit_fields
from inverse.forward import (
    basis_responses,
    extend_to_elements,
    hat_basis,
    lfp_material,
    platelet_solver,
    resolve_device,
)
from inverse.images import ImageSet, crystal_rotation, crystal_to_grid, grid_to_crystal
from inverse.joint import effective_sigma, refine_composition
from inverse.psf import MaskedGaussian, psf_pixels
from inverse.registration import align_composition, field_to_strain_grid
from inverse.residual import find_hotspots
from mechanics.errors import InputError

SCHEMA = "chemoscreen.calibration/1"
AXES = ("a", "c")
# Bootstrap blocks: 1/6 of the shorter image side. Model errors (dislocation 1/r fields, misfit along phase
# boundaries) are correlated over tens of pixels: with 1/12 the slope errors on synthetic 96² sets reached
# 5 bootstrap σ, with 1/6 they stayed within 2.2 σ (seeds 1, 3, 4, 6).
_BLOCK_DIV = 6
_COMP = ((0, 0), (1, 1), (0, 1))  # grid-frame rows per pixel: ε00, ε11, ε01
# A hot spot is kept as a dislocation only when its fitted Burgers vector is at least this long: 0.2 nm is
# below every lattice translation of the olivine a-c plane (c = 0.47 nm, a = 1.03 nm) and above the
# 0.01–0.13 nm that misfits along phase boundaries and noise peaks fit to (512² synthetic particle).
MIN_BURGERS_NM = 0.2
DETECTION_ALPHA = 0.01  # family-wise false-alarm rate of the dislocation detection under noise alone


@dataclass(frozen=True)
class Particle:
    """One image set prepared for the fit (grid frame: axis 0 = rows, axis 1 = columns)."""

    images: ImageSet
    registration: object
    x_observed: np.ndarray  # (H, W) registered X, NaN outside
    x_fit: np.ndarray  # (H, W) denoised X used in the design
    sigma_x: float
    tv_weight: float
    responses: np.ndarray  # (2, K−1, H, W, 2, 2)
    strain: np.ndarray  # (H, W, 2, 2) measured, grid frame
    weight: np.ndarray  # (H, W) 1/σ_ε² (1 where σ is unknown)
    solver: object  # the mechanics.elasticity.PlateletOperator (sparse LU on a CPU, PCG on a GPU)
    sigma_x_grid: float  # composition noise after registration (σ_eff)
    strain_blur: object = None  # inverse.psf.MaskedGaussian of the strain probe (None: no PSF)
    composition_blur: object = None  # the same for the composition map on the strain grid
    cache: dict = field(default_factory=dict)  # per-particle operators reused across joint rounds


@dataclass(frozen=True)
class Calibration:
    """Result of :func:`calibrate`.

    law: ``mechanics.laws.PiecewiseLinearLaw`` (ε⁰ along a, b, c; b = Vegard reference).
    knots_X (K,), values (2, K) and std (2, K): the learned ε⁰ along a and c at the knots, with the
      larger of the Laplace and block-bootstrap standard deviations.
    vegard: slope_a, slope_c, their std, max_deviation (§4.3).
    fit: rmse_strain, n_pixels, chi2_reduced, lambda, rule, dof, ...
    residual: per particle, maps in the crystal frame (see :meth:`residual_arrays`).
    identifiability: coverage histogram, knot support, singular values, warnings.
    """

    law: object
    knots_X: np.ndarray
    values: np.ndarray
    std: np.ndarray
    std_laplace: np.ndarray
    std_bootstrap: np.ndarray
    covariance: np.ndarray
    vegard: dict
    fit: dict
    residual: list
    identifiability: dict
    registration: list
    offsets: list
    inputs: list
    warnings: list
    dislocations: list = field(default_factory=list)
    mlflow: dict = field(default_factory=lambda: {"run_id": None, "model_uri": None})

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "law": {
                "X": [float(v) for v in self.knots_X],
                "eigenstrain": {ax: [float(v) for v in self.values[i]] for i, ax in enumerate(AXES)},
                "std": {ax: [float(v) for v in self.std[i]] for i, ax in enumerate(AXES)},
            },
            "vegard": {k: float(v) for k, v in self.vegard.items()},
            "fit": {"rmse_strain": float(self.fit["rmse_strain"]), "n_pixels": int(self.fit["n_pixels"]),
                    "chi2_reduced": float(self.fit["chi2_reduced"])},
            "inputs": list(self.inputs),
            "mlflow": dict(self.mlflow),
        }

    def to_json(self) -> str:
        """``calibration.json`` text in the ``chemoscreen.calibration/1`` schema (ARCHITECTURE §4.3)."""
        return json.dumps(self.to_dict(), indent=2)

    def with_mlflow(self, run_id: str | None, model_uri: str | None) -> Calibration:
        return replace(self, mlflow={"run_id": run_id, "model_uri": model_uri})

    def residual_arrays(self) -> dict:
        """Flat dict of arrays for ``residual.npz``: ``p{i}_<name>`` per particle, plus the law."""
        out = {"law_X": self.knots_X, "law_a": self.values[0], "law_c": self.values[1],
               "law_std_a": self.std[0], "law_std_c": self.std[1]}
        for i, maps in enumerate(self.residual):
            for name, arr in maps.items():
                out[f"p{i}_{name}"] = np.asarray(arr)
        return out


def _prepare(images: ImageSet, knots: np.ndarray, eiv: str, voigt, plane: str, device,
             solver_kind: str, psf_nm: tuple, use_coverage: bool = True) -> Particle:
    comp = images.composition
    comp_mask = np.isfinite(comp)
    if images.composition_sigma is not None:
        sig = np.broadcast_to(images.composition_sigma, comp.shape)
        sigma_x = float(np.sqrt(np.mean(np.square(sig[comp_mask]))))
    else:
        sigma_x = estimate_noise(comp, comp_mask)
    reg = align_composition(images)
    mask = images.mask
    x_obs = reg.composition
    tv = 0.0
    # the noise model is applied on the composition's own grid, where the noise is white with the
    # stated σ; registration and resampling interpolate, which correlates and shrinks it
    tiny = sigma_x < negligible_sigma(knots)
    if eiv == "posterior" and not tiny:
        e_phi, e_x, _ = posterior_hats(comp[comp_mask], sigma_x, knots)
        maps = np.full((*comp.shape, knots.size + 1), np.nan)
        maps[comp_mask, :-1] = e_phi
        maps[comp_mask, -1] = e_x
        on_grid = np.stack([field_to_strain_grid(maps[..., k], images, reg)
                            for k in range(knots.size + 1)], -1)
        phi, x_fit = on_grid[..., :-1], on_grid[..., -1]
    elif eiv == "nlm" and not tiny:
        x_fit = field_to_strain_grid(denoise_nlm(comp, comp_mask, sigma_x), images, reg)
        phi = hat_basis(np.nan_to_num(x_fit), knots)
    elif eiv == "tv" and not tiny:
        x_clean, tv = denoise_composition(comp, comp_mask, sigma_x)
        x_fit = field_to_strain_grid(x_clean, images, reg)
        phi = hat_basis(np.nan_to_num(x_fit), knots)
    elif eiv in ("nlm", "posterior", "tv", "none"):
        x_fit = x_obs
        phi = hat_basis(np.nan_to_num(x_fit), knots)
    else:
        raise InputError("errors_in_variables", "'nlm', 'tv', 'posterior' or 'none'", eiv)
    solver = platelet_solver(mask, images.crystal_angle_deg, images.pixel_size_nm, voigt, plane,
                             device=device, solver=solver_kind,
                             coverage=images.coverage if use_coverage else None)
    # a PSF operator only where a PSF is given (σ = 0 would be the identity on the mask)
    strain_blur, comp_blur = (
        MaskedGaussian(mask, sig, device=device) if sig > 0 else None
        for sig in (psf_pixels(psf_nm[0], images.pixel_size_nm, "strain_psf_nm"),
                    psf_pixels(psf_nm[1], images.pixel_size_nm, "composition_psf_nm")))
    phi = extend_to_elements(phi, mask, solver.mask)  # rim elements take their nearest pixel's X
    responses = basis_responses(solver, phi, images.crystal_angle_deg, blur=strain_blur)
    if images.strain_sigma is None:
        weight = np.ones(mask.shape)
    else:
        weight = 1.0 / np.square(np.broadcast_to(images.strain_sigma, mask.shape))
    sigma_grid = effective_sigma(sigma_x, lambda f: field_to_strain_grid(f, images, reg), comp.shape,
                                 comp_mask, mask) if sigma_x > 0 else 0.0
    return Particle(images, reg, x_obs, x_fit, sigma_x, tv, responses,
                    np.nan_to_num(images.strain_grid()), np.where(mask, weight, 0.0), solver, sigma_grid,
                    strain_blur, comp_blur)


def _design(particles: list[Particle], n_law: int) -> tuple:
    """Stacked rows (A, y, w, block) over all particles; offsets as per-particle nuisance columns."""
    n_off = [3 if p.images.strain_reference == "unknown" else 0 for p in particles]
    n_params = n_law + sum(n_off)
    blocks_a, blocks_y, blocks_w, blocks_id = [], [], [], []
    col = n_law
    block_base = 0
    for p, n_o in zip(particles, n_off):
        mask = p.images.mask
        rows, cols = np.nonzero(mask)
        angle = p.images.crystal_angle_deg
        resp = p.responses[:, :, rows, cols]  # (2, K−1, n_px, 2, 2)
        a = np.zeros((rows.size, 3, n_params))
        law_cols = resp.reshape(n_law, rows.size, 2, 2)
        for r, (i, j) in enumerate(_COMP):
            a[:, r, :n_law] = law_cols[:, :, i, j].T
        if p.images.strain_reference == "LiMPO4":  # measured from LiMPO4: ε − ε⁰(1)
            m = n_law // 2
            for ax in range(2):
                unit = np.zeros((2, 2))
                unit[ax, ax] = 1.0
                g = crystal_to_grid(unit, angle)
                for r, (i, j) in enumerate(_COMP):
                    a[:, r, ax * m + m - 1] -= g[i, j]
        for k in range(n_o):
            a[:, k, col + k] = 1.0  # uniform ε00, ε11, ε01 offsets (grid frame)
        col += n_o
        y = np.stack([p.strain[rows, cols, i, j] for i, j in _COMP], -1)
        w = np.repeat(p.weight[rows, cols][:, None], 3, axis=1)
        bpx = max(4, int(round(min(mask.shape) / _BLOCK_DIV)))
        bid = (rows // bpx) * (mask.shape[1] // bpx + 1) + cols // bpx
        _, bid = np.unique(bid, return_inverse=True)
        blocks_a.append(a.reshape(-1, n_params))
        blocks_y.append(y.ravel())
        blocks_w.append(w.ravel())
        blocks_id.append(np.repeat(bid + block_base, 3))
        block_base += int(bid.max()) + 1
    return (np.concatenate(blocks_a), np.concatenate(blocks_y), np.concatenate(blocks_w),
            np.concatenate(blocks_id), n_off)


def calibrate(
    images,
    *,
    n_knots: int = 11,
    monotone: bool = False,
    errors_in_variables: str = "nlm",
    n_bootstrap: int = 64,
    n_robust: int = 2,
    fit_dislocations: bool = True,
    n_joint: int = 2,
    min_support_px: float = 20.0,
    plane: str = "stress",
    material=None,
    seed: int = 0,
    progress: bool = False,
    device=None,
    solver: str = "auto",
    strain_psf_nm: float | None = None,
    composition_psf_nm: float | None = None,
    use_coverage: bool = True,
) -> Calibration:
    """Learn ε⁰(X) along a and c from one image set or a list of them (one shared law).

    Args:
      images: ``ImageSet`` or a list of them (``inverse.load_images``).
      n_knots: knots of the piecewise-linear law, uniform on [0, 1] (X = 0 pinned to ε⁰ = 0).
      monotone: constrain each axis to be monotone in the direction of its unconstrained end value.
      errors_in_variables: how the composition noise is handled (inverse.denoise): "nlm" (default;
        non-local-means denoised X), "tv" (total-variation denoised X), "posterior" (regressors
        E[φ_k(X) | x] under a deconvolved prior, pixel by pixel) or "none" (raw X; biased).
      n_bootstrap: spatial block-bootstrap replicates (0 turns it off).
      fit_dislocations: after a first fit, model the residual hot spots as edge dislocations (Burgers
        vector in the a-c plane, Volterra field; inverse.dislocations) with nuisance parameters, so
        that their long-range strain does not bias the law; they stay in the residual maps.
      n_joint: alternations of the joint estimation of X and the law (inverse.joint; 0 keeps the
        denoised X of ``errors_in_variables``).
      n_robust: iteratively reweighted passes that down-weight pixels whose residual is an outlier
        (unmodelled defects such as dislocations); 0 gives the plain weighted least squares.
      min_support_px: knots whose hat functions sum to less than this over all pixels are reported
        as not constrained by the data.
      plane: "stress" (thin platelet, default) or "strain".
      material: ``MaterialParams`` (stiffness and b misfit); default the core's LFP reference.
      device: where the platelet solves run: None/"auto" (a CUDA GPU when torch sees one, else the
        CPU), "cpu", "cuda" or "cuda:N". The least squares, denoising and bootstrap stay on the CPU.
      solver: "auto" (sparse LU on the CPU, matrix-free PCG on a GPU), "lu" or "pcg" (same
        discretisation; results agree to the CG tolerance).
      strain_psf_nm, composition_psf_nm: Gaussian σ (nm) of the strain and composition probes
        (None: not modelled). The model strain is blurred by the strain PSF (:mod:`inverse.psf`), and
        the joint X-step compares the blurred X̂ with the measured map, so X̂ is deblurred.
      use_coverage: when an image set has a ``coverage`` map (area fraction of each pixel inside the
        particle), model the rim with partial-coverage elements (:func:`inverse.forward.rim_elements`)
        so that the outline is the particle's, not the mask's pixel staircase; False ignores the map.
    """
    from tqdm.auto import tqdm

    from mechanics.laws import PiecewiseLinearLaw

    sets = [images] if isinstance(images, ImageSet) else list(images)
    if not sets or not all(isinstance(s, ImageSet) for s in sets):
        raise InputError("images", "an ImageSet or a non-empty list of ImageSets", type(images).__name__)
    if int(n_knots) < 3:
        raise InputError("n_knots", "an integer >= 3", n_knots)
    dev, solver_kind = resolve_device(device, solver)
    material = material or lfp_material()
    voigt = material.stiffness_voigt()
    knots = np.linspace(0.0, 1.0, int(n_knots))
    m = knots.size - 1
    n_law = 2 * m
    clock = [("start", time.perf_counter())]
    particles = [
        _prepare(s, knots, errors_in_variables, voigt, plane, dev, solver_kind,
                 (strain_psf_nm, composition_psf_nm), use_coverage)
        for s in tqdm(sets, desc="factorise + basis solves", unit="particle", disable=not progress)
    ]
    clock.append(("prepare_s", time.perf_counter()))
    fitted = _linear_fit(particles, knots, n_law, n_robust, fit_dislocations)
    clock.append(("linear_fit_s", time.perf_counter()))
    for _ in tqdm(range(n_joint), desc="joint X / law refinement", disable=not progress or n_joint == 0):
        particles = _refine_particles(particles, fitted, knots, n_law)
        fitted = _linear_fit(particles, knots, n_law, n_robust, fit_dislocations)
    a, y, w, block, n_off, n_base, theta, eq, choice, robust_w, (_, _, dislocations) = fitted
    clock.append(("joint_s", time.perf_counter()))
    penalty = lsq.smoothness_penalty(knots, 2, a.shape[1])
    lam = choice["lambda"]
    signs = np.sign(theta[[m - 1, 2 * m - 1]])
    signs[signs == 0] = 1.0
    if monotone:
        theta = lsq.solve_monotone(eq.gram, eq.rhs, penalty, lam, signs, n_law)
    resid_w = max(lsq.rss(eq, theta), 0.0)
    dof = eq.n_rows - choice["dof_best"]
    chi2 = resid_w / dof
    known_sigma = all(p.images.strain_sigma is not None for p in particles)
    scale2 = max(1.0, chi2) if known_sigma else chi2
    cov = lsq.laplace_covariance(eq, penalty, lam, scale2)

    rng = np.random.default_rng(seed)
    if n_bootstrap > 0:
        solver = None
        if monotone:
            def solver(g, r):
                return lsq.solve_monotone(g, r, penalty, lam, signs, n_law)
        reps = lsq.block_bootstrap(eq, penalty, lam, n_bootstrap, rng, solver)
        boot_std = reps.std(axis=0, ddof=1)
    else:
        reps = None
        boot_std = np.zeros_like(theta)
    lap_std = np.sqrt(np.clip(np.diag(cov), 0, None))
    clock.append(("uncertainty_s", time.perf_counter()))

    def per_axis(vec):
        return np.concatenate([np.zeros((2, 1)), vec[:n_law].reshape(2, m)], axis=1)

    values, std_l, std_b = per_axis(theta), per_axis(lap_std), per_axis(boot_std)
    std = np.maximum(std_l, std_b)

    # Vegard slopes of the learned law (least squares through the origin over the knots) and their std
    g = knots / np.sum(knots**2)
    slopes = values @ g
    cov_law = cov[:n_law, :n_law]
    slope_std = []
    for ax in range(2):
        grad = np.zeros(a.shape[1])
        grad[ax * m:(ax + 1) * m] = g[1:]
        var = grad @ cov @ grad
        if reps is not None:
            var = max(var, float(np.var(reps @ grad, ddof=1)))
        slope_std.append(np.sqrt(var))
    vegard = {
        "slope_a": slopes[0], "slope_c": slopes[1], "slope_a_std": slope_std[0], "slope_c_std": slope_std[1],
        "max_deviation": float(np.max(np.abs(values - slopes[:, None] * knots[None, :]))),
    }

    # residual maps, hot spots, identifiability
    predicted = a[:, :n_base] @ theta[:n_base]  # law + offsets; fitted dislocations stay in the residual
    rmse = float(np.sqrt(np.mean((y - a @ theta) ** 2)))
    maps, hotspots, regs, offsets, inputs = [], [], [], [], []
    start = 0
    col = n_law
    x_all = []
    for p, n_o, disl in zip(particles, n_off, dislocations):
        mask = p.images.mask
        n_rows = 3 * int(mask.sum())
        pred = _to_map(predicted[start:start + n_rows], mask)
        meas = p.strain * mask[..., None, None]
        off = np.zeros((2, 2))
        if n_o:
            o = theta[col:col + 3]
            off = np.array([[o[0], o[2]], [o[2], o[1]]])
        start += n_rows
        col += n_o
        ang = p.images.crystal_angle_deg
        meas_c, pred_c = grid_to_crystal(meas, ang), grid_to_crystal(pred, ang)
        res_c = (meas_c - pred_c) * mask[..., None, None]
        sig_s = np.sqrt(1.0 / p.weight[mask].mean()) if known_sigma else rmse
        spots = find_hotspots(res_c, mask, sig_s)
        nan = np.where(mask, 1.0, np.nan)
        entry = {"mask": mask, "composition": p.x_observed, "composition_denoised": p.x_fit,
                 "hotspots": np.array([[s["row"], s["col"], s["score"]] for s in spots]).reshape(-1, 3),
                 "dislocations": np.array([[d["row"], d["col"], d["burgers_a_nm"], d["burgers_c_nm"]]
                                           for d in disl]).reshape(-1, 4)}
        for name, field_ in (("measured", meas_c), ("predicted", pred_c), ("residual", res_c)):
            for comp, (i, j) in zip(("aa", "cc", "ac"), _COMP):
                entry[f"{name}_{comp}"] = field_[..., i, j] * nan
        maps.append(entry)
        hotspots.append(spots)
        regs.append({"shift_px": p.registration.shift_px, "shift_nm": p.registration.shift_nm,
                     "n_filled": p.registration.n_filled, "resampled": p.registration.resampled,
                     "tv_weight": p.tv_weight, "composition_sigma": p.sigma_x})
        off_c = grid_to_crystal(off, ang)
        offsets.append({"aa": off_c[0, 0], "cc": off_c[1, 1], "ac": off_c[0, 1], "fitted": bool(n_o)})
        inputs.append({"path": p.images.source, "sha256": p.images.sha256})
        x_all.append(np.nan_to_num(p.x_fit)[mask])
    x_all = np.concatenate(x_all)
    ident = _identifiability(x_all, knots, a, w, n_law, min_support_px, chi2, known_sigma)

    law_values = np.zeros((3, knots.size))
    law_values[0], law_values[2] = values[0], values[1]
    law_values[1] = material.misfit[1] * knots
    law = PiecewiseLinearLaw(knots, law_values, monotone=monotone)
    fit_stats = {"rmse_strain": rmse, "n_pixels": int(x_all.size), "chi2_reduced": chi2, "lambda": lam,
                 "rule": "generalized cross-validation", "dof": choice["dof_best"], "n_rows": eq.n_rows,
                 "n_params": int(a.shape[1]), "monotone": bool(monotone), "plane": plane,
                 "n_particles": len(particles), "downweighted_fraction": float(np.mean(robust_w < 0.5)),
                 "n_hotspots": int(sum(len(h) for h in hotspots)), "solver": solver_kind,
                 "strain_psf_nm": strain_psf_nm, "composition_psf_nm": composition_psf_nm,
                 "rim": "partial coverage" if use_coverage and any(p.images.coverage is not None
                                                                   for p in particles) else "pixel staircase",
                 "device": f"{dev} ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else str(dev)}
    for p in particles:  # the solvers' work, for benchmarks (all particles, all stages; PCG counts CG)
        for key, count in p.solver.work().items():
            fit_stats[key] = int(fit_stats.get(key, 0) + count)
    clock.append(("report_s", time.perf_counter()))
    fit_stats["timings_s"] = {name: t - clock[i][1] for i, (name, t) in enumerate(clock[1:])}
    return Calibration(
        law=law, knots_X=knots, values=values, std=std, std_laplace=std_l, std_bootstrap=std_b,
        covariance=cov_law, vegard=vegard, fit=fit_stats, residual=maps, identifiability=ident,
        registration=regs, offsets=offsets, inputs=inputs, warnings=list(ident["warnings"]),
        dislocations=dislocations,
    )


def _linear_fit(particles, knots, n_law, n_robust, fit_dislocations):
    """Design, robust GCV fit, then (optionally) dislocation nuisances at the hot spots and a refit.

    Every joint round detects the dislocations again: they move once X is refined (keeping the first
    round's set cost 1.6 % of the c slope on a two-particle test). Returns the fit and the defects
    (nuisance columns, core weights, dislocations per particle).
    """
    a_law, y, w, block, n_off = _design(particles, n_law)
    n_base = a_law.shape[1]
    dev = particles[0].solver.device
    defects = (np.zeros((y.size, 0)), np.ones_like(y), [[] for _ in particles])
    first = _robust_fit(a_law, y, w, block, knots, n_robust, dev)
    if fit_dislocations:
        defects = _dislocation_columns(particles, y - first[0] @ first[1], w)
    extra, keep, _ = defects
    if extra.shape[1] == 0:  # nothing to add: the first fit is the fit
        return (first[0], y, w, block, n_off, n_base, *first[1:], defects)
    w = w * keep
    a, theta, eq, choice, robust_w = _robust_fit(np.hstack([a_law, extra]), y, w, block, knots, n_robust,
                                                 dev)
    return a, y, w, block, n_off, n_base, theta, eq, choice, robust_w, defects


def negligible_sigma(knots: np.ndarray) -> float:
    """Composition noise far below the knot spacing (1/40 of it): no errors-in-variables treatment is
    needed, and the X-step's prior takes a blurred but noise-free map to be this precise."""
    return 0.025 * float(np.min(np.diff(knots)))


def _refine_particles(particles, fitted, knots, n_law):
    """X-step of the joint estimation for every particle, then new basis responses (inverse.joint)."""
    a, y, w, _, _, _, theta, _, _, robust_w, _ = fitted
    m = n_law // 2
    values = np.concatenate([np.zeros((2, 1)), theta[:n_law].reshape(2, m)], axis=1)
    other = a[:, n_law:] @ theta[n_law:]  # offsets and dislocation fields, per row
    row_w = w * np.repeat(robust_w, 3)
    out, start = [], 0
    for p in particles:
        mask = p.images.mask
        n_rows = 3 * int(mask.sum())
        sigma = p.sigma_x_grid
        if p.composition_blur is not None:  # a blurred map needs the X-step even without noise
            sigma = max(sigma, negligible_sigma(knots))
        if sigma <= 0:  # X known exactly: nothing to refine
            out.append(p)
            start += n_rows
            continue
        pix_w = np.zeros(mask.shape)
        pix_w[mask] = row_w[start:start + n_rows].reshape(-1, 3).min(axis=1)
        x_new = refine_composition(
            p.solver, p.x_fit, p.x_observed, sigma, knots, values, p.images.crystal_angle_deg,
            p.strain, _to_map(other[start:start + n_rows], mask), pix_w,
            strain_blur=p.strain_blur, composition_blur=p.composition_blur, mask=mask,
        )
        phi = extend_to_elements(hat_basis(np.nan_to_num(x_new), knots), mask, p.solver.mask)
        responses = basis_responses(p.solver, phi, p.images.crystal_angle_deg, blur=p.strain_blur)
        out.append(replace(p, x_fit=x_new, responses=responses))
        start += n_rows
    return out


def _robust_fit(a, y, w, block, knots, n_robust, device=None):
    """GCV-regularised weighted least squares with ``n_robust`` outlier-reweighting passes; the
    normal equations are formed on ``device`` when it is a GPU."""
    penalty = lsq.smoothness_penalty(knots, 2, a.shape[1])
    robust_w = np.ones(y.size // 3)
    dev = device if device is not None and torch.device(device).type == "cuda" else None
    a_rows = torch.as_tensor(a, dtype=torch.float64, device=dev) if dev is not None else a
    for it in range(n_robust + 1):
        eq = lsq.normal_equations(a_rows, y, w * np.repeat(robust_w, 3), block,
                                  with_blocks=it == n_robust, device=dev)
        choice = lsq.gcv_select(eq, penalty)
        theta = lsq.solve_penalized(eq.gram, eq.rhs, penalty, choice["lambda"])
        if it < n_robust:
            robust_w = lsq.robust_pixel_weights(((y - a @ theta) * np.sqrt(w)).reshape(-1, 3))
    return a, theta, eq, choice, robust_w


def _dislocation_columns(particles, residual_rows, w):
    """Unit-Burgers strain columns (a and c) of the dislocations in the residual, and row weights that
    drop their core pixels (within 1.5 px), per particle block of rows.

    Candidates are the peaks of the matched filter (:class:`inverse.dislocations.MatchedFilter`, the
    Δχ² of one PSF-blurred dislocation at each pixel, in units of the residual's robust variance) above
    the χ²(2) threshold 2 ln(n_px/α) (Bonferroni, α = :data:`DETECTION_ALPHA`). Each is refined (sub-pixel
    position and Burgers vector) and kept when its Burgers vector is at least :data:`MIN_BURGERS_NM`
    long, its position is a mask pixel, and no kept one is within max(2 px, 1.5 σ_PSF).
    """
    cols, keep, found = [], np.ones_like(residual_rows), []
    start = 0
    total = residual_rows.size
    for p in particles:
        mask = p.images.mask
        n_rows = 3 * int(mask.sum())
        res = _to_map(residual_rows[start:start + n_rows], mask)
        rot = crystal_rotation(p.images.crystal_angle_deg)
        rows_px, cols_px = np.nonzero(mask)
        psf_px = p.strain_blur.sigma_px if p.strain_blur is not None else 0.0
        apart = max(2.0, 1.5 * psf_px)  # closer than this two positions are one dislocation
        if "dislocation_filter" not in p.cache:  # depends on the mask, p.weight and the PSF only
            p.cache["dislocation_filter"] = MatchedFilter(mask, p.weight, p.images.pixel_size_nm, rot, psf_px)
            p.cache["depth"] = ndimage.distance_transform_edt(mask)  # px from the nearest pixel outside
        depth = p.cache["depth"]
        delta, burgers = p.cache["dislocation_filter"](res)
        # in units of the residual's robust scale (1 for white noise of the stated σ; the noise level
        # itself when no σ is given and the weights are 1)
        white = residual_rows[start:start + n_rows] * np.sqrt(w[start:start + n_rows])
        white = white[w[start:start + n_rows] > 0]
        delta = delta / max((1.4826 * np.median(np.abs(white - np.median(white)))) ** 2, 1e-300)
        threshold = 2.0 * np.log(rows_px.size / DETECTION_ALPHA)
        peaks = peak_local_max(delta, min_distance=int(np.ceil(apart)), threshold_abs=threshold,
                               exclude_border=False, labels=mask.astype(int), num_peaks=50)
        new = []
        for r0, c0 in peaks:
            if np.hypot(*burgers[r0, c0]) < MIN_BURGERS_NM:
                continue
            d = refine_position(res, mask, (int(r0), int(c0)), p.images.pixel_size_nm, rot, psf_px=psf_px,
                                search_px=2.0)
            if np.hypot(d["burgers_a_nm"], d["burgers_c_nm"]) < MIN_BURGERS_NM:
                continue
            r, c = int(round(d["row"])), int(round(d["col"]))
            if not (0 <= r < mask.shape[0] and 0 <= c < mask.shape[1]) or depth[r, c] < 1.0:
                continue  # outside the particle: a surface misfit, not a Volterra dislocation
            if all(np.hypot(d["row"] - e["row"], d["col"] - e["col"]) > apart for e in new):
                new.append(d)
        for d in new:
            fields = unit_fields(mask.shape, (d["row"], d["col"]), p.images.pixel_size_nm, rot, mask=mask)
            if p.strain_blur is not None:
                fields = p.strain_blur.apply_numpy(fields, (1, 2))
            for i in range(2):
                col = np.zeros(total)
                col[start:start + n_rows] = fields[i][rows_px, cols_px][:, [0, 1, 0], [0, 1, 1]].ravel()
                cols.append(col)
            core = np.hypot(rows_px - d["row"], cols_px - d["col"]) <= 1.5
            keep[start:start + n_rows][np.repeat(core, 3)] = 0.0
        found.append(new)
        start += n_rows
    extra = np.stack(cols, -1) if cols else np.zeros((total, 0))
    return extra, keep, found


def _to_map(rows: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = np.zeros((*mask.shape, 2, 2))
    v = rows.reshape(-1, 3)
    r, c = np.nonzero(mask)
    out[r, c, 0, 0], out[r, c, 1, 1] = v[:, 0], v[:, 1]
    out[r, c, 0, 1] = out[r, c, 1, 0] = v[:, 2]
    return out


def _identifiability(x, knots, a, w, n_law, min_support, chi2, known_sigma) -> dict:
    counts, edges = np.histogram(np.clip(x, 0, 1), bins=20, range=(0.0, 1.0))
    support = hat_basis(x, knots).sum(axis=0)
    aw = a[:, :n_law] * np.sqrt(w)[:, None]
    norms = np.linalg.norm(aw, axis=0)
    sv = np.linalg.svd(aw / np.maximum(norms, 1e-300), compute_uv=False)
    cond = float(sv[0] / max(sv[-1], 1e-300))
    constrained = support >= min_support
    constrained[0] = True  # ε⁰(0) = 0 by definition
    warnings = []
    for k in np.flatnonzero(~constrained):
        warnings.append(f"X = {knots[k]:.2f}: only {support[k]:.1f} pixel-equivalents of data; the law "
                        "there is set by the smoothness prior, not by the images")
    if cond > 1e6:
        warnings.append(f"design condition number {cond:.3g}: the data barely separate some knots")
    if known_sigma and chi2 > 4.0:
        warnings.append(f"chi2_reduced = {chi2:.2f}: the residual exceeds the stated strain noise "
                        "(defects, PSF or registration errors; see the residual maps)")
    return {"coverage_edges": edges, "coverage_counts": counts, "knot_support_px": support,
            "constrained": constrained, "singular_values": sv, "condition_number": cond,
            "warnings": warnings}
