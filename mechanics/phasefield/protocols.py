"""Time loops composed from an adaptive ``step_fn`` and observers.

An observer is any callable ``observer(state) -> None`` (it closes over its own record); the loops only
decide when to call the stepper and the observers. No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from mechanics.errors import InputError, SolverError
from mechanics.phasefield.cahn_hilliard import PhaseFieldState


def run_to_times(
    step_fn: Callable,
    state: PhaseFieldState,
    output_times: Sequence[float],
    observers: Sequence[Callable] = (),
    *,
    max_steps: int = 10_000_000,
    on_step: Callable | None = None,
    stop: Callable | None = None,
    sync_every: int = 1,
) -> PhaseFieldState:
    """Step every element until it reaches each output time in turn (the step is capped so outputs are
    hit exactly) and call the observers there (also at t = 0 when 0 is an output time).

    Elements that reached the current output time wait (dt cap 0) for the others. ``on_step(state)`` is
    called after every step (progress bars live at the caller's edge). ``stop(state) -> (*batch,) bool``
    freezes the elements it flags (e.g. failed ones): they count as done from then on.
    ``sync_every`` K: the loop asks the device whether every element is done only every K steps (one host
    synchronisation per K steps; elements already done take zero-length steps in between), so a GPU
    queue never drains between steps.

    Raises:
      SolverError: more than ``max_steps`` steps before an output time (the steppers stalled).
    """
    if not isinstance(sync_every, int) or sync_every < 1:
        raise InputError("sync_every", "an integer ≥ 1", sync_every)
    steps = 0
    for t_out in output_times:
        target = torch.as_tensor(t_out, dtype=state.time.dtype, device=state.time.device)
        while True:
            remaining = target - state.time
            # relative tolerance: time sums of float steps land on the target up to round-off
            done = remaining <= 1e-9 * max(1.0, abs(float(t_out)))
            if stop is not None:
                done = done | stop(state)
            if steps % sync_every == 0 and bool(done.all()):
                break
            cap = torch.where(done, torch.zeros_like(remaining), remaining)
            state = step_fn(state, cap)
            steps += 1
            if on_step is not None:
                on_step(state)
            if steps >= max_steps:
                raise SolverError("run_to_times", f"more than {max_steps} steps before t = {t_out}")
        for observe in observers:
            observe(state)
    return state


def output_schedule(t_end: float, per_decade: Sequence[float] = (1.0, 2.0, 5.0)) -> list[float]:
    """0 and the 1-2-5 sequence (1, 2, 5, 10, 20, ...) below t_end, then t_end."""
    times = [0.0]
    decade = 1.0
    while decade < t_end:
        for m in per_decade:
            t = m * decade
            if t < t_end:
                times.append(t)
        decade *= 10.0
    times.append(float(t_end))
    return times
