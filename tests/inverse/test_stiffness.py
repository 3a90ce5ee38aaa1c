"""Stiffness-contrast fit (inverse.stiffness): recovery of the FePO4 stiffness ratio r and of the law on
synthetic sets made with C(X) = X·C_LFP + (1 − X)·r·C_FP, behaviour on uniform-stiffness data, and
input validation.

Measured on 96² sets (seeds 1–6, σ_X = 0.03, σ_ε = 5e-4, 10 nm PSFs, registration offset, unknown offset,
no dislocations, partial-coverage rim; the command is in docs/inverse.md "Stiffness contrast"):
  r = 1.3 → 1.279 1.253 1.336 1.370 1.198 1.269;  r = 1.0 → 0.971 0.962 1.028 1.066 0.921 0.972.
The Laplace σ_r is 0.01–0.04 (3 × 3600 strain values), but the seed-to-seed spread is ~0.06 and the
errors of r = 1.3 and r = 1.0 data of the same seed are nearly equal (differences 0.28–0.31): the error is
a per-particle model bias (denoised X, PSF, area averaging on a finer grid), not noise.
"""

from __future__ import annotations

import numpy as np
import pytest

from inverse import synthesize
from inverse.stiffness import fit_stiffness_ratio
from mechanics.errors import InputError

_SET = dict(size_px=96, oversample=2, seed=4, crystal_angle_deg=25.0, composition_sigma=0.03,
            strain_sigma=5e-4, strain_reference="unknown", n_dislocations=0)


@pytest.fixture(scope="module")
def fits():
    out = {}
    for ratio in (1.3, 1.0, None):
        images = synthesize(stiffness_ratio=ratio, **_SET)
        out[ratio] = (images, fit_stiffness_ratio(images))
    return out


def test_ratio_is_recovered_and_tracks_the_truth(fits):
    """|r̂ − r| ≤ 0.15: the largest error over seeds 1–6 was 0.10 (seed 5), this seed's 0.070. The
    difference r̂(1.3) − r̂(1.0) on the same particle removes the shared bias: 0.30 ± 0.05 (measured
    0.277–0.308 over seeds 1–6). A fit that ignored the contrast (r̂ stuck at r0 = 1) fails both."""
    r13, r10 = fits[1.3][1], fits[1.0][1]
    assert abs(r13.ratio - 1.3) <= 0.15
    assert abs(r10.ratio - 1.0) <= 0.15
    assert abs((r13.ratio - r10.ratio) - 0.3) <= 0.05
    for fit in (r13, r10):
        assert fit.converged
        assert 0.005 < fit.ratio_std < 0.1  # Laplace σ: finite, and far below the contrast itself


def test_vegard_slopes_within_two_percent(fits):
    """The law fitted jointly with r keeps its Vegard slopes within 2 % of the truth (this seed:
    +0.3 %/−0.5 % (a/c) for r = 1.3 data; over seeds 1–5 at most 1.4 %)."""
    for ratio in (1.3, 1.0):
        images, fit = fits[ratio]
        truth = np.array([images.truth["truth_law_a"][-1], images.truth["truth_law_c"][-1]])
        np.testing.assert_allclose(fit.vegard, truth, rtol=0.02)
        assert fit.values[:, 0].tolist() == [0.0, 0.0]


def test_uniform_stiffness_data_is_outside_the_family(fits):
    """Data made with the uniform LFP stiffness: no r reproduces it (at X = 0 the model has r·C_FP, whose
    anisotropy differs from C_LFP's: C_aa 170 vs 112 GPa, C_cc 132 vs 162 GPa). The fit returns r near 1
    (0.84–1.11 over seeds 1–4) and a worse χ² than the in-family r = 1.0 data with the same noise
    realisation (same seed and random stream: paired; measured 1.219 vs 1.179 here, 1.28–1.40 vs
    1.22–1.28 for seeds 1–3)."""
    uniform, in_family = fits[None][1], fits[1.0][1]
    assert "truth_stiffness_ratio" not in fits[None][0].truth
    assert 0.8 < uniform.ratio < 1.25
    assert uniform.chi2_reduced > in_family.chi2_reduced + 0.02


def test_synthesize_with_contrast_changes_the_strain_and_records_the_ratio():
    """Same seed with and without contrast: same composition and noise stream, different strain (the
    contrast moves the strain by ~1e-4, above the 1e-6 solver tolerance)."""
    kw = dict(size_px=32, seed=2, n_dislocations=0)
    plain, contrast = synthesize(**kw), synthesize(stiffness_ratio=1.0, **kw)
    np.testing.assert_array_equal(plain.composition, contrast.composition)
    diff = np.nanmax(np.abs(plain.truth["truth_strain_xx"] - contrast.truth["truth_strain_xx"]))
    assert diff > 1e-5
    assert float(contrast.truth["truth_stiffness_ratio"]) == 1.0


@pytest.mark.parametrize("kwargs, field", [
    (dict(n_knots=2), "n_knots"),
    (dict(knots=[0.0, 0.6, 0.5, 1.0]), "knots"),
    (dict(r0=-1.0), "r0"),
    (dict(n_iter=0), "n_iter"),
    (dict(law_values=np.zeros((2, 5))), "law_values"),
    (dict(x=np.zeros((5, 5))), "x"),
    (dict(dislocations=np.zeros(3)), "dislocations"),
    (dict(plane="bogus"), "plane"),
])
def test_bad_input_names_the_field(kwargs, field):
    images = synthesize(size_px=16, seed=0, n_dislocations=0)
    with pytest.raises(InputError) as err:
        fit_stiffness_ratio(images, **kwargs)
    assert err.value.field == field


def test_synthesize_rejects_a_bad_ratio():
    with pytest.raises(InputError) as err:
        synthesize(size_px=16, stiffness_ratio=0.0)
    assert err.value.field == "stiffness_ratio"
