"""Synthetic image series: the truth is what the model says (charge counting, prefactor range, μ_h), the
image formation is what the format asks (a missing frame, drift that registration finds)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inverse.kinetics import register_frames
from inverse.kinetics.synth import MARGIN_PX, SeriesSynthSettings, mu_h_eV, synthesize_series
from mechanics.errors import InputError
from mechanics.parameters.lfp import lfp_params

TINY = dict(size_px=10, oversample=1, frames=5, c_rates=(10.0,), drift_px=1.5, seed=1)


@pytest.fixture(scope="module")
def series():
    return synthesize_series(**TINY)


def test_the_noise_free_frames_follow_the_galvanostatic_charge_exactly(series):
    # galvanostatic ACR moves the mean by exactly Δt·I (the k = 0 mode has no stabiliser), and averaging
    # cells to pixels keeps the mean: X̄(t) = X₀ + (C/3600)·t to round-off
    clean = series.truth["truth_composition"]
    mean = np.nanmean(clean.reshape(len(clean), -1), axis=1)
    expected = 0.05 + 10.0 / 3600.0 * series.time_s
    np.testing.assert_allclose(mean, expected, atol=1e-9)
    assert mean[-1] == pytest.approx(0.85, abs=1e-9)


def test_truth_of_the_prefactor_and_the_potential(series):
    log_k = series.truth["truth_log_k"]
    inside = np.isfinite(log_k)
    assert inside.sum() == 10 * 10 and not inside[:MARGIN_PX].any()
    # the pattern spans a factor k_range = 3 between its extremes and has mean 1 (one cell per pixel)
    assert np.nanmax(log_k) - np.nanmin(log_k) == pytest.approx(np.log(3.0), rel=1e-9)
    assert np.mean(np.exp(log_k[inside])) == pytest.approx(1.0, rel=1e-9)
    x = series.truth["truth_X"]
    mu = series.truth["truth_mu_h_eV"]
    # regular solution of the LFP reference set (Ω = 4.51 kT at 298.15 K) plus the 5 meV correction
    p = lfp_params()
    kT_eV = 8.617333262e-5 * p.temperature_K
    expected = kT_eV * np.log(x / (1 - x)) + p.omega_eV * (1 - 2 * x) + 2 * 0.005 * x * (1 - x) * (1 - 2 * x)
    np.testing.assert_allclose(mu, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mu, mu_h_eV(x, kT_eV, p.omega_eV, 0.005), rtol=1e-9)
    np.testing.assert_allclose(mu + mu[::-1], 0.0, atol=1e-12)  # odd about X = ½: the correction too


def test_image_formation_missing_frame_noise_and_drift(series):
    assert series.missing.tolist() == [False, False, True, False, False]
    assert series.composition_sigma == 0.05 and series.c_rate.shape == (5,)
    registered = register_frames(series)
    present = ~series.missing
    # the shift that moves a frame back is minus its drift, to half a pixel: the platelet is an
    # axis-aligned square and its outline is binary, so it carries the drift only to the nearest pixel
    np.testing.assert_allclose(registered.shifts_px[present], -series.truth["truth_shifts_px"][present],
                               atol=0.5)
    assert np.abs(registered.shifts_px[present]).max() >= 1.0  # it did move


@pytest.mark.parametrize("field, value", [("size_px", 4), ("frames", 2), ("c_rates", ()),
                                          ("c_rates", (1.0, 0.0)), ("composition_sigma", -0.1),
                                          ("k_range", 0.5), ("soc_start", 1.0),
                                          ("missing_frame", 0), ("pixel_size_nm", float("nan")),
                                          ("k_map", np.zeros((4, 4)))])
def test_bad_settings_name_their_field(field, value):
    with pytest.raises(InputError) as err:
        SeriesSynthSettings(**{field: value})
    assert err.value.field == field


def test_a_protocol_that_leaves_the_composition_range_is_refused():
    with pytest.raises(InputError, match="c_rates"):
        synthesize_series(**{**TINY, "c_rates": (-5.0,)})  # delithiating from X = 0.05


@pytest.mark.parametrize("c_rate, x0", [(5.0, 0.3), (-5.0, 0.7), (40.0, 0.3)])
def test_the_recorded_voltage_of_a_uniform_state_is_the_butler_volmer_closed_form(c_rate, x0):
    """At the first frame the particle is uniform (a 10⁻³ perturbation), so the galvanostatic reservoir
    potential has a closed form: ideal Butler–Volmer with α = ½ and the prefactor map's mean 1 gives
    I = −2 k̃ √(X(1−X)) sinh(η/2), and V = V₀ − μ_h(X) + η k_BT/e with η = −2 asinh(I/(2 k̃ √(X(1−X)))).
    Lithiation reads below OCV, delithiation above. Within 0.01 mV (measured 0.002 mV: the
    perturbation's second order)."""
    from mechanics import units
    from mechanics.parameters.lfp import VOLTAGE_LFP_V

    s = synthesize_series(size_px=8, oversample=1, frames=4, c_rates=(c_rate,), soc_start=x0, seed=1,
                          voltage_sigma_mV=0.0, missing_frame=None)
    p = lfp_params()
    kT = units.kT_aJ(p.temperature_K) / units.AJ_PER_EV
    rate = 2 * p.exchange_rate_A_m2 / units.ELEMENTARY_CHARGE_C * units.M_PER_NM**2 / (
        p.site_density_per_nm3 * 20.0)
    eta = -2 * math.asinh(c_rate / 3600 / (2 * rate * math.sqrt(x0 * (1 - x0))))
    expected = VOLTAGE_LFP_V - mu_h_eV(x0, kT, p.omega_eV, 5e-3) + eta * kT
    assert s.voltage_V[0] == pytest.approx(expected, abs=1e-5)
    ocv = VOLTAGE_LFP_V - mu_h_eV(x0, kT, p.omega_eV, 5e-3)
    assert (s.voltage_V[0] < ocv) == (c_rate > 0)
    assert float(s.truth["truth_voltage_zero_V"]) == VOLTAGE_LFP_V and np.isfinite(s.voltage_V).all()
