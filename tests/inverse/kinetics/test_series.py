"""The operando image-series format: round trips, every violation named, missing frames, drift removal."""

from __future__ import annotations

import numpy as np
import pytest

from inverse.kinetics import load_series, register_frames, save_series, validate_series
from inverse.kinetics.series import COMPOSITION_TOLERANCE_MAX, composition_tolerance
from mechanics.errors import InputError


def _ellipse(shape, centre, radii):
    i, j = np.meshgrid(np.arange(shape[0]) + 0.5, np.arange(shape[1]) + 0.5, indexing="ij")
    return ((i - centre[0]) / radii[0]) ** 2 + ((j - centre[1]) / radii[1]) ** 2 < 1


def _movie(n_frames=6, shape=(40, 48), drift=None, seed=0):
    """A platelet filling from one end: X(r, t) = logistic front moving along columns; NaN outside."""
    rng = np.random.default_rng(seed)
    drift = np.zeros((n_frames, 2)) if drift is None else np.asarray(drift, float)
    frames = np.full((n_frames, *shape), np.nan)
    for t in range(n_frames):
        centre = (shape[0] / 2 + drift[t, 0], shape[1] / 2 + drift[t, 1])
        inside = _ellipse(shape, centre, (14.3, 19.7))
        j = np.arange(shape[1])[None, :] + 0.5 - drift[t, 1]
        front = 6 + 6 * t
        x = 1 / (1 + np.exp((j - front) / 2.0)) + 0.01 * rng.standard_normal(shape)
        frames[t] = np.where(inside, np.clip(x, 0, 1), np.nan)
    return {"composition": frames, "time_s": 30.0 * np.arange(n_frames), "pixel_size_nm": 50.0}


def test_round_trip_npz_and_h5_keep_every_field(tmp_path):
    raw = _movie()
    raw.update(c_rate=np.full(6, 0.5), voltage_V=np.linspace(3.4, 3.45, 6), composition_sigma=0.05,
               temperature_K=300.0, truth_log_k=np.zeros((40, 48)))
    series = validate_series(raw)
    for name in ("s.npz", "s.h5"):
        back = load_series(save_series(series, tmp_path / name))
        np.testing.assert_array_equal(back.composition, series.composition)
        np.testing.assert_array_equal(back.mask, series.mask)
        np.testing.assert_array_equal(back.c_rate, series.c_rate)
        assert back.current_A_per_m2 is None and back.temperature_K == 300.0 and back.thickness_nm == 20.0
        assert back.composition_sigma == 0.05 and "truth_log_k" in back.truth
        assert len(back.sha256) == 64 and back.source.endswith(name)


@pytest.mark.parametrize("change, field", [
    (lambda r: r.update(time_s=np.array([0.0, 30, 30, 60, 90, 120])), "time_s"),
    (lambda r: r.update(time_s=np.array([0.0, 30, np.nan, 60, 90, 120])), "time_s"),
    (lambda r: r.update(time_s=np.arange(5.0)), "time_s"),
    (lambda r: r.update(composition=r["composition"][:2], time_s=r["time_s"][:2]), "composition"),
    (lambda r: r.update(composition=np.full((6, 40, 48), np.nan)), "mask"),
    (lambda r: r.update(mask=np.ones((40, 47), bool)), "mask"),
    (lambda r: r["composition"].__setitem__((0, 20, 24), np.inf), "composition"),
    (lambda r: r["composition"].__setitem__((0, 20, 24), 1.3), "composition"),
    (lambda r: r.update(pixel_size_nm=-1.0), "pixel_size_nm"),
    (lambda r: r.pop("pixel_size_nm"), "pixel_size_nm"),
    (lambda r: r.update(c_rate=np.ones(5)), "c_rate"),
    (lambda r: r.update(c_rate=np.ones(6), current_A_per_m2=np.ones(6)), "current_A_per_m2"),
    (lambda r: r.update(composition_sigma=np.ones((3, 3))), "composition_sigma"),
    (lambda r: r.update(temperature_K=0.0), "temperature_K"),
])
def test_every_violation_names_its_field(change, field):
    raw = _movie()
    change(raw)
    with pytest.raises(InputError) as err:
        validate_series(raw)
    assert err.value.field == field


def test_a_large_sigma_does_not_wave_through_values_that_are_not_fractions():
    assert composition_tolerance(1.0) == COMPOSITION_TOLERANCE_MAX
    raw = _movie()
    raw["composition"][1, 20, 24] = 1.0 + 2 * COMPOSITION_TOLERANCE_MAX
    raw["composition_sigma"] = 1.0
    with pytest.raises(InputError, match="composition"):
        validate_series(raw)
    raw["composition"][1, 20, 24] = 1.0 + 0.5 * COMPOSITION_TOLERANCE_MAX  # within the cap: noise
    validate_series(raw)


def test_a_missing_frame_is_kept_and_flagged():
    raw = _movie()
    raw["composition"][3] = np.nan
    series = validate_series(raw)
    assert series.missing.tolist() == [False, False, False, True, False, False]
    mean = series.mean_composition()
    assert np.isnan(mean[3]) and np.all(np.diff(mean[[0, 1, 2, 4, 5]]) > 0)  # the particle fills


@pytest.mark.parametrize("name, payload", [("empty.npz", b""),
                                           ("junk.npz", b"PK\x03\x04" + bytes(range(200))),
                                           ("junk.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 40)])
def test_unreadable_files_are_input_errors(tmp_path, name, payload):
    (tmp_path / name).write_bytes(payload)
    with pytest.raises(InputError) as err:
        load_series(tmp_path / name)
    assert err.value.field == "series"


def test_drift_is_found_to_a_fraction_of_a_pixel_and_removed():
    drift = np.array([[0, 0], [0.4, -0.3], [1.3, 0.8], [2.1, 1.6], [2.6, 2.7], [3.4, 3.2]])
    drifting = validate_series(_movie(drift=drift))
    still = validate_series(_movie())
    registered = register_frames(drifting)
    # the shift that moves each frame back is minus its drift; the outline is a binary, pixel-sampled
    # ellipse (~100 rim pixels), which fixes its centroid to about 0.1 px
    np.testing.assert_allclose(registered.shifts_px, -drift, atol=0.15)
    # after registration the particle-averaged filling follows the still movie's
    np.testing.assert_allclose(registered.series.mean_composition(), still.mean_composition(), atol=0.02)
    raw_mean = np.nanmean(np.abs(drifting.composition[5] - still.composition[5]))
    reg_mean = np.nanmean(np.abs(registered.series.composition[5] - still.composition[5]))
    assert reg_mean < 0.3 * raw_mean
