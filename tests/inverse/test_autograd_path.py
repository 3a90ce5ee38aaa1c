"""The general autograd path (L-BFGS through the FE adjoint) reproduces the linear least squares."""

from __future__ import annotations

import numpy as np

from inverse import calibrate, synthesize
from inverse.joint import fit_law_autograd
from mechanics.laws import PiecewiseLinearLaw


def test_lbfgs_through_the_platelet_matches_linear_least_squares():
    """Same data, same X, same (piecewise-linear) law family: L-BFGS on the law module's parameters and
    the offset lands on the linear solution. Tolerance 1.5e-4: the linear fit adds a GCV-weighted
    smoothness penalty (small for σ_ε = 2e-4 data) and L-BFGS stops at a finite gradient along the
    ill-conditioned law-level/offset direction."""
    images = synthesize(size_px=32, seed=3, law="bowed", n_dislocations=0, composition_sigma=0.01,
                        strain_sigma=2e-4, composition_psf_nm=0, strain_psf_nm=0)
    linear = calibrate(images, n_knots=5, n_joint=0, n_bootstrap=0, fit_dislocations=False, n_robust=0,
                       errors_in_variables="nlm")
    start = PiecewiseLinearLaw.from_vegard((0.03, 0.03, -0.01), n_knots=5)
    x = linear.residual[0]["composition_denoised"]
    law, offset = fit_law_autograd(images, start, x=x, n_iter=250)
    values = law.values().detach().numpy()[[0, 2]]
    np.testing.assert_allclose(values, linear.values, atol=1.5e-4)
    off = linear.offsets[0]
    np.testing.assert_allclose([offset[0, 0], offset[1, 1], offset[0, 1]], [off["aa"], off["cc"], off["ac"]],
                               atol=1.5e-4)
