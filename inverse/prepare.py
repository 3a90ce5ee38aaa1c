"""Stage 1 of the calibration: each image set prepared for the fit (:func:`prepare_particle`), and the
weighted least-squares rows of all of them stacked into one design (:func:`design`).

Per particle: X on the strain grid (:mod:`inverse.registration`), denoised with its known σ
(:mod:`inverse.denoise`, errors in variables), the free-platelet FE operator factorised once and the
strain response of every law coefficient computed (:mod:`inverse.forward`), PSF operators
(:mod:`inverse.psf`) where PSFs are given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from inverse.denoise import denoise_composition, denoise_nlm, estimate_noise, posterior_hats
from inverse.forward import basis_responses, extend_to_elements, hat_basis, platelet_solver
from inverse.images import ImageSet, crystal_to_grid
from inverse.joint import effective_sigma
from inverse.psf import MaskedGaussian, psf_pixels
from inverse.registration import align_composition, field_to_strain_grid
from inverse.settings import CalibrationSettings

# Bootstrap blocks: 1/6 of the shorter image side. Model errors (dislocation 1/r fields, misfit along phase
# boundaries) are correlated over tens of pixels: with 1/12 the slope errors on synthetic 96² sets reached
# 5 bootstrap σ, with 1/6 they stayed within 2.2 σ (seeds 1, 3, 4, 6).
_BLOCK_DIV = 6
COMPONENTS = ((0, 0), (1, 1), (0, 1))  # grid-frame rows per pixel: ε00, ε11, ε01


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
class Design:
    """The stacked weighted least-squares rows of all particles, three per mask pixel (ε00, ε11, ε01 in
    the grid frame), particle after particle.

    a (n_rows, P): law columns (2(K−1): a then c knots 1…K−1), then each particle's uniform offsets;
    y (n_rows,): measured strain; w (n_rows,): 1/σ_ε² (1 where σ is unknown); block (n_rows,): spatial
    bootstrap block of each row; n_offsets: offset columns per particle (3 for strain_reference
    "unknown", else 0).
    """

    a: np.ndarray
    y: np.ndarray
    w: np.ndarray
    block: np.ndarray
    n_offsets: list[int]


def negligible_sigma(knots: np.ndarray) -> float:
    """Composition noise far below the knot spacing (1/40 of it): no errors-in-variables treatment is
    needed, and the X-step's prior takes a blurred but noise-free map to be this precise."""
    return 0.025 * float(np.min(np.diff(knots)))


def prepare_particle(images: ImageSet, knots: np.ndarray, settings: CalibrationSettings, voigt, device,
                     solver_kind: str) -> Particle:
    """Register, denoise, factorise and solve for the basis responses of one image set.

    Args:
        images: the image set.
        knots: (K,) knots of the law on [0, 1].
        settings: ``errors_in_variables``, ``plane``, the PSFs and ``use_coverage`` are used.
        voigt: 6×6 Voigt stiffness (GPa) of the particle.
        device: the torch device of the platelet solves; solver_kind: "lu" or "pcg" (resolved).

    Returns:
        The prepared :class:`Particle`.
    """
    eiv = settings.errors_in_variables
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
    else:  # "none", or noise too small to matter
        x_fit = x_obs
        phi = hat_basis(np.nan_to_num(x_fit), knots)
    solver = platelet_solver(mask, images.crystal_angle_deg, images.pixel_size_nm, voigt, settings.plane,
                             device=device, solver=solver_kind,
                             coverage=images.coverage if settings.use_coverage else None)
    # a PSF operator only where a PSF is given (σ = 0 would be the identity on the mask)
    strain_blur, comp_blur = (
        MaskedGaussian(mask, sig, device=device) if sig > 0 else None
        for sig in (psf_pixels(settings.strain_psf_nm, images.pixel_size_nm, "strain_psf_nm"),
                    psf_pixels(settings.composition_psf_nm, images.pixel_size_nm, "composition_psf_nm")))
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


def design(particles: list[Particle], n_law: int) -> Design:
    """Stacked rows over all particles; offsets as per-particle nuisance columns (see :class:`Design`)."""
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
        for r, (i, j) in enumerate(COMPONENTS):
            a[:, r, :n_law] = law_cols[:, :, i, j].T
        if p.images.strain_reference == "LiMPO4":  # measured from LiMPO4: ε − ε⁰(1)
            m = n_law // 2
            for ax in range(2):
                unit = np.zeros((2, 2))
                unit[ax, ax] = 1.0
                g = crystal_to_grid(unit, angle)
                for r, (i, j) in enumerate(COMPONENTS):
                    a[:, r, ax * m + m - 1] -= g[i, j]
        for k in range(n_o):
            a[:, k, col + k] = 1.0  # uniform ε00, ε11, ε01 offsets (grid frame)
        col += n_o
        y = np.stack([p.strain[rows, cols, i, j] for i, j in COMPONENTS], -1)
        w = np.repeat(p.weight[rows, cols][:, None], 3, axis=1)
        bpx = max(4, int(round(min(mask.shape) / _BLOCK_DIV)))
        bid = (rows // bpx) * (mask.shape[1] // bpx + 1) + cols // bpx
        _, bid = np.unique(bid, return_inverse=True)
        blocks_a.append(a.reshape(-1, n_params))
        blocks_y.append(y.ravel())
        blocks_w.append(w.ravel())
        blocks_id.append(np.repeat(bid + block_base, 3))
        block_base += int(bid.max()) + 1
    return Design(np.concatenate(blocks_a), np.concatenate(blocks_y), np.concatenate(blocks_w),
                  np.concatenate(blocks_id), n_off)


def to_map(rows: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Rows (3 per mask pixel: ε00, ε11, ε01) back to a symmetric (H, W, 2, 2) field, 0 outside."""
    out = np.zeros((*mask.shape, 2, 2))
    v = rows.reshape(-1, 3)
    r, c = np.nonzero(mask)
    out[r, c, 0, 0], out[r, c, 1, 1] = v[:, 0], v[:, 1]
    out[r, c, 0, 1] = out[r, c, 1, 0] = v[:, 2]
    return out
