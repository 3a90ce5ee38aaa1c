"""chemoscreen.options: argparse options derived from a frozen settings dataclass (one copy of the
defaults), and the dataclass built back from the parsed arguments."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from chemoscreen.options import add_options, option_dest, settings_from_args
from mechanics.errors import InputError


def _pair(text: str) -> tuple[float, float]:
    a, b = text.split(",")
    return float(a), float(b)


@dataclass(frozen=True)
class Toy:
    count: int = field(default=3, metadata={"help": "how many"})
    width_nm: float = 2.5
    label: str = field(default="a", metadata={"choices": ("a", "b"), "help": "which"})
    limit_nm: float | None = field(default=None, metadata={"flag": "--limit", "metavar": "NM"})
    verbose: bool = False
    keep: bool = field(default=True, metadata={"flag": "--drop", "help": "drop it"})
    offset: tuple[float, float] = field(default=(1.0, -1.0), metadata={"type": _pair})
    secret: object = None

    def __post_init__(self):
        if self.count < 0:
            raise InputError("count", "an integer >= 0", self.count)
        if self.width_nm <= 0:
            raise InputError("width_nm/count", "a width > 0", self.width_nm)


def _parse(argv, **kw):
    parser = argparse.ArgumentParser(prog="toy")
    parser.add_argument("--out")
    flags = add_options(parser, Toy, exclude=("secret",), **kw)
    return parser, parser.parse_args(argv), flags


def test_options_default_to_the_dataclass_and_parse_typed_values():
    _, args, flags = _parse([])
    assert flags == {"count": "--count", "width_nm": "--width-nm", "label": "--label", "limit_nm": "--limit",
                     "verbose": "--verbose", "keep": "--drop", "offset": "--offset"}
    assert settings_from_args(Toy, args) == Toy()
    assert all(getattr(args, option_dest(Toy, name)) is None for name in flags)
    _, args, _ = _parse(["--count", "5", "--width-nm", "0.5", "--label", "b", "--limit", "7", "--verbose",
                         "--drop", "--offset", "2,3", "--out", "x"])
    assert settings_from_args(Toy, args) == Toy(count=5, width_nm=0.5, label="b", limit_nm=7.0, verbose=True,
                                                keep=False, offset=(2.0, 3.0))
    assert args.out == "x"  # other arguments are untouched


def test_base_overrides_sit_between_the_defaults_and_the_options_given():
    _, args, _ = _parse(["--count", "9"])
    assert settings_from_args(Toy, args, count=4, width_nm=1.0) == Toy(count=9, width_nm=1.0)


def test_invalid_values_name_the_option_and_the_field():
    _, args, _ = _parse(["--count", "-1"])
    with pytest.raises(InputError) as info:
        settings_from_args(Toy, args)
    assert info.value.field == "--count (count)" and info.value.got == -1
    # a field the options do not know (here a combined one) is re-raised as it is
    _, args, _ = _parse(["--width-nm", "0"])
    with pytest.raises(InputError) as info:
        settings_from_args(Toy, args)
    assert info.value.field == "width_nm/count"


def test_usage_errors_come_from_argparse(capsys):
    parser, _, _ = _parse([])
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--label", "c"])
    assert info.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_help_shows_defaults_metavars_and_flag_overrides(capsys):
    parser, _, flags = _parse([], flag_names={"count": "--n"})
    assert flags["count"] == "--n"
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--n N how many (default: 3)" in text
    assert "--width-nm WIDTH_NM (default: 2.5)" in text
    assert "--limit NM (default: none)" in text and "--offset OFFSET (default: 1,-1)" in text
    assert "--drop drop it" in text and "--secret" not in text


def test_a_field_without_an_argparse_form_is_a_programming_error():
    parser = argparse.ArgumentParser()
    with pytest.raises(TypeError, match="secret"):
        add_options(parser, Toy)
    with pytest.raises(TypeError, match="nope"):
        add_options(argparse.ArgumentParser(), Toy, exclude=("secret", "nope"))


def test_argument_groups_work_like_parsers():
    parser = argparse.ArgumentParser()
    add_options(parser.add_argument_group("toy"), Toy, exclude=("secret",))
    assert settings_from_args(Toy, parser.parse_args(["--count", "2"])) == Toy(count=2)


@dataclass(frozen=True)
class Required:
    size: int
    name: str = "x"


def test_a_required_field_comes_from_the_command_or_the_user():
    parser = argparse.ArgumentParser()
    add_options(parser, Required)
    assert settings_from_args(Required, parser.parse_args([]), size=4) == Required(size=4)
    assert settings_from_args(Required, parser.parse_args(["--size", "5"]), size=4) == Required(size=5)
