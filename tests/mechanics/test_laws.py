"""Eigenstrain laws: ε⁰(0) = 0, exact piecewise-linear interpolation, monotone parametrisation, the
design matrix, rescaling, derivatives and serialisation."""

from __future__ import annotations

import io

import pytest
import torch

from mechanics import EigenstrainLaw, InputError, PiecewiseLinearLaw, VegardLaw

F64 = torch.float64
MISFIT = (0.052, 0.0376, -0.0201)


def test_vegard_law_values_dtype_and_derivative():
    law = VegardLaw(MISFIT)
    X = torch.tensor([[0.0, 0.25], [0.5, 1.0]], dtype=torch.float32)
    out = law(X)
    assert out.shape == (2, 2, 3) and out.dtype == torch.float32
    assert torch.equal(out[0, 0], torch.zeros(3))
    assert torch.allclose(out[1, 1], torch.tensor(MISFIT))
    assert torch.allclose(law.derivative(X), torch.tensor(MISFIT).expand(2, 2, 3))
    assert isinstance(law.rescaled((0.01, 0.02, 0.03)), VegardLaw)


def test_piecewise_linear_interpolates_knots_and_is_linear_between():
    knots = torch.tensor([0.0, 0.2, 0.7, 1.0], dtype=F64)
    values = torch.tensor([[0.0, 0.01, 0.04, 0.05], [0.0, 0.02, 0.02, 0.03], [0.0, -0.01, -0.015, -0.02]],
                          dtype=F64)
    law = PiecewiseLinearLaw(knots, values)
    assert torch.allclose(law(knots), values.T, atol=1e-15)
    assert torch.equal(law(torch.zeros((), dtype=F64)), torch.zeros(3, dtype=F64))
    # midpoint of the segment [0.2, 0.7] is the mean of the knot values
    assert torch.allclose(law(torch.tensor(0.45, dtype=F64)), 0.5 * (values[:, 1] + values[:, 2]))
    # linear continuation outside [0, 1] with the end slopes
    slope_end = (values[:, 3] - values[:, 2]) / 0.3
    assert torch.allclose(law(torch.tensor(1.1, dtype=F64)), values[:, 3] + 0.1 * slope_end)
    slope_0 = values[:, 1] / 0.2
    assert torch.allclose(law(torch.tensor(-0.05, dtype=F64)), -0.05 * slope_0)


def test_basis_is_the_design_matrix_and_derivative_matches_autograd():
    law = PiecewiseLinearLaw.from_vegard(MISFIT, n_knots=6)
    law.set_values(law.values().detach() + 0.003 * torch.rand(3, 6, dtype=F64))
    X = torch.rand(50, dtype=F64) * 1.2 - 0.1
    phi = law.basis(X)
    assert phi.shape == (50, 6)
    assert torch.allclose(phi @ law.values().detach().T, law(X).detach())
    inside = (X > 0) & (X < 1)
    assert torch.allclose(phi[inside].sum(-1), torch.ones(int(inside.sum()), dtype=F64))
    analytic = law.derivative(X)
    auto = EigenstrainLaw.derivative(law, X)  # the base-class autograd route
    assert torch.allclose(analytic, auto, atol=1e-12)


def test_monotone_parametrisation_stays_monotone_under_any_parameters():
    law = PiecewiseLinearLaw.from_vegard(MISFIT, n_knots=8, monotone=True)
    assert torch.allclose(law.values(), PiecewiseLinearLaw.from_vegard(MISFIT, 8).values(), atol=1e-12)
    with torch.no_grad():
        law.free.copy_(torch.randn_like(law.free) * 5)
    v = law.values()
    signs = torch.tensor([1.0, 1.0, -1.0], dtype=F64)
    assert bool(((v[:, 1:] - v[:, :-1]) * signs[:, None] > 0).all())
    assert torch.equal(v[:, 0], torch.zeros(3, dtype=F64))
    with pytest.raises(InputError):
        law.set_values(torch.tensor([[0, 0.02, 0.01, 0.03, 0.04, 0.05, 0.06, 0.07]] * 3, dtype=F64))


def test_gradients_reach_the_knot_parameters():
    law = PiecewiseLinearLaw.from_vegard(MISFIT, n_knots=5, monotone=True)
    loss = law(torch.rand(20, dtype=F64)).pow(2).sum()
    loss.backward()
    assert law.free.grad is not None and law.free.grad.abs().sum() > 0


def test_rescaled_keeps_shape_and_falls_back_to_vegard_on_flat_axis():
    knots = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    values = torch.tensor([[0.0, 0.04, 0.05], [0.0, 0.0, 0.0], [0.0, -0.005, -0.02]], dtype=F64)
    law = PiecewiseLinearLaw(knots, values)
    new = law.rescaled((0.1, 0.03, 0.01))
    X = torch.linspace(0, 1, 11, dtype=F64)
    out = new(X)
    assert torch.allclose(out[:, 0], 0.1 * law(X)[:, 0] / 0.05)
    assert torch.allclose(out[:, 1], 0.03 * X)  # flat axis: Vegard
    assert torch.allclose(out[:, 2], 0.01 * law(X)[:, 2] / -0.02)
    assert torch.allclose(new(torch.ones((), dtype=F64)), torch.tensor([0.1, 0.03, 0.01], dtype=F64))


def test_laws_survive_torch_save_and_load():
    for law in (VegardLaw(MISFIT), PiecewiseLinearLaw.from_vegard(MISFIT, 4, monotone=True)):
        buf = io.BytesIO()
        torch.save(law, buf)
        buf.seek(0)
        loaded = torch.load(buf, weights_only=False)
        X = torch.rand(7, dtype=F64)
        assert torch.allclose(loaded(X), law(X))


@pytest.mark.parametrize(
    "args",
    [([0.0, 1.0, 0.5], [[0] * 3] * 3), ([0.1, 1.0], [[0] * 2] * 3), ([0.0, 0.9], [[0] * 2] * 3),
     ([0.0, 1.0], [[0] * 3] * 3), ([0.0, 1.0], [[0, float("nan")]] * 3)],
)
def test_bad_knots_or_values(args):
    with pytest.raises(InputError):
        PiecewiseLinearLaw(*args)
