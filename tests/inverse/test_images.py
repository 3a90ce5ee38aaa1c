"""Image-set formats, validation errors that name the field, frames, and registration."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from inverse import load_images, save_images, synthesize
from inverse.images import as_mapping, crystal_to_grid, grid_to_crystal, image_to_grid
from inverse.registration import align_composition
from mechanics.errors import InputError


@pytest.fixture(scope="module")
def small():
    return synthesize(size_px=32, oversample=1, seed=3, n_dislocations=0)


@pytest.mark.parametrize("suffix", [".npz", ".h5", ".tif"])
def test_round_trip(tmp_path, small, suffix):
    path = save_images(small, tmp_path / f"set{suffix}")
    back = load_images(path)
    tol = 1e-6 if suffix == ".tif" else 0.0  # TIFF pages are float32
    for name in ("composition", "strain_xx", "strain_yy", "strain_xy"):
        np.testing.assert_allclose(getattr(back, name), getattr(small, name), rtol=tol, atol=1e-9)
    assert np.array_equal(back.mask, small.mask)
    assert small.coverage is not None  # synth writes the pixel coverage of its particle
    np.testing.assert_allclose(back.coverage, small.coverage, rtol=tol)
    assert back.pixel_size_nm == small.pixel_size_nm and back.crystal_angle_deg == small.crystal_angle_deg
    assert back.strain_reference == small.strain_reference
    assert len(back.sha256) == 64 and back.source == str(path)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp files left


def test_tiff_with_composition_on_its_own_grid(tmp_path):
    images = synthesize(size_px=32, oversample=1, seed=1, composition_pixel_size_nm=30.0, n_dislocations=0)
    assert images.composition.shape != images.shape
    back = load_images(save_images(images, tmp_path / "own.tif"))
    assert back.composition.shape == images.composition.shape
    assert back.composition_pixel_size_nm == 30.0


def _raw(images):
    return {k: v for k, v in as_mapping(images).items() if not k.startswith("truth_")}


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda d: d.pop("strain_xy"), "strain_xy"),
        (lambda d: d.update(strain_yy=np.zeros((5, 5))), "strain_yy"),
        (lambda d: d.update(pixel_size_nm=0.0), "pixel_size_nm"),
        (lambda d: d.update(pixel_size_nm=np.ones(3)), "pixel_size_nm"),
        (lambda d: d.update(composition=d["composition"] + 0.5), "composition"),
        (lambda d: d.update(mask=np.zeros_like(d["mask"])), "mask"),
        (lambda d: d.update(strain_reference="LiFePO4-ish"), "strain_reference"),
        (lambda d: d.update(strain_sigma=-1.0), "strain_sigma"),
        (lambda d: d.update(composition=np.zeros((7, 7))), "composition"),
        (lambda d: d.update(coverage=1.5 * d["coverage"]), "coverage"),
        (lambda d: d.update(coverage=np.where(d["mask"], 0.0, 1.0)), "coverage"),
        (lambda d: d.update(coverage=d["coverage"][:-1]), "coverage"),
        # ±inf is corrupt data, never a missing pixel (issue 20: +inf X was read as outside the particle)
        (lambda d: d.update(composition=_with(d["composition"], ~d["mask"], np.inf)), "composition"),
        (lambda d: d.update(composition=_with(d["composition"], d["mask"], -np.inf)), "composition"),
        (lambda d: d.update(strain_xx=_with(d["strain_xx"], ~d["mask"], np.inf)), "strain_xx"),
        (lambda d: d.update(composition_sigma=np.where(d["mask"], 0.03, np.inf)), "composition_sigma"),
        # a file's own σ cannot widen the accepted X range without bound (σ <= 0.1: X in [-0.5, 1.5])
        (lambda d: d.update(composition_sigma=1.0), "composition_sigma"),
        (lambda d: d.update(composition_sigma=np.where(d["mask"], 0.5, 0.03)), "composition_sigma"),
        (lambda d: d.update(composition_sigma=0.1, composition=_with(d["composition"], d["mask"], 1.6)),
         "composition"),
        (lambda d: d.update(mask=_first_pixels(d["mask"], 1)), "mask"),
        (lambda d: d.update(mask=_first_pixels(d["mask"], 8)), "mask"),
    ],
)
def test_validation_names_the_field(tmp_path, small, change, field):
    data = _raw(small)
    change(data)
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: np.asarray(v) for k, v in data.items()})
    with pytest.raises(InputError) as info:
        load_images(path)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: expected")


def _with(field, where, value):
    """A copy of ``field`` with ``value`` at the first pixel of ``where``."""
    out = np.array(field, dtype=float)
    out[tuple(np.argwhere(where)[0])] = value
    return out


def _first_pixels(mask, n):
    """A mask of the ``n`` pixels of ``mask`` nearest its centre (a compact block inside the particle)."""
    pixels = np.argwhere(mask)
    order = np.argsort(np.sum((pixels - pixels.mean(axis=0)) ** 2, axis=1), kind="stable")
    out = np.zeros_like(mask)
    out[tuple(pixels[order[:n]].T)] = True
    return out


def test_noise_tolerance_is_five_sigma_within_its_cap(tmp_path, small):
    """X outside [0, 1] passes within 5σ of the file's σ (at least 0.05) and not beyond."""
    from inverse.images import MAX_COMPOSITION_SIGMA, validate

    data = _raw(small)
    for sigma, inside, outside in ((0.01, 1.049, 1.051), (0.04, 1.199, 1.201),
                                   (MAX_COMPOSITION_SIGMA, 1.499, 1.501)):
        ok = validate({**data, "composition_sigma": sigma,
                       "composition": _with(data["composition"], data["mask"], inside)})
        assert np.nanmax(ok.composition) == inside
        with pytest.raises(InputError, match="composition"):
            validate({**data, "composition_sigma": sigma,
                      "composition": _with(data["composition"], data["mask"], outside)})
    # the smallest particle is accepted, and the fit runs on it (one pixel left the normal equations singular)
    from inverse import calibrate
    from inverse.images import MIN_PARTICLE_PIXELS

    tiny = validate({**data, "mask": _first_pixels(data["mask"], MIN_PARTICLE_PIXELS)})
    assert np.isfinite(calibrate(tiny, n_bootstrap=0, n_joint=0).values).all()


