"""Heavier accuracy checks (``-m slow``): several seeds and crystal angles at 128², a composition map on
its own grid, and stated noise levels that are off by 20 %."""

from __future__ import annotations

import numpy as np
import pytest

from inverse import calibrate, synthesize

pytestmark = pytest.mark.slow


def check(images, cal, slope_rel=0.02, law_abs=1.5e-3):
    """Slopes against the least-squares Vegard slopes of the true law (the misfit for a Vegard truth)."""
    x = cal.knots_X
    t = images.truth
    truth = np.stack([np.interp(x, t["truth_law_X"], t[f"truth_law_{ax}"]) for ax in ("a", "c")])
    slopes = truth @ (x / np.sum(x**2))
    assert cal.vegard.slope_a == pytest.approx(slopes[0], rel=slope_rel)
    assert cal.vegard.slope_c == pytest.approx(slopes[1], rel=slope_rel)
    use = (x >= 0.1 - 1e-9) & (x <= 0.9 + 1e-9) & cal.identifiability.constrained
    assert np.abs(cal.values - truth)[:, use].max() < law_abs


@pytest.mark.parametrize("seed, angle", [(1, 25.0), (2, -60.0), (3, 80.0), (6, 10.0)])
def test_accuracy_across_seeds_and_angles_at_128(seed, angle):
    """Issue targets (2 %, 1.5e-3) on 128² sets made on 256² grids, four geometries and crystal angles."""
    images = synthesize(size_px=128, seed=seed, crystal_angle_deg=angle, pixel_size_nm=15.0)
    check(images, calibrate(images, n_bootstrap=0))


def test_bowed_law_on_its_own_composition_grid():
    """A bowed law (max deviation from Vegard 2e-3 on a, 1e-3 on c), composition on a 25 nm grid
    against 20 nm strain pixels: the deviation is resolved within the law tolerance."""
    images = synthesize(size_px=128, seed=4, law="bowed", composition_pixel_size_nm=25.0, pixel_size_nm=20.0)
    cal = calibrate(images, n_bootstrap=0)
    check(images, cal)
    assert cal.vegard.max_deviation > 1e-3


def test_misstated_noise_levels():
    """The file states σ 20 % higher than the noise actually added: the law stays within the targets."""
    images = synthesize(size_px=128, seed=5, declared_noise_factor=1.2)
    check(images, calibrate(images, n_bootstrap=0))
