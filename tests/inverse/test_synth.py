"""Synthetic ground truth: the Volterra field against the displacement closed form, law tables, and
the stress-free limit of the forward model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from inverse import synthesize
from inverse.dislocations import edge_dislocation_strain
from inverse.synth import law_table
from mechanics.errors import InputError


def test_edge_dislocation_strain_matches_displacement_derivatives():
    """The strain built from Hirth & Lothe's stresses (eq. 3-43) equals the symmetric gradient of their
    displacement field (eq. 3-45), differentiated numerically: an independent closed form.

    u_x = b/2π [θ + xy/(2(1−ν)r²)],  u_y = −b/2π [(1−2ν)/(4(1−ν)) ln r² + (x²−y²)/(4(1−ν)r²)].
    Central differences with h = 1e-4 nm at r ≥ 3 nm: truncation ~ h²/r² ≪ the 1e-6 relative tolerance.
    """
    b, nu, h = 0.8, 0.3, 1e-4

    def u(x, y):
        r2 = x * x + y * y
        ux = b / (2 * np.pi) * (np.arctan2(y, x) + x * y / (2 * (1 - nu) * r2))
        uy = -b / (2 * np.pi) * ((1 - 2 * nu) / (4 * (1 - nu)) * np.log(r2)
                                 + (x * x - y * y) / (4 * (1 - nu) * r2))
        return ux, uy

    rng = np.random.default_rng(0)
    pts = rng.uniform(-20, 20, size=(50, 2))
    pts = pts[np.hypot(*pts.T) > 3]
    x, y = pts[:, 0], pts[:, 1]
    dux_dx = (u(x + h, y)[0] - u(x - h, y)[0]) / (2 * h)
    duy_dy = (u(x, y + h)[1] - u(x, y - h)[1]) / (2 * h)
    shear = 0.5 * ((u(x, y + h)[0] - u(x, y - h)[0]) / (2 * h) + (u(x + h, y)[1] - u(x - h, y)[1]) / (2 * h))
    # grid frame (axis 0, axis 1) = (x, y) with the Burgers vector along axis 0
    eps = edge_dislocation_strain(x, y, b, np.array([1.0, 0.0]), nu=nu, core_nm=0.0)
    scale = b / (2 * np.pi * 3)
    np.testing.assert_allclose(eps[:, 0, 0], dux_dx, atol=1e-6 * scale)
    np.testing.assert_allclose(eps[:, 1, 1], duy_dy, atol=1e-6 * scale)
    np.testing.assert_allclose(eps[:, 0, 1], shear, atol=1e-6 * scale)
    # rotating the Burgers vector rotates the field: b along axis 1 at (x, y) ≡ b along axis 0 at (y, −x)
    rot = edge_dislocation_strain(x, y, b, np.array([0.0, 1.0]), nu=nu, core_nm=0.0)
    ref = edge_dislocation_strain(y, -x, b, np.array([1.0, 0.0]), nu=nu, core_nm=0.0)
    np.testing.assert_allclose(rot[:, 1, 1], ref[:, 0, 0], atol=1e-12)
    np.testing.assert_allclose(rot[:, 0, 0], ref[:, 1, 1], atol=1e-12)


def test_noise_offset_and_registration_truth_are_as_declared():
    """measured − clean − offset is the added noise: its std matches strain_sigma (tolerance 5 %: about
    8000 samples give a 1 % standard error); the offset is the declared crystal-frame tensor; the
    composition noise matches composition_sigma (with no PSF and no offset the composition image and
    truth_composition average the same 2×2 sub-pixels)."""
    from inverse.images import crystal_to_grid

    images = synthesize(size_px=64, oversample=2, seed=7, n_dislocations=0, strain_psf_nm=0.0,
                        composition_psf_nm=0.0, registration_offset_nm=(0.0, 0.0), strain_sigma=1e-3,
                        composition_sigma=0.05, strain_offset=(0.002, -0.001, 0.0005), crystal_angle_deg=40.0)
    t = images.truth
    off = crystal_to_grid(np.array([[0.002, 0.0005], [0.0005, -0.001]]), 40.0)
    m = images.mask
    noise = np.concatenate([
        (images.strain_xx - t["truth_strain_xx"] - off[1, 1])[m],
        (images.strain_yy - t["truth_strain_yy"] - off[0, 0])[m],
        (images.strain_xy - t["truth_strain_xy"] - off[0, 1])[m],
    ])
    assert abs(noise.mean()) < 5 * 1e-3 / np.sqrt(noise.size)
    assert noise.std() == pytest.approx(1e-3, rel=0.05)
    np.testing.assert_allclose(t["truth_strain_offset"], [0.002, -0.001, 0.0005])
    x_noise = (images.composition - t["truth_composition"])[m]
    assert x_noise.std() == pytest.approx(0.05, rel=0.05)


def test_law_tables_and_their_errors(tmp_path):
    misfit = (0.05, -0.02)
    x, v = law_table("bowed", misfit, (0.01, -0.004))
    assert v[50, 0] == pytest.approx(0.025 + 0.0025) and v[-1, 1] == pytest.approx(-0.02)
    path = tmp_path / "law.json"
    path.write_text(json.dumps({"X": [0, 0.5, 1], "a": [0, 0.03, 0.05], "c": [0, -0.01, -0.02]}))
    x, v = law_table(str(path), misfit, (0, 0))
    assert v[50, 0] == pytest.approx(0.03)
    csv = tmp_path / "law.csv"
    csv.write_text("X,a,c\n0,0,0\n1,0.04,-0.01\n")
    x, v = law_table(str(csv), misfit, (0, 0))
    assert v[-1, 0] == pytest.approx(0.04)
    for bad in ({"X": [0.1, 1], "a": [0, 1], "c": [0, 1]}, {"X": [0, 1], "a": [0.01, 1], "c": [0, 1]},
                {"X": [0, 1]}, "nonexistent.json"):
        with pytest.raises(InputError, match="law"):
            law_table(bad, misfit, (0, 0))
