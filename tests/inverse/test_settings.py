"""SynthSettings: every bad value is an InputError naming the field (issue 20's accepted-silently values
included), through the API and through the CLI (exit 2, nothing written), and the options of
`chemoscreen synth` are the fields, with the flag names of ARCHITECTURE §4.1 and the README."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pytest

from inverse import SynthSettings, synthesize
from inverse.commands import register
from mechanics.errors import InputError

NAN, INF = float("nan"), float("inf")

BAD_SYNTH = [
    ("size_px", 4), ("size_px", 96.0), ("pixel_size_nm", NAN), ("pixel_size_nm", -20.0),
    ("pixel_size_nm", 0.0),
    ("oversample", 0), ("shape", "square"), ("law", 3), ("law", ""), ("bow_ac", (0.01,)),
    ("bow_ac", (NAN, 0.0)), ("crystal_angle_deg", NAN), ("crystal_angle_deg", INF), ("seed", -1),
    ("seed", NAN), ("composition_sigma", NAN), ("composition_sigma", -0.01), ("strain_sigma", NAN),
    ("strain_sigma", -5e-4), ("composition_psf_nm", -1.0), ("strain_psf_nm", NAN),
    ("registration_offset_nm", (1.0, NAN)), ("registration_offset_nm", 3.0),
    ("composition_pixel_size_nm", 0.0), ("composition_pixel_size_nm", NAN), ("strain_reference", "LiFePO4"),
    ("strain_offset", (0.0, 0.0)), ("strain_offset", (0.0, INF, 0.0)), ("n_dislocations", -1),
    ("burgers_nm", 0.0), ("burgers_nm", NAN), ("boundary_width_nm", 0.0), ("declared_noise_factor", NAN),
    ("declared_noise_factor", -1.0), ("stiffness_ratio", 0.0), ("stiffness_ratio", NAN), ("coverage", "no"),
    ("material", object()),
]


@pytest.mark.parametrize(("name", "value"), BAD_SYNTH)
def test_bad_synth_settings_name_the_field(name, value):
    with pytest.raises(InputError) as info:
        SynthSettings(**{name: value})
    assert info.value.field == name


def test_good_values_are_kept_and_tuples_normalised():
    s = SynthSettings(registration_offset_nm=[1, -2], strain_offset=np.array([0.001, 0.0, 0.0]),
                      composition_pixel_size_nm=25.0, stiffness_ratio=1.3, declared_noise_factor=0.0)
    assert s.registration_offset_nm == (1.0, -2.0) and s.strain_offset == (0.001, 0.0, 0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seed = 3


def test_keyword_overrides_are_the_settings():
    """`synthesize(seed=2, ...)` is `synthesize(SynthSettings(seed=2, ...))`: one path, the same numbers."""
    images = synthesize(size_px=24, oversample=1, seed=2, n_dislocations=0)
    same = synthesize(SynthSettings(size_px=24, oversample=1, seed=2, n_dislocations=0))
    for name in ("composition", "strain_xx", "strain_yy", "strain_xy", "coverage"):
        np.testing.assert_array_equal(getattr(images, name), getattr(same, name))
    with pytest.raises(InputError, match="settings"):
        synthesize({"seed": 2})
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


def test_cli_defaults_are_the_dataclass_defaults():
    from chemoscreen.options import settings_from_args

    args = _parser().parse_args(["synth", "--out", "p.npz"])
    assert settings_from_args(SynthSettings, args) == SynthSettings()
    args = _parser().parse_args(["synth", "--out", "p.npz", "--size", "40", "--angle", "-10",
                                 "--registration-offset-nm", "3,-4", "--no-coverage", "--dislocations", "0"])
    assert settings_from_args(SynthSettings, args) == SynthSettings(
        size_px=40, crystal_angle_deg=-10.0, registration_offset_nm=(3.0, -4.0), coverage=False,
        n_dislocations=0)


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
