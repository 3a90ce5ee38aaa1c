"""Command-line options derived from a frozen settings dataclass, so the defaults exist once.

Each field of the dataclass becomes one option of an ``argparse`` parser (or argument group), read from
the field's ``metadata``::

    n_bootstrap: int = field(default=64, metadata={"help": "block-bootstrap replicates",
                                                   "flag": "--bootstrap"})

===========  ======================================================================================
key          meaning
===========  ======================================================================================
``help``     the option's help text; `` (default: …)`` is appended from the field's default
``flag``     the option's name when it is not ``--field-name``; for a bool that defaults to True, the
             flag that turns it off (default ``--no-field-name``)
``type``     the argparse ``type`` callable, for a field that is not ``int``, ``float``, ``str`` (or
             one of them ``| None``), e.g. a parser of ``DY,DX`` pairs
``choices``  allowed values, given to argparse (the dataclass still validates them)
``metavar``  the value's name in the help (default: the flag's name in capitals)
===========  ======================================================================================

A bool that defaults to False becomes a ``store_true`` flag, one that defaults to True a
``store_false`` flag. Options that are not given parse to None, so :func:`settings_from_args` builds the
dataclass from its own defaults, then the ``base`` overrides of the command, then what the user typed;
the dataclass's ``__post_init__`` validates the result. An ``InputError`` it raises for a field is
re-raised naming the option too (``--bootstrap (n_bootstrap): expected …``).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing

from mechanics.errors import InputError

_SCALARS = (int, float, str)


def option_dest(settings_class: type, name: str) -> str:
    """The ``argparse`` destination of field ``name``: qualified by the class, so that a command's other
    arguments (``--out``, ``--seed`` of another settings class, ...) never collide with it."""
    return f"{settings_class.__name__}.{name}"


def _flags_dest(settings_class: type) -> str:
    return f"{settings_class.__name__}.flags"


def _scalar_type(hint) -> type | None:
    """int, float or str for ``T`` or ``T | None``; None when the field needs a ``type`` in metadata."""
    if hint in _SCALARS:
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and args[0] in _SCALARS:
            return args[0]
    return None


def _default_text(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(_default_text(v) for v in value)
    return str(value)


def add_options(parser_or_group, settings_class: type, *, exclude=(), flag_names=None) -> dict[str, str]:
    """Add one option per field of ``settings_class`` to an argparse parser or argument group.

    Args:
        parser_or_group: an ``argparse.ArgumentParser`` or an argument group of one.
        settings_class: a dataclass whose fields carry ``metadata`` (see the module docstring).
        exclude: names of fields that get no option (set from Python or by the command itself).
        flag_names: ``{field: "--flag"}`` overriding the metadata's ``flag`` for this command.

    Returns:
        ``{field: flag}`` of the options added.

    Raises:
        TypeError: a field's type has no argparse form and its metadata gives no ``type``.
    """
    flag_names = dict(flag_names or {})
    unknown = (set(exclude) | set(flag_names)) - {f.name for f in dataclasses.fields(settings_class)}
    if unknown:
        raise TypeError(f"{settings_class.__name__} has no fields {sorted(unknown)}")
    hints = typing.get_type_hints(settings_class)
    added = {}
    for f in dataclasses.fields(settings_class):
        if f.name in exclude:
            continue
        meta = f.metadata
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:  # a required field: the command passes it as ``base`` or the user gives it
            default = dataclasses.MISSING
        dest = option_dest(settings_class, f.name)
        help_text = meta.get("help", "")
        if hints[f.name] is bool:
            on = default is True  # the flag turns a True default off, anything else on
            flag = flag_names.get(f.name) or meta.get("flag") or (
                f"--no-{f.name.replace('_', '-')}" if on else f"--{f.name.replace('_', '-')}")
            parser_or_group.add_argument(flag, dest=dest, action="store_false" if on else "store_true",
                                         default=None, help=help_text)
        else:
            flag = flag_names.get(f.name) or meta.get("flag") or f"--{f.name.replace('_', '-')}"
            kind = meta.get("type") or _scalar_type(hints[f.name])
            if kind is None:
                raise TypeError(f"{settings_class.__name__}.{f.name}: give metadata 'type' (a parser of the "
                                f"option's text) for type {hints[f.name]}")
            extra = {"choices": meta["choices"]} if "choices" in meta else {}
            metavar = meta.get("metavar") or (None if extra else flag.lstrip("-").replace("-", "_").upper())
            if default is not dataclasses.MISSING:
                help_text = f"{help_text} (default: {_default_text(default)})".lstrip()
            parser_or_group.add_argument(flag, dest=dest, type=kind, default=None, metavar=metavar,
                                         help=help_text, **extra)
        added[f.name] = flag
    parser_or_group.set_defaults(**{_flags_dest(settings_class): added})
    return added


def settings_from_args(settings_class: type, args: argparse.Namespace, **base):
    """The settings of a parsed command line.

    Args:
        settings_class: the dataclass the options were added from (:func:`add_options`).
        args: the parsed namespace.
        **base: the command's own values, applied over the dataclass defaults and under the options the
            user gave.

    Returns:
        ``settings_class(**values)``, validated by its ``__post_init__``.

    Raises:
        InputError: a value is invalid; the field is named with its option when it has one.
    """
    values = dict(base)
    for f in dataclasses.fields(settings_class):
        value = getattr(args, option_dest(settings_class, f.name), None)
        if value is not None:
            values[f.name] = value
    try:
        return settings_class(**values)
    except InputError as exc:
        flag = getattr(args, _flags_dest(settings_class), {}).get(exc.field)
        if flag is None:
            raise
        raise InputError(f"{flag} ({exc.field})", exc.expected, exc.got) from None
