"""Gradients through time: checkpointed rollouts equal plain autograd and finite differences."""

import torch

from mechanics.grid import Grid
from mechanics.phasefield.adjoint import ch_fixed_step, rollout, saved_bytes_per_step
from mechanics.phasefield.cahn_hilliard import CahnHilliard
from mechanics.phasefield.free_energy import RegularSolution
from mechanics.phasefield.reaction import AllenCahnReaction, ButlerVolmer, acr_fixed_step


def _c0(shape=(1, 16, 16), seed=0):
    gen = torch.Generator().manual_seed(seed)
    return 0.5 + 0.05 * (torch.rand(shape, generator=gen, dtype=torch.float64) - 0.5)


def _ch(mobility):
    free = RegularSolution(site_density_per_nm3=1.0, kT_aJ=1.0, omega_aJ=3.0)
    return CahnHilliard(grid=Grid((16, 16), 1.0), free_energy=free, mobility=mobility, kappa=1.0)


def _acr(rate):
    free = RegularSolution(site_density_per_nm3=1.0, kT_aJ=1.0, omega_aJ=3.0)
    return AllenCahnReaction(grid=Grid((16, 16), 1.0), free_energy=free, kappa_aJ_per_nm=1.0,
                             site_density_per_nm3=1.0, kT_aJ=1.0, rate_law=ButlerVolmer(rate, 0.5),
                             current_per_s=torch.tensor([0.01], dtype=torch.float64))


def _loss(c):
    return (c.std(dim=(-2, -1)) ** 2).sum()  # growth of the phase separation


def test_checkpointed_gradient_equals_autograd_and_finite_difference():
    """d(loss)/dM for a 40-step CH rollout: checkpointing every 7 steps gives the plain autograd gradient
    to 1e-12 (same arithmetic recomputed); a central difference (h = 1e-6) agrees to 1e-6 relative
    (its truncation error ~h², round-off ~1e-16/h)."""
    m = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    c0 = _c0()
    plain = torch.autograd.grad(_loss(rollout(ch_fixed_step(_ch(m), 0.05), c0, 40)), m)[0]
    ckpt = torch.autograd.grad(_loss(rollout(ch_fixed_step(_ch(m), 0.05), c0, 40, segment=7)), m)[0]
    assert torch.allclose(plain, ckpt, rtol=1e-12, atol=0)
    h = 1e-6
    with torch.no_grad():
        up = _loss(rollout(ch_fixed_step(_ch(0.7 + h), 0.05), c0, 40))
        down = _loss(rollout(ch_fixed_step(_ch(0.7 - h), 0.05), c0, 40))
    fd = (up - down) / (2 * h)
    assert abs(float(plain) - float(fd)) <= 1e-6 * abs(float(fd))
    assert float(plain) != 0.0


def test_acr_rate_gradient_matches_finite_difference():
    """The galvanostatic ACR step (with its reservoir solve) is differentiable in the rate constant."""
    k = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    c0 = _c0(seed=1)
    g = torch.autograd.grad(_loss(rollout(acr_fixed_step(_acr(k), 0.5), c0, 30, segment=5)), k)[0]
    h = 1e-6
    with torch.no_grad():
        fd = (_loss(rollout(acr_fixed_step(_acr(0.5 + h), 0.5), c0, 30))
              - _loss(rollout(acr_fixed_step(_acr(0.5 - h), 0.5), c0, 30))) / (2 * h)
    assert abs(float(g) - float(fd)) <= 1e-5 * abs(float(fd))


def test_checkpointing_cuts_saved_memory():
    """Saved-tensor bytes: one CH step saves a few grid-sized tensors; a checkpointed segment saves only
    its input."""
    m = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    c0 = _c0(shape=(1, 64, 64)).requires_grad_(True)
    model = CahnHilliard(grid=Grid((64, 64), 1.0), free_energy=RegularSolution(1.0, 1.0, 3.0),
                         mobility=m, kappa=1.0)
    step = ch_fixed_step(model, 0.05)
    per_step = saved_bytes_per_step(step, c0)
    grid_bytes = c0.numel() * c0.element_size()
    assert 2 * grid_bytes <= per_step <= 20 * grid_bytes
    segment = saved_bytes_per_step(lambda c: rollout(step, c, 10, segment=10), c0)
    assert segment < 0.2 * 10 * per_step
