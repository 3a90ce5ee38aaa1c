"""The calibration's GPU path (skipped without a CUDA device): the matrix-free platelet PCG on CUDA
agrees with the sparse LU on the CPU, and a whole calibration on CUDA gives the CPU's law."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inverse import calibrate, synthesize
from inverse.forward import platelet_solver
from inverse.psf import MaskedGaussian

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def images():
    return synthesize(size_px=64, seed=2, crystal_angle_deg=-20.0)


@pytest.mark.parametrize("conv", [True, False], ids=["conv", "slices"])
def test_platelet_pcg_on_cuda_matches_sparse_lu(images, conv):
    from inverse.images import stiffness_to_grid
    from mechanics.elasticity import PlateletPCG
    from mechanics.parameters.lfp import lfp_params
    from mechanics.stiffness import Stiffness

    lu = platelet_solver(images.mask, -20.0, images.pixel_size_nm, device="cpu")
    default = platelet_solver(images.mask, -20.0, images.pixel_size_nm, device="cuda")
    assert default.device.type == "cuda" and default.use_conv  # convolutions by default on a GPU
    c_ac = Stiffness.from_voigt(lfp_params().stiffness_voigt()).reduced(axes=(0, 2), plane="stress")
    pcg = PlateletPCG(images.mask, stiffness_to_grid(c_ac.numpy(), -20.0), images.pixel_size_nm,
                      device="cuda", conv=conv)
    rng = np.random.default_rng(0)
    eig = rng.normal(size=(3, *images.mask.shape, 2, 2)) * 0.01
    eig = eig + np.swapaxes(eig, -1, -2)
    ref = lu.apply(eig)
    # same discretisation; CG stops at a relative residual of 1e-9
    assert np.abs(pcg.apply(eig) - ref).max() < 1e-7 * np.abs(ref).max()
    one = pcg.apply(eig[:1])  # the single-RHS recurrences
    assert np.abs(one - ref[:1]).max() < 1e-7 * np.abs(ref).max()


def test_masked_gaussian_on_cuda_matches_cpu(images):
    field = np.random.default_rng(1).normal(size=(*images.mask.shape, 2, 2))
    cpu = MaskedGaussian(images.mask, 1.7).apply_numpy(field)
    gpu = MaskedGaussian(images.mask, 1.7, device="cuda").apply_numpy(field)
    assert np.abs(gpu - cpu).max() < 1e-12


def test_calibration_on_cuda_matches_cpu(images):
    kw = dict(n_bootstrap=8, strain_psf_nm=10.0, composition_psf_nm=10.0)
    cpu = calibrate(images, device="cpu", **kw)
    gpu = calibrate(images, device="cuda", **kw)
    assert gpu.fit.solver == "pcg" and "cuda" in gpu.fit.device
    # L-BFGS on X runs the same iterations on both; its line search sees differences at the CG
    # tolerance, so the laws agree to far below their uncertainty (std ~1e-3), not to round-off
    assert np.abs(gpu.values - cpu.values).max() < 1e-5
    assert gpu.vegard.slope_a == pytest.approx(cpu.vegard.slope_a, rel=1e-4)
    assert torch.cuda.is_available()
