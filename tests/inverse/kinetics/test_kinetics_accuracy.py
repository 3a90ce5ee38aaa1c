"""Accuracy of ``learn_kinetics`` on synthetic series made on a 2× finer grid than the fit (σ_X = 0.05,
PSF, drift, a missing frame), against the issue's targets: k₀(X) within 15 % and μ_h(X) within 3 meV on
X in [0.1, 0.9], log k(r) Pearson r ≥ 0.9 away from a 2-pixel rim, the right rate law for a BV and a CIET
truth, held-out frames within 1.5 σ_X rms; and the per-pixel fit without the PDE misses k(r) (r < 0.7).

Slow (1–20 min per truth on the 2-core machine, depending on its load). The measured values are
printed (``pytest -s``). Three targets are not met on either truth, and the rate law is not recovered on
either (docs/kinetics.md "Accuracy"): those tests are strict expected failures, so a fix that meets them
turns them into failures to be promoted."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from inverse.kinetics import learn_kinetics, synthesize_series
from inverse.kinetics.baseline import independent_pixel_log_k

# an auto fit with Laplace takes up to 20 min on a loaded 2-core machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

SERIES = dict(size_px=24, oversample=2, frames=16, c_rates=(2.0, 20.0), composition_sigma=0.05, seed=5)
FIT = dict(rate_law="auto", max_iter=20, lambdas=(30.0, 3.0), steps_per_interval=16)
RANGE = (0.1, 0.9)


def _inner(a, b):
    m = np.isfinite(a) & np.isfinite(b)
    return ndimage.binary_erosion(m, iterations=2)


def _pearson(a, b):
    inner = _inner(a, b)
    return float(np.corrcoef(a[inner], b[inner])[0, 1])


@pytest.fixture(scope="module", params=["butler-volmer", "ciet"])
def case(request):
    series = synthesize_series(rate_law=request.param, **SERIES)
    fit = learn_kinetics(series, **FIT)
    t = series.truth
    x = fit.X
    ref = (x >= RANGE[0]) & (x <= RANGE[1])
    if fit.mu_absolute:  # the recorded voltage pins μ_h against Li/Li⁺
        mu_true = t["truth_mu_h_eV"] - float(t["truth_voltage_zero_V"])
    else:
        mu_true = t["truth_mu_h_eV"] - t["truth_mu_h_eV"][ref].mean()
    measured = {
        "truth": request.param, "chosen": fit.rate_law,
        "scores": {s.rate_law: round(s.heldout_loglik, 1) for s in fit.scores},
        "k0_max_rel_err": float(np.max(np.abs(fit.k0_A_per_m2[ref] / t["truth_k0_A_per_m2"][ref] - 1))),
        "mu_max_err_meV": float(1e3 * np.max(np.abs(fit.mu_h_eV[ref] - mu_true[ref]))),
        "pearson_log_k": _pearson(fit.log_k[0], t["truth_log_k"]),
        "pearson_independent": _pearson(independent_pixel_log_k(series), t["truth_log_k"]),
        "heldout_rms_over_sigma": fit.fit["heldout_rms_over_sigma"],
        "mu_absolute": fit.mu_absolute,
        "heldout_voltage_rms_mV": fit.fit["voltage"]["heldout_rms_mV"],
    }
    print(f"\nlearn_kinetics on a {request.param} truth: {measured}")
    return measured


NOT_MET = ("not met by the current fit (measured 2026-12-07 17:40 UTC, latent states, the recorded voltage, "
           "synthesis and fit on the corrected ACR step: BV truth k₀ off by up to 62 %, absolute μ_h by "
           "18.9 meV, log k r = 0.33; CIET truth 46 %, 19.6 meV, r = 0.55)")


@pytest.mark.xfail(strict=True, reason=NOT_MET)
def test_k0_within_15_percent(case):
    assert case["k0_max_rel_err"] <= 0.15


@pytest.mark.xfail(strict=True, reason=NOT_MET)
def test_mu_h_within_3_meV(case):
    assert case["mu_max_err_meV"] <= 3.0


@pytest.mark.xfail(strict=True, reason=NOT_MET)
def test_log_k_map_correlates_with_the_truth(case):
    assert case["pearson_log_k"] >= 0.9


@pytest.mark.xfail(strict=True, reason=(
    "measured 2026-12-07 17:40 UTC, synthesis and fit on the corrected ACR step: the held-out "
    "log-likelihood prefers the wrong law on both truths (BV truth: CIET 2000.2 vs BV 1964.8; CIET truth: "
    "BV 1994.0 vs CIET 1961.1; with two correctors in the fit 1996.9 vs 1986.1 and 1971.6 vs 1968.6). "
    "Before the correctors the BV truth chose BV by 2028.2 vs 2010.7 while synthesis and fit shared the "
    "plain step's interface lag: the margin is below the remaining model mismatch"))
def test_the_right_rate_law_is_chosen(case):
    assert case["chosen"] == case["truth"]


def test_heldout_frames_within_1p5_sigma(case):
    assert case["heldout_rms_over_sigma"] <= 1.5


def test_independent_pixel_fit_misses_the_map(case):
    # without the PDE a pixel's change is set by the phase boundary, not by its own prefactor
    assert case["pearson_independent"] < 0.7
