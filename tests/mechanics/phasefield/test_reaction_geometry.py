"""Allen-Cahn-reaction on a particle outline (mask) and with a wetted surface (fixed surface composition)."""

import math

import pytest
import torch

from mechanics.errors import InputError
from mechanics.grid import Grid
from mechanics.phasefield.free_energy import RegularSolution
from mechanics.phasefield.protocols import run_to_times
from mechanics.phasefield.reaction import AllenCahnReaction, ButlerVolmer, allen_cahn_reaction

F64 = torch.float64


def _model(grid, mask=None, boundary="noflux", omega=3.0, current=0.004, reservoir=None, kappa=1.0,
           surface=None, law=None):
    free = RegularSolution(site_density_per_nm3=1.0, kT_aJ=1.0, omega_aJ=omega)
    return AllenCahnReaction(
        grid=grid, free_energy=free, kappa_aJ_per_nm=kappa, site_density_per_nm3=1.0, kT_aJ=1.0,
        rate_law=law or ButlerVolmer(1.0, 0.5),
        current_per_s=None if current is None else torch.tensor([current], dtype=F64),
        reservoir_potential_kT=None if reservoir is None else torch.tensor([reservoir], dtype=F64),
        boundary=boundary, mask=mask, surface_composition=surface,
    )


def _run(model, c0, times):
    init_fn, step_fn = allen_cahn_reaction(model, compile=False)
    return run_to_times(step_fn, init_fn(c0, 0.1), times)


def test_masked_particle_gives_the_same_run_on_any_grid_that_holds_it():
    """A 12 × 10 particle on its own grid (mask everywhere, no-flux edges) and the same particle inside a
    periodic 20 × 24 grid (mask elsewhere False, the outside at an arbitrary 0.7): transport and reaction
    live on the particle only, the galvanostatic constraint is over its pixels, so both runs take the same
    adaptive steps and end in the same field to 1e-8 (float64 round-off of sums in another order, grown by the
    spinodal instability); the
    outside never changes, and the particle's mean is X₀ + I t (1e-10) while it phase separates
    (Ω = 3 kT)."""
    gen = torch.Generator().manual_seed(3)
    c_own = 0.1 + 0.02 * torch.rand((1, 12, 10), generator=gen, dtype=F64)
    own = _model(Grid((12, 10), 1.0), mask=torch.ones((12, 10), dtype=torch.bool))
    mask = torch.zeros((20, 24), dtype=torch.bool)
    mask[3:15, 5:15] = True
    c_big = torch.full((1, 20, 24), 0.7, dtype=F64)
    c_big[:, 3:15, 5:15] = c_own
    big = _model(Grid((20, 24), 1.0), mask=mask, boundary="periodic")
    t_end = 150.0
    a = _run(own, c_own, [t_end])
    b = _run(big, c_big, [t_end])
    assert int(a.steps[0]) == int(b.steps[0]) > 10
    torch.testing.assert_close(b.c[:, 3:15, 5:15], a.c, rtol=0, atol=1e-8)
    outside = ~mask
    assert bool((b.c[0][outside] == 0.7).all())
    torch.testing.assert_close(b.aux.nu, a.aux.nu, rtol=0, atol=1e-9)
    x_end = float(c_own.mean()) + 0.004 * t_end
    assert float(b.c[0][mask].mean()) == pytest.approx(x_end, abs=1e-10)
    assert float(a.c.std()) > 0.1  # it phase separated on the way (not a trivially uniform run)


def test_irregular_mask_counts_charge_and_is_translation_invariant():
    """A disk-and-notch particle on a periodic 24² grid: the charge count over its pixels is exact and the
    same particle shifted by (5, −7) gives the shifted field (1e-6: round-off grown by the instability)."""
    n = 24
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    mask = ((i - 11.5) ** 2 + (j - 11.5) ** 2 < 81) & ~((i > 14) & (j > 14))
    gen = torch.Generator().manual_seed(4)
    c0 = 0.1 + 0.02 * torch.rand((1, n, n), generator=gen, dtype=F64)
    grid = Grid((n, n), 1.0)
    a = _run(_model(grid, mask=mask, boundary="periodic"), c0, [100.0])
    shift = (5, -7)
    b = _run(_model(grid, mask=torch.roll(mask, shift, dims=(0, 1)), boundary="periodic"),
             torch.roll(c0, shift, dims=(1, 2)), [100.0])
    # the two placements sum the particle's pixels in different orders: float64 round-off (1e-16 per
    # operation) that the spinodal instability grows over the run (measured 9e-8)
    torch.testing.assert_close(b.c, torch.roll(a.c, shift, dims=(1, 2)), rtol=0, atol=1e-6)
    assert float(a.c[0][mask].mean()) == pytest.approx(float(c0[0][mask].mean()) + 0.4, abs=1e-10)
    assert bool((a.c[0][~mask] == c0[0][~mask]).all())


@pytest.mark.parametrize("masked", [False, True], ids=["spectral", "masked"])
def test_wetting_surface_profile_follows_the_linearised_closed_form(masked):
    """A 1-D solid solution (Ω = 0) held at ν = 0 (c∞ = ½) with its surfaces wetted at c_s = ½ + 0.01:
    at equilibrium μ = ln(c/(1−c)) − (κ/ρ_s kT) c'' = 0, linearised c − ½ = 0.01 cosh((x − L/2)/ℓ) /
    cosh(L/2ℓ) with ℓ² = κ c∞(1 − c∞)/(ρ_s kT). Matches within 2 % of the surface excess (second-order
    discretisation at h/ℓ = 0.25, plus the O(δ²) of the linearisation); the spectral (DST) path and the
    masked finite-difference path agree with it alike."""
    n, h, kappa = 64, 0.5, 16.0
    ell = math.sqrt(kappa * 0.25)
    length = n * h
    grid = Grid((n,), h)
    mask = torch.ones((n,), dtype=torch.bool) if masked else None
    model = _model(grid, mask=mask, boundary="wetting", omega=0.0, current=None, reservoir=0.0, kappa=kappa,
                   surface=0.51)
    state = _run(model, torch.full((1, n), 0.5, dtype=F64), [60.0])
    x = (torch.arange(n, dtype=F64) + 0.5) * h
    expected = 0.5 + 0.01 * torch.cosh((x - length / 2) / ell) / math.cosh(length / (2 * ell))
    err = float((state.c[0] - expected).abs().max())
    assert err < 0.02 * 0.01, err
    assert float(state.c[0, 0]) > 0.505  # the surface layer is there (not the uniform ½)


def test_geometry_inputs_are_validated():
    grid = Grid((8, 8), 1.0)
    with pytest.raises(InputError) as err:
        _model(grid, boundary="wetting")
    assert err.value.field == "surface_composition"
    with pytest.raises(InputError) as err:
        _model(grid, mask=torch.zeros((8, 8), dtype=torch.bool))
    assert err.value.field == "mask"
    with pytest.raises(InputError) as err:
        _model(grid, mask=torch.ones((8, 9), dtype=torch.bool))
    assert err.value.field == "mask"
    with pytest.raises(InputError) as err:
        _model(grid, mask=torch.ones((8, 8)))
    assert err.value.field == "mask"
