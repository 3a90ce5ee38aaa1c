"""Calibrate the composition–eigenstrain law ε⁰(X) from correlative images (Deng et al., Nature
Materials 21, 547 (2022)).

The stages, along the data flow (one module each):

1. :mod:`inverse.prepare`: per particle, put X on the strain grid (:mod:`inverse.registration`),
   denoise it with its known σ (:mod:`inverse.denoise`, errors in variables), factorise the
   free-platelet FE operator once and compute the strain response of every law coefficient
   (:mod:`inverse.forward`); stack the rows of all particles into one design. All particles share the
   law; each has its own uniform reference offset (strain_reference "unknown"; "LiMPO4" shifts by
   −ε⁰(1), "MPO4" by nothing).
2. :mod:`inverse.linear`: the weighted, smoothness-regularised robust least squares of
   :mod:`inverse.fit` (GCV picks λ), then dislocation nuisances at the residual's hot spots and a refit.
3. joint rounds (:func:`refine_particles`, :mod:`inverse.joint`): the X-step re-estimates X from both
   maps, new basis responses, stage 2 again.
4. :mod:`inverse.uncertainty`: monotone re-solve, Laplace covariance, block bootstrap, Vegard slopes.
5. :mod:`inverse.report`: residual maps, hot spots, identifiability.

The law is returned as the core's ``PiecewiseLinearLaw`` with the b axis set to Vegard with the
reference misfit (an [010] image does not see b).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from inverse.forward import basis_responses, extend_to_elements, hat_basis, lfp_material, resolve_device
from inverse.images import ImageSet
from inverse.joint import refine_composition
from inverse.linear import LinearFit, linear_fit
from inverse.prepare import Particle, negligible_sigma, prepare_particle, to_map
from inverse.report import identifiability, particle_reports
from inverse.result import Calibration, FitStatistics
from inverse.settings import CalibrationSettings, with_overrides
from inverse.uncertainty import estimate_uncertainty, per_axis, vegard_slopes
from mechanics.errors import InputError

__all__ = ["Calibration", "CalibrationSettings", "calibrate", "refine_particles"]


def calibrate(images, settings: CalibrationSettings | None = None, *, progress: bool = False,
              **overrides) -> Calibration:
    """Learn ε⁰(X) along a and c from one image set or a list of them (one shared law).

    Args:
        images: ``ImageSet`` or a list of them (``inverse.load_images``).
        settings: how to calibrate (:class:`~inverse.settings.CalibrationSettings`); None: the defaults.
        progress: show progress bars (tqdm) for the particle preparation and the joint rounds.
        **overrides: fields of ``CalibrationSettings`` to replace in ``settings``, a shorthand for
            ``calibrate(images, replace(settings, n_knots=9))``; validated by the dataclass.

    Returns:
        The :class:`~inverse.result.Calibration`.

    Raises:
        InputError: bad images or settings, or a device or solver this machine does not have.
        TypeError: an override that is not a settings field.
    """
    from tqdm.auto import tqdm

    from mechanics.laws import PiecewiseLinearLaw

    settings = with_overrides(CalibrationSettings, settings, overrides, "calibrate")
    sets = [images] if isinstance(images, ImageSet) else list(images)
    if not sets or not all(isinstance(s, ImageSet) for s in sets):
        raise InputError("images", "an ImageSet or a non-empty list of ImageSets", type(images).__name__)
    dev, solver_kind = resolve_device(settings.device, settings.solver)
    material = settings.material or lfp_material()
    voigt = material.stiffness_voigt()
    knots = np.linspace(0.0, 1.0, settings.n_knots)
    n_law = 2 * (knots.size - 1)
    clock = [("start", time.perf_counter())]
    particles = [
        prepare_particle(s, knots, settings, voigt, dev, solver_kind)
        for s in tqdm(sets, desc="factorise + basis solves", unit="particle",
                      disable=None if progress else True)
    ]
    clock.append(("prepare_s", time.perf_counter()))
    fitted = linear_fit(particles, knots, n_law, settings.n_robust, settings.fit_dislocations)
    clock.append(("linear_fit_s", time.perf_counter()))
    for _ in tqdm(range(settings.n_joint), desc="joint X / law refinement",
                  disable=None if progress and settings.n_joint else True):
        particles = refine_particles(particles, fitted, knots, n_law)
        fitted = linear_fit(particles, knots, n_law, settings.n_robust, settings.fit_dislocations)
    clock.append(("joint_s", time.perf_counter()))
    known_sigma = all(p.images.strain_sigma is not None for p in particles)
    unc = estimate_uncertainty(fitted, knots, n_law, settings, known_sigma)
    clock.append(("uncertainty_s", time.perf_counter()))

    values, std_l, std_b = (per_axis(v, n_law) for v in (unc.theta, unc.laplace_std, unc.bootstrap_std))
    std = np.maximum(std_l, std_b)
    vegard = vegard_slopes(values, knots, unc, n_law)

    rmse = float(np.sqrt(np.mean((fitted.y - fitted.a @ unc.theta) ** 2)))
    reports = particle_reports(particles, fitted, unc.theta, n_law, rmse, known_sigma)
    ident = identifiability(reports.x_fit, knots, fitted.a, fitted.w, n_law, settings.min_support_px,
                            unc.chi2_reduced, known_sigma)

    law = PiecewiseLinearLaw(knots, law_knot_values(values, material, knots), monotone=settings.monotone)
    # the law at each bootstrap replicate: its posterior samples, stored with the registered model
    samples = None if unc.replicates is None else np.stack(
        [law_knot_values(per_axis(rep, n_law), material, knots) for rep in unc.replicates])
    clock.append(("report_s", time.perf_counter()))
    pcg = solver_kind == "pcg"  # the GPU path's work, for benchmarks (all particles, all stages)
    fit_stats = FitStatistics(
        rmse_strain=rmse, n_pixels=int(reports.x_fit.size), chi2_reduced=unc.chi2_reduced,
        smoothness_lambda=fitted.fit.gcv["lambda"], lambda_rule="generalized cross-validation",
        dof=fitted.fit.gcv["dof_best"], n_rows=fitted.fit.equations.n_rows, n_params=int(fitted.a.shape[1]),
        n_particles=len(particles), downweighted_fraction=float(np.mean(fitted.fit.robust_w < 0.5)),
        n_hotspots=int(sum(len(h) for h in reports.hotspots)), solver=solver_kind,
        device=f"{dev} ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else str(dev),
        rim="partial coverage" if settings.use_coverage and any(p.images.coverage is not None
                                                                for p in particles) else "pixel staircase",
        timings_s={name: t - clock[i][1] for i, (name, t) in enumerate(clock[1:])},
        pcg_solves=sum(p.solver.work()["pcg_solves"] for p in particles) if pcg else None,
        pcg_iterations=sum(p.solver.work()["pcg_iterations"] for p in particles) if pcg else None,
    )
    return Calibration(
        law=law, knots_X=knots, values=values, std=std, std_laplace=std_l, std_bootstrap=std_b,
        covariance=unc.covariance[:n_law, :n_law], vegard=vegard, fit=fit_stats, residual=reports.maps,
        identifiability=ident, registration=reports.registration, offsets=reports.offsets,
        inputs=reports.inputs, warnings=list(ident.warnings), settings=settings,
        dislocations=fitted.defects.dislocations, law_samples=samples,
    )


def law_knot_values(values: np.ndarray, material, knots: np.ndarray) -> np.ndarray:
    """(3, K) knot values of the law from the fitted (2, K) a and c values; b is Vegard with the reference
    misfit (an [010] image does not see b)."""
    out = np.zeros((3, knots.size))
    out[0], out[2] = values[0], values[1]
    out[1] = material.misfit[1] * knots
    return out


def refine_particles(particles: list[Particle], fitted: LinearFit, knots: np.ndarray,
                     n_law: int) -> list[Particle]:
    """X-step of the joint estimation for every particle, then new basis responses (inverse.joint)."""
    a, w, theta, robust_w = fitted.a, fitted.w, fitted.theta, fitted.fit.robust_w
    values = per_axis(theta, n_law)
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
            p.strain, to_map(other[start:start + n_rows], mask), pix_w,
            strain_blur=p.strain_blur, composition_blur=p.composition_blur, mask=mask,
        )
        phi = extend_to_elements(hat_basis(np.nan_to_num(x_new), knots), mask, p.solver.mask)
        responses = basis_responses(p.solver, phi, p.images.crystal_angle_deg, blur=p.strain_blur)
        out.append(replace(p, x_fit=x_new, responses=responses))
        start += n_rows
    return out
