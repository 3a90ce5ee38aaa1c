"""CUDA agrees with the CPU (skipped without a CUDA device): homogeneous and particle solves, the
coherency kernel and the laws, computed on the device of the inputs."""

from __future__ import annotations

import pytest
import torch

from mechanics import Grid, PiecewiseLinearLaw, Stiffness, coherency_kernel, minimum_B, solve_elasticity
from mechanics.parameters.lfp import lfp_params

pytestmark = pytest.mark.gpu
F64 = torch.float64


def _inputs(device):
    p = lfp_params()
    C = Stiffness.from_voigt(p.stiffness_voigt())
    g = Grid((32, 24), 1.0)
    x = g.coordinates_nm()
    mask = x.norm(dim=-1) < 10
    eps0 = torch.sigmoid(x[..., 0])[..., None, None] * torch.tensor([[0.052, 0.0], [0.0, -0.02]], dtype=F64)
    return g, C.to(device=device), eps0.to(device), mask.to(device), p


@pytest.mark.parametrize("masked", [False, True])
def test_cuda_matches_cpu(masked):
    g, C, eps0, mask, _ = _inputs("cpu")
    gc, Cc, eps0c, maskc, _ = _inputs("cuda")
    kw = dict(plane="stress", axes=(0, 2))
    cpu = solve_elasticity(g, C, eps0, mask=mask if masked else None, **kw)
    gpu = solve_elasticity(gc, Cc, eps0c, mask=maskc if masked else None, **kw)
    assert gpu.stress.device.type == "cuda"
    peak = float(cpu.stress.abs().max())
    assert float((gpu.stress.cpu() - cpu.stress).abs().max()) < 1e-6 * peak
    # stiffness on the CPU, eigenstrain on CUDA: computed on the eigenstrain's device
    mixed = solve_elasticity(gc, C, eps0c.float(), **kw)
    assert mixed.stress.device.type == "cuda" and mixed.stress.dtype == torch.float32


def test_cuda_gradients_through_particle():
    gc, Cc, eps0c, maskc, _ = _inputs("cuda")
    eps = eps0c.clone().requires_grad_(True)
    res = solve_elasticity(gc, Cc, eps, mask=maskc, plane="stress", axes=(0, 2))
    res.energy.backward()
    g, C, eps0, mask, _ = _inputs("cpu")
    e = eps0.clone().requires_grad_(True)
    solve_elasticity(g, C, e, mask=mask, plane="stress", axes=(0, 2)).energy.backward()
    assert torch.allclose(eps.grad.cpu(), e.grad, atol=1e-6 * float(e.grad.abs().max()))


def test_cuda_kernel_minimum_and_laws():
    _, C, _, _, p = _inputs("cpu")
    Cc = C.to(device="cuda")
    g = Grid((16, 16), 1.0)
    k_cpu = coherency_kernel(g, C, p.misfit_tensor(), axes=(0, 2))
    k_gpu = coherency_kernel(g, Cc, p.misfit_tensor(), axes=(0, 2))
    assert torch.allclose(k_gpu.cpu(), k_cpu, rtol=1e-10)
    B_cpu, _ = minimum_B(C, p.misfit_tensor())
    B_gpu, _ = minimum_B(Cc, p.misfit_tensor())
    assert float(B_gpu) == pytest.approx(float(B_cpu), rel=1e-8)
    law = PiecewiseLinearLaw.from_vegard(p.misfit, 5, monotone=True)
    X = torch.rand(100, dtype=F64)
    assert torch.allclose(law(X.cuda()).cpu(), law(X))
    assert torch.allclose(law.to("cuda")(X.cuda()).cpu(), law(X))
