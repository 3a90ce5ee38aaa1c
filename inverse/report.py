"""Stage 5 of the calibration: per particle, the measured, predicted and residual strain maps in the
crystal frame with their hot spots (:mod:`inverse.residual`), the registration, the fitted offset and
the input's identity; over all particles, what the data constrain (:func:`identifiability`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inverse.forward import hat_basis
from inverse.images import grid_to_crystal
from inverse.linear import LinearFit
from inverse.prepare import COMPONENTS, Particle, to_map
from inverse.residual import find_hotspots
from inverse.result import Identifiability


@dataclass(frozen=True)
class ParticleReports:
    """The per-particle sections of a :class:`~inverse.result.Calibration` (lists in particle order):
    residual maps, hot spots, registrations, offsets and inputs, and every fitted X on its mask
    (x_fit, concatenated)."""

    maps: list[dict[str, np.ndarray]]
    hotspots: list[list[dict]]
    registration: list[dict]
    offsets: list[dict]
    inputs: list[dict]
    x_fit: np.ndarray


def particle_reports(particles: list[Particle], fitted: LinearFit, theta: np.ndarray, n_law: int,
                     rmse: float, known_sigma: bool) -> ParticleReports:
    """Maps and records of every particle from the final coefficients ``theta``.

    The prediction is the law plus the offsets: fitted dislocations stay in the residual. Hot spots are
    scored against the stated strain σ (``known_sigma``), else against ``rmse``.
    """
    predicted = fitted.a[:, :fitted.n_base] @ theta[:fitted.n_base]
    maps, hotspots, regs, offsets, inputs = [], [], [], [], []
    start = 0
    col = n_law
    x_all = []
    for p, n_o, disl in zip(particles, fitted.n_offsets, fitted.defects.dislocations):
        mask = p.images.mask
        n_rows = 3 * int(mask.sum())
        pred = to_map(predicted[start:start + n_rows], mask)
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
            for comp, (i, j) in zip(("aa", "cc", "ac"), COMPONENTS):
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
    return ParticleReports(maps, hotspots, regs, offsets, inputs, np.concatenate(x_all))


def identifiability(x: np.ndarray, knots: np.ndarray, a: np.ndarray, w: np.ndarray, n_law: int,
                    min_support: float, chi2: float, known_sigma: bool) -> Identifiability:
    """Coverage, knot support and conditioning of the law design ``a[:, :n_law]`` weighted by ``w``,
    and the warnings: knots with less than ``min_support`` pixel equivalents, a condition number above
    1e6, and χ²_red above 4 when the strain σ is known."""
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
    return Identifiability(edges, counts, support, constrained, sv, cond, warnings)
