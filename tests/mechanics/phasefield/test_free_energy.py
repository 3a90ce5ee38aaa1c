"""Hand-written derivatives of the bulk free energies against autograd (float64; tolerance 1e-9 relative:
both are exact formulas, only round-off separates them)."""

import pytest
import torch

from mechanics.phasefield.free_energy import DoubleWell, Polynomial, RegularSolution

MODELS = [
    RegularSolution(site_density_per_nm3=13.793, kT_aJ=4.116e-3, omega_aJ=1.856e-2),
    DoubleWell(),
    Polynomial(),
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_derivatives_match_autograd(model):
    c = torch.linspace(0.03, 0.97, 57, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(model.density(c).sum(), c, create_graph=True)
    (hess,) = torch.autograd.grad(grad.sum(), c)
    torch.testing.assert_close(model.derivative(c), grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(model.curvature(c), hess, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_stabilization_bounds_concavity(model):
    c = torch.linspace(0.0, 1.0, 2001, dtype=torch.float64)
    assert float(model.stabilization()) >= float(-model.curvature(c).min()) - 1e-9


def test_regular_solution_spinodal():
    # f'' = 0 at c(1-c) = kT/(2Ω): the closed-form spinodal of the regular solution
    kT, omega = 1.0, 3.0
    model = RegularSolution(1.0, kT, omega)
    c_s = 0.5 - 0.5 * (1 - 2 * kT / omega) ** 0.5
    assert abs(float(model.curvature(torch.tensor(c_s, dtype=torch.float64)))) < 1e-12
