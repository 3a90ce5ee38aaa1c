"""The sweep's simulation flags come from ScreeningSettings itself: one default, one validation."""

from __future__ import annotations

import dataclasses

import pytest

from mechanics.errors import InputError
from mechanics.screen import ScreeningSettings
from screening.cli import build_parser, settings_from_args


def test_every_settings_field_is_a_sweep_flag_and_parses_to_the_settings():
    parser = build_parser()
    args = parser.parse_args(["sweep", "--grid-points", "16", "--fidelity", "particle", "--c-rate", "5"])
    assert settings_from_args(args) == ScreeningSettings(grid_points=16, fidelity="particle", c_rate=5.0)
    assert settings_from_args(parser.parse_args(["sweep"])) == ScreeningSettings()
    help_text = parser._subparsers._group_actions[0].choices["sweep"].format_help()
    for f in dataclasses.fields(ScreeningSettings):
        assert "--" + f.name.replace("_", "-") in help_text


def test_a_refused_value_names_its_flag():
    args = build_parser().parse_args(["sweep", "--grid-points", "4"])
    with pytest.raises(InputError, match=r"--grid-points \(grid_points\)"):
        settings_from_args(args)