@pytest.mark.parametrize("damage", ["empty", "random", "truncated", "bit-flip"])
def test_damaged_npz_names_the_file_and_the_damage(tmp_path, small, damage):
    good = save_images(small, tmp_path / "good.npz").read_bytes()
    rng = np.random.default_rng(1)
    if damage == "empty":
        content, said = b"", "empty file"
    elif damage == "random":
        content, said = rng.bytes(4096), "not a zip archive"
    elif damage == "truncated":
        content, said = good[: len(good) // 2], "truncated or corrupt"
    else:  # one bit in the middle of the composition array's compressed data
        offset = good.index(b"composition.npy") + 200
        content = good[:offset] + bytes([good[offset] ^ 0x10]) + good[offset + 1:]
        said = "truncated or corrupt"
    path = tmp_path / "damaged.npz"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        load_images(path)
    assert info.value.field == "images"
    assert str(path) in str(info.value) and said in str(info.value)
    assert "pickle" not in str(info.value)


def test_pickled_objects_are_refused(tmp_path, small):
    data = _raw(small)
    data["strain_reference"] = np.array([{"evil": 1}], dtype=object)
    path = tmp_path / "pickle.npz"
    np.savez(path, **data)
    with pytest.raises(InputError, match="pickle"):
        load_images(path)


def test_unknown_suffix_and_missing_sidecar(tmp_path, small):
    (tmp_path / "x.png").write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match="images"):
        load_images(tmp_path / "x.png")
    path = save_images(small, tmp_path / "s.tif")
    path.with_suffix(".json").unlink()
    with pytest.raises(InputError, match="sidecar"):
        load_images(path)


def test_crystal_frame_rotation():
    """θ = 90°: crystal a lies along image +y, so ε_aa = ε_yy, ε_cc = ε_xx; rotations are inverse."""
    exx, eyy, exy = np.array(0.01), np.array(-0.02), np.array(0.003)
    crystal = grid_to_crystal(image_to_grid(exx, eyy, exy), 90.0)
    assert crystal[0, 0] == pytest.approx(-0.02) and crystal[1, 1] == pytest.approx(0.01)
    assert abs(crystal[0, 1]) == pytest.approx(0.003)
    # θ = 30°: ε_aa = ε_xx cos² + ε_yy sin² + 2 ε_xy sin cos (strain along a = (cos θ, sin θ))
    t = np.deg2rad(30.0)
    crystal = grid_to_crystal(image_to_grid(exx, eyy, exy), 30.0)
    expected = 0.01 * np.cos(t) ** 2 - 0.02 * np.sin(t) ** 2 + 0.006 * np.sin(t) * np.cos(t)
    assert crystal[0, 0] == pytest.approx(expected)
    rng = np.random.default_rng(0)
    t2 = rng.normal(size=(4, 2, 2))
    t2 = t2 + np.swapaxes(t2, -1, -2)
    np.testing.assert_allclose(crystal_to_grid(grid_to_crystal(t2, 17.0), 17.0), t2, atol=1e-14)


@pytest.mark.parametrize("comp_pixel", [None, 27.0])
def test_registration_recovers_the_offset(comp_pixel):
    """Composition displaced by (14, −9) nm (0.7, −0.45 px), optionally on its own 27 nm grid: the
    phase-correlation + refinement shift is within 0.15 px (the masks are pixelated at both pitches)."""
    images = synthesize(size_px=64, oversample=1, seed=2, n_dislocations=0,
                        registration_offset_nm=(14.0, -9.0), composition_pixel_size_nm=comp_pixel)
    reg = align_composition(images)
    np.testing.assert_allclose(reg.shift_px, images.truth["truth_shift_px"], atol=0.15)
    assert reg.resampled == (comp_pixel is not None)
    assert np.isfinite(reg.composition[images.mask]).all()
    # an image set whose composition does not overlap the particle is refused
    empty = dataclasses.replace(images, composition=np.full_like(images.composition, np.nan))
    with pytest.raises(InputError, match="composition"):
        align_composition(empty)


def test_json_sidecar_scalars(tmp_path, small):
    path = save_images(small, tmp_path / "t.tiff")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["pixel_size_nm"] == small.pixel_size_nm and "strain_xx" in meta["channels"]
