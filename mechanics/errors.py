"""The project's one exception for bad input.

Every package raises :class:`InputError` (a ``ValueError``) when a user-supplied value is wrong; the
message names the field and the expected form. The command line maps it to exit code 2.
"""

from __future__ import annotations


class InputError(ValueError):
    """A user-supplied value is malformed. ``field`` names it, ``expected`` says what was wanted."""

    def __init__(self, field: str, expected: str, got: object = None) -> None:
        self.field = field
        self.expected = expected
        self.got = got
        message = f"{field}: expected {expected}"
        if got is not None:
            text = repr(got)
            message += f", got {text if len(text) <= 200 else text[:197] + '...'}"
        super().__init__(message)
