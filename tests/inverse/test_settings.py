"""CalibrationSettings and SynthSettings: every bad value is an InputError naming the field (issue 20's
accepted-silently values included), through the API and through the CLI (exit 2, nothing written), and
the options of `chemoscreen synth` / `calibrate` are the fields, with the flag names of ARCHITECTURE §4.1
and the README."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pytest

from inverse import CalibrationSettings, SynthSettings, calibrate, synthesize
from inverse.commands import register
from inverse.settings import MAX_KNOTS
from mechanics.errors import InputError

NAN, INF = float("nan"), float("inf")

BAD_CALIBRATION = [
    ("n_knots", 2), ("n_knots", MAX_KNOTS + 1), ("n_knots", 2000), ("n_knots", 5.0), ("n_knots", True),
    ("n_bootstrap", -1), ("n_bootstrap", 1), ("n_bootstrap", 2.5), ("n_joint", -1), ("n_joint", None),
    ("n_robust", -1), ("monotone", "yes"), ("fit_dislocations", 1), ("use_coverage", None),
    ("errors_in_variables", "median"), ("solver", "cg"), ("plane", "shell"), ("device", "tpu9"),
    ("device", 3), ("strain_psf_nm", NAN), ("strain_psf_nm", -3.0), ("composition_psf_nm", INF),
    ("composition_psf_nm", "wide"), ("min_support_px", NAN), ("min_support_px", -1.0), ("seed", -1),
    ("seed", 1.5), ("material", "LFP"),
]

BAD_SYNTH = [
    ("size_px", 4), ("size_px", 96.0), ("pixel_size_nm", NAN), ("pixel_size_nm", -20.0),
    ("pixel_size_nm", 0.0),
    ("oversample", 0), ("shape", "square"), ("law", 3), ("law", ""), ("bow_ac", (0.01,)),
    ("bow_ac", (NAN, 0.0)), ("crystal_angle_deg", NAN), ("crystal_angle_deg", INF), ("seed", -1),
    ("seed", NAN), ("composition_sigma", NAN), ("composition_sigma", -0.01), ("composition_sigma", 0.5),
    ("strain_sigma", NAN),
    ("strain_sigma", -5e-4), ("composition_psf_nm", -1.0), ("strain_psf_nm", NAN),
    ("registration_offset_nm", (1.0, NAN)), ("registration_offset_nm", 3.0),
    ("composition_pixel_size_nm", 0.0), ("composition_pixel_size_nm", NAN), ("strain_reference", "LiFePO4"),
    ("strain_offset", (0.0, 0.0)), ("strain_offset", (0.0, INF, 0.0)), ("n_dislocations", -1),
    ("burgers_nm", 0.0), ("burgers_nm", NAN), ("boundary_width_nm", 0.0), ("declared_noise_factor", NAN),
    ("declared_noise_factor", -1.0), ("stiffness_ratio", 0.0), ("stiffness_ratio", NAN), ("coverage", "no"),
    ("material", object()),
]


@pytest.mark.parametrize(("name", "value"), BAD_CALIBRATION)
def test_bad_calibration_settings_name_the_field(name, value):
    with pytest.raises(InputError) as info:
        CalibrationSettings(**{name: value})
    assert info.value.field == name


@pytest.mark.parametrize(("name", "value"), BAD_SYNTH)
def test_bad_synth_settings_name_the_field(name, value):
    with pytest.raises(InputError) as info:
        SynthSettings(**{name: value})
    assert info.value.field == name


def test_good_values_are_kept_and_tuples_normalised():
    s = SynthSettings(registration_offset_nm=[1, -2], strain_offset=np.array([0.001, 0.0, 0.0]),
                      composition_pixel_size_nm=25.0, stiffness_ratio=1.3, declared_noise_factor=0.0)
    assert s.registration_offset_nm == (1.0, -2.0) and s.strain_offset == (0.001, 0.0, 0.0)
    assert CalibrationSettings(n_knots=MAX_KNOTS, n_bootstrap=0, device="cuda:1").n_knots == MAX_KNOTS
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seed = 3


def test_keyword_overrides_are_the_settings():
    """`calibrate(images, n_knots=5, ...)` is `calibrate(images, CalibrationSettings(n_knots=5, ...))`, and
    the same for `synthesize`: one path, the same numbers."""
    images = synthesize(size_px=24, oversample=1, seed=2, n_dislocations=0)
    same = synthesize(SynthSettings(size_px=24, oversample=1, seed=2, n_dislocations=0))
    for name in ("composition", "strain_xx", "strain_yy", "strain_xy", "coverage"):
        np.testing.assert_array_equal(getattr(images, name), getattr(same, name))
    kw = {"n_knots": 5, "n_bootstrap": 2, "n_joint": 0, "fit_dislocations": False}
    by_keywords = calibrate(images, **kw)
    by_settings = calibrate(images, CalibrationSettings(**kw))
    assert by_keywords.settings == by_settings.settings == CalibrationSettings(**kw)
    assert by_keywords.to_json() == by_settings.to_json()
    # overrides apply over given settings, and are validated
    assert calibrate(images, CalibrationSettings(**kw), n_knots=4).knots_X.size == 4
    with pytest.raises(InputError, match="n_bootstrap"):
        calibrate(images, CalibrationSettings(**kw), n_bootstrap=-1)
    with pytest.raises(TypeError, match="n_knot"):
        calibrate(images, n_knot=5)
    with pytest.raises(InputError, match="settings"):
        calibrate(images, {"n_knots": 5})
    with pytest.raises(TypeError, match="sizepx"):
        synthesize(sizepx=24)


def test_law_table_with_nan_is_refused(tmp_path):
    path = tmp_path / "law.csv"
    path.write_text("X,a,c\n0,0,0\n0.5,nan,-0.01\n1,0.05,-0.02\n")
    with pytest.raises(InputError, match="law"):
        synthesize(size_px=16, oversample=1, law=str(path))
    with pytest.raises(InputError, match="law"):
        synthesize(size_px=16, oversample=1, law={"X": [0, 1], "a": [0, NAN], "c": [0, -0.02]})


# -- the command line ------------------------------------------------------------------------------------
def _parser():
    parser = argparse.ArgumentParser(prog="chemoscreen")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def _flags(command: str) -> set[str]:
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {s for a in sub.choices[command]._actions for s in a.option_strings} - {"-h", "--help"}


def test_cli_flags_are_the_documented_ones():
    """The flags of ARCHITECTURE §4.1, README and docs/inverse.md, unchanged by deriving them."""
    assert _flags("synth") == {
        "--out", "--law", "--seed", "--size", "--pixel-size-nm", "--oversample", "--shape", "--angle",
        "--composition-sigma", "--strain-sigma", "--composition-psf-nm", "--strain-psf-nm",
        "--registration-offset-nm", "--composition-pixel-size-nm", "--strain-reference", "--dislocations",
        "--burgers-nm", "--no-coverage"}
    assert _flags("calibrate") == {
        "--out", "--register", "--no-promote", "--tracking-uri", "--experiment", "--no-track", "--n-knots",
        "--monotone", "--errors-in-variables", "--bootstrap", "--joint", "--strain-psf-nm",
        "--composition-psf-nm", "--device", "--solver", "--ignore-coverage"}


def test_cli_defaults_are_the_dataclass_defaults():
    from chemoscreen.options import settings_from_args

    args = _parser().parse_args(["synth", "--out", "p.npz"])
    assert settings_from_args(SynthSettings, args) == SynthSettings()
    args = _parser().parse_args(["calibrate", "p.npz", "--out", "cal"])
    assert settings_from_args(CalibrationSettings, args) == CalibrationSettings()
    args = _parser().parse_args(["synth", "--out", "p.npz", "--size", "40", "--angle", "-10",
                                 "--registration-offset-nm", "3,-4", "--no-coverage", "--dislocations", "0"])
    assert settings_from_args(SynthSettings, args) == SynthSettings(
        size_px=40, crystal_angle_deg=-10.0, registration_offset_nm=(3.0, -4.0), coverage=False,
        n_dislocations=0)
    args = _parser().parse_args(["calibrate", "p.npz", "--out", "cal", "--bootstrap", "0", "--joint", "1",
                                 "--n-knots", "9", "--monotone", "--ignore-coverage",
                                 "--errors-in-variables", "tv"])
    assert settings_from_args(CalibrationSettings, args) == CalibrationSettings(
        n_bootstrap=0, n_joint=1, n_knots=9, monotone=True, use_coverage=False, errors_in_variables="tv")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


@pytest.mark.parametrize(("argv", "named"), [
    (["--strain-sigma", "nan"], "--strain-sigma (strain_sigma)"),
    (["--composition-sigma", "-0.1"], "--composition-sigma (composition_sigma)"),
    (["--pixel-size-nm", "nan"], "--pixel-size-nm (pixel_size_nm)"),
    (["--pixel-size-nm", "-20"], "--pixel-size-nm (pixel_size_nm)"),
    (["--angle", "nan"], "--angle (crystal_angle_deg)"),
    (["--seed", "-1"], "--seed (seed)"),
    (["--composition-psf-nm", "inf"], "--composition-psf-nm (composition_psf_nm)"),
    (["--size", "4"], "--size (size_px)"),
    (["--dislocations", "-2"], "--dislocations (n_dislocations)"),
    (["--registration-offset-nm", "nan,0"], "--registration-offset-nm (registration_offset_nm)"),
])
def test_synth_bad_values_exit_2_naming_the_option(workdir, capsys, argv, named):
    args = _parser().parse_args(["synth", "--out", "p.npz", *argv])
    assert args.handler(args) == 2
    assert f"chemoscreen synth: error: {named}: expected" in capsys.readouterr().err
    assert not (workdir / "p.npz").exists()


def test_calibrate_bad_values_exit_2_before_any_work(workdir, capsys):
    """Issue 20: `--bootstrap -1`, `--joint -1` were accepted, `--n-knots 2000` ran for minutes. Each is
    refused before the image files are read (the path below does not exist) and writes nothing."""
    for argv, named in ((["--bootstrap", "-1"], "--bootstrap (n_bootstrap)"),
                        (["--bootstrap", "1"], "--bootstrap (n_bootstrap)"),
                        (["--joint", "-1"], "--joint (n_joint)"),
                        (["--n-knots", "2000"], "--n-knots (n_knots)"),
                        (["--n-knots", "2"], "--n-knots (n_knots)"),
                        (["--strain-psf-nm", "nan"], "--strain-psf-nm (strain_psf_nm)")):
        args = _parser().parse_args(["calibrate", "missing.npz", "--out", "cal", *argv])
        assert args.handler(args) == 2
        err = capsys.readouterr().err
        assert f"chemoscreen calibrate: error: {named}: expected" in err, err
    assert sorted(p.name for p in workdir.iterdir()) == []


def test_cli_help_shows_the_dataclass_defaults(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["calibrate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--n-knots N_KNOTS" in text and "--bootstrap BOOTSTRAP" in text
    assert f"(default: {CalibrationSettings().n_bootstrap})" in text

