"""Stage 2 of the calibration: the linear fit of the law (robust, GCV-regularised weighted least
squares, :mod:`inverse.fit`) and the dislocations found in its residual, modelled as nuisance columns
(:mod:`inverse.dislocations`) before a refit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from skimage.feature import peak_local_max

from inverse import fit as lsq
from inverse.dislocations import MatchedFilter, refine_position, unit_fields
from inverse.images import crystal_rotation
from inverse.prepare import Particle, design, to_map

# A hot spot is kept as a dislocation only when its fitted Burgers vector is at least this long: 0.2 nm is
# below every lattice translation of the olivine a-c plane (c = 0.47 nm, a = 1.03 nm) and above the
# 0.01–0.13 nm that misfits along phase boundaries and noise peaks fit to (512² synthetic particle).
MIN_BURGERS_NM = 0.2
DETECTION_ALPHA = 0.01  # family-wise false-alarm rate of the dislocation detection under noise alone


@dataclass(frozen=True)
class Defects:
    """Dislocation nuisances of a fit: columns (n_rows, 2·n_dislocations) of unit-Burgers strain (a, c),
    row weights keep (n_rows,) that drop the core pixels, and the dislocations per particle (dicts with
    row, col (px), burgers_a_nm, burgers_c_nm, ...)."""

    columns: np.ndarray
    keep: np.ndarray
    dislocations: list[list[dict]]


@dataclass(frozen=True)
class RobustFit:
    """A robust GCV fit of the rows ``a``: coefficients theta (P,), the normal equations (with the
    bootstrap blocks), the GCV choice (``lambda``, ``dof_best``, curves) and the final robust weight of
    every pixel (n_rows / 3,)."""

    a: np.ndarray
    theta: np.ndarray
    equations: lsq.NormalEquations
    gcv: dict
    robust_w: np.ndarray


@dataclass(frozen=True)
class LinearFit:
    """The fit of one round: the final rows and their solution.

    a (n_rows, P): the design of :func:`inverse.prepare.design` with the dislocation columns appended;
    y, w, block (n_rows,): measured strain, weights (dislocation cores dropped) and bootstrap blocks;
    n_offsets: offset columns per particle; n_base: law + offset columns (the prediction without the
    dislocations); fit: the robust fit of ``a``; defects: the dislocation nuisances.
    """

    y: np.ndarray
    w: np.ndarray
    block: np.ndarray
    n_offsets: list[int]
    n_base: int
    fit: RobustFit
    defects: Defects

    @property
    def a(self) -> np.ndarray:
        return self.fit.a

    @property
    def theta(self) -> np.ndarray:
        return self.fit.theta


def linear_fit(particles: list[Particle], knots: np.ndarray, n_law: int, n_robust: int,
               fit_dislocations: bool) -> LinearFit:
    """Design, robust GCV fit, then (optionally) dislocation nuisances at the hot spots and a refit.

    Every joint round detects the dislocations again: they move once X is refined (keeping the first
    round's set cost 1.6 % of the c slope on a two-particle test).

    Args:
        particles: the prepared particles.
        knots: (K,) knots of the law; n_law: its 2(K−1) coefficients.
        n_robust: outlier-reweighting passes; fit_dislocations: model the residual's dislocations.

    Returns:
        The :class:`LinearFit`.
    """
    rows = design(particles, n_law)
    y, w = rows.y, rows.w
    n_base = rows.a.shape[1]
    dev = particles[0].solver.device
    defects = Defects(np.zeros((y.size, 0)), np.ones_like(y), [[] for _ in particles])
    first = robust_fit(rows.a, y, w, rows.block, knots, n_robust, dev)
    if fit_dislocations:
        defects = dislocation_columns(particles, y - first.a @ first.theta, w)
    if defects.columns.shape[1] == 0:  # nothing to add: the first fit is the fit
        return LinearFit(y, w, rows.block, rows.n_offsets, n_base, first, defects)
    w = w * defects.keep
    refit = robust_fit(np.hstack([rows.a, defects.columns]), y, w, rows.block, knots, n_robust, dev)
    return LinearFit(y, w, rows.block, rows.n_offsets, n_base, refit, defects)


def robust_fit(a, y, w, block, knots, n_robust, device=None) -> RobustFit:
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
            robust_w = lsq.robust_pixel_weights(((y - _predict(a_rows, theta)) * np.sqrt(w)).reshape(-1, 3))
    return RobustFit(a, theta, eq, choice, robust_w)


def _predict(a_rows, theta: np.ndarray) -> np.ndarray:
    """A θ where the rows are (a tensor on the GPU: only the prediction comes back to the host)."""
    if isinstance(a_rows, torch.Tensor):
        return (a_rows @ torch.as_tensor(theta, dtype=a_rows.dtype, device=a_rows.device)).cpu().numpy()
    return a_rows @ theta


def dislocation_columns(particles: list[Particle], residual_rows: np.ndarray, w: np.ndarray) -> Defects:
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
        res = to_map(residual_rows[start:start + n_rows], mask)
        rot = crystal_rotation(p.images.crystal_angle_deg)
        rows_px, cols_px = np.nonzero(mask)
        psf_px = p.strain_blur.sigma_px if p.strain_blur is not None else 0.0
        apart = max(2.0, 1.5 * psf_px)  # closer than this two positions are one dislocation
        if "dislocation_filter" not in p.cache:  # depends on the mask, p.weight and the PSF only
            on_gpu = torch.device(p.solver.device).type == "cuda"  # the CPU keeps scipy's threaded FFTs
            p.cache["dislocation_filter"] = MatchedFilter(mask, p.weight, p.images.pixel_size_nm, rot, psf_px,
                                                          device=p.solver.device if on_gpu else None)
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
    return Defects(extra, keep, found)
