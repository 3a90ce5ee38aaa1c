"""The project's two exceptions: bad input and a solver that failed.

Every package raises :class:`InputError` (a ``ValueError``) when a user-supplied value is wrong; the
message names the field and the expected form. The command line maps it to exit code 2.
:class:`SolverError` (a ``RuntimeError``) says that a numerical method did not converge on valid input
(e.g. conjugate gradients reaching their iteration cap); its message is one line naming the solver,
and the command line reports it with exit code 1.
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


class SolverError(RuntimeError):
    """A numerical solver did not converge (or broke down) on valid input.

    Args:
      solver: the solver's name, e.g. ``"PlateletPCG"``; it starts the message.
      detail: one line: what was not reached and how far the solver got.
    """

    def __init__(self, solver: str, detail: str) -> None:
        self.solver = solver
        self.detail = detail
        super().__init__(f"{solver}: {detail}")
