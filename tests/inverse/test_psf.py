"""The probes' PSF operator and what modelling it does to the calibration."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from inverse import calibrate, synthesize
from inverse.forward import lfp_material
from inverse.psf import MaskedGaussian, psf_pixels
from mechanics.errors import InputError


def _disc(n=64):
    y, x = np.mgrid[:n, :n] - n / 2
    return np.hypot(x, y) < 0.4 * n


def test_normalised_convolution_matches_scipy():
    mask = _disc()
    f = np.random.default_rng(0).normal(size=mask.shape)
    out = MaskedGaussian(mask, 2.3).apply_numpy(f[..., None])[..., 0]
    kw = dict(sigma=2.3, mode="constant", truncate=4.0)
    num = ndimage.gaussian_filter(np.where(mask, f, 0.0), **kw)
    den = ndimage.gaussian_filter(mask.astype(float), **kw)
    ref = np.where(mask, num / np.where(mask, den, 1.0), 0.0)
    assert np.abs(out - ref).max() < 1e-12  # same kernel and padding: round-off only


def test_uniform_fields_pass_and_zero_sigma_is_the_mask():
    mask = _disc()
    blur = MaskedGaussian(mask, 3.0)
    ones = torch.ones(2, 2, *mask.shape, dtype=torch.float64)
    out = blur(ones)
    assert torch.allclose(out[:, :, mask], torch.ones(1, dtype=torch.float64))
    assert float(out[:, :, ~mask].abs().max()) == 0
    f = torch.randn(*mask.shape, dtype=torch.float64)
    assert torch.equal(MaskedGaussian(mask, 0.0)(f), f * torch.as_tensor(mask))


def test_bad_sigma_is_refused_with_the_field_name():
    with pytest.raises(InputError, match="strain_psf_nm"):
        psf_pixels(-1.0, 10.0, "strain_psf_nm")
    with pytest.raises(InputError, match="composition_psf_nm"):
        psf_pixels("wide", 10.0, "composition_psf_nm")
    assert psf_pixels(None, 10.0, "strain_psf_nm") == 0.0
    with pytest.raises(InputError, match="strain_psf_nm"):
        calibrate(synthesize(size_px=24, seed=0), n_bootstrap=0, n_joint=0, strain_psf_nm=float("nan"))


def test_modelling_the_strain_psf_removes_the_blur_misfit():
    """A 20 nm strain PSF (one pixel) on noise-free, defect-free particles: left out of the model it
    leaves a strain misfit 2.5–3.5 times the one with the PSF modelled (measured 2.4–3.2e-4 against
    0.9–1.0e-4 on seeds 0–2) and biases the c slope by up to 0.7 %; modelled, both slopes are within
    0.4 % (measured ≤ 0.39 %)."""
    misfit = lfp_material().misfit
    for seed in (0, 1):
        images = synthesize(size_px=96, seed=seed, composition_sigma=0.0, strain_sigma=1e-5, n_dislocations=0,
                            strain_psf_nm=20.0, composition_psf_nm=0.0)
        plain = calibrate(images, n_bootstrap=0)
        psf = calibrate(images, n_bootstrap=0, strain_psf_nm=20.0)
        assert plain.fit.rmse_strain > 2.0 * psf.fit.rmse_strain
        errors = np.abs([psf.vegard.slope_a / misfit[0] - 1, psf.vegard.slope_c / misfit[2] - 1])
        assert errors.max() < 0.005


def test_modelling_the_composition_psf_deconvolves_a_noise_free_map():
    """A noise-free composition map blurred by a 30 nm PSF (1.5 pixels): the X-step deconvolves it when
    the PSF is modelled, although there is no composition noise to handle (its prior then takes the map
    as precise to 1/40 of the knot spacing). Measured on seeds 1 and 3: c slope −2.8 % and −2.9 %
    unmodelled, +0.06 % and −0.01 % modelled; a slope within 0.8 % either way. Bound 1 % with the
    default strain noise and dislocations (c-slope σ ≈ 1 %)."""
    misfit = lfp_material().misfit
    for seed in (1, 3):
        images = synthesize(size_px=96, seed=seed, composition_sigma=0.0, composition_psf_nm=30.0,
                            strain_psf_nm=10.0)
        errors = {}
        for modelled in (None, 30.0):
            cal = calibrate(images, n_bootstrap=0, strain_psf_nm=10.0, composition_psf_nm=modelled)
            errors[modelled] = np.abs([cal.vegard.slope_a / misfit[0] - 1,
                                       cal.vegard.slope_c / misfit[2] - 1])
        assert errors[30.0].max() < 0.01, errors
        assert errors[30.0][1] < 0.25 * errors[None][1], errors


def test_blurred_basis_responses_agree_between_solver_paths():
    """The PCG path builds, solves and blurs the basis fields on its device; the LU path in numpy."""
    from inverse.forward import basis_responses, hat_basis, platelet_solver

    images = synthesize(size_px=32, seed=3)
    phi = hat_basis(np.nan_to_num(images.composition), np.linspace(0.0, 1.0, 5))
    blur = MaskedGaussian(images.mask, 1.4)
    out = {}
    for kind in ("lu", "pcg"):
        solver = platelet_solver(images.mask, 30.0, images.pixel_size_nm, device="cpu", solver=kind)
        out[kind] = basis_responses(solver, phi, 30.0, blur=blur)
    assert out["lu"].shape == (2, 4, 32, 32, 2, 2)
    assert np.abs(out["pcg"] - out["lu"]).max() < 1e-7 * np.abs(out["lu"]).max()
