"""The screening noise stays noise: a tighter step control (more steps) must not make a run less stable.

With a bank of fields repeated by step index, the noise summed over a run grew linearly with the number
of steps, so ``composition_tol=0.004`` (about 5,000 steps for LiFePO4 at 16²) drove the composition out
of [−0.5, 1.5] where the default 0.02 ran fine. Each wrap of the bank now moves its fields on the grid,
so the sum grows as √steps.
"""

from __future__ import annotations

from mechanics.parameters.lfp import lfp_params
from mechanics.screen import ScreeningSettings, simulate_candidates


def test_a_tighter_composition_tolerance_is_not_less_stable():
    settings = ScreeningSettings(grid_points=16, composition_tol=0.004, observations=4, snapshots=0)
    (result,) = simulate_candidates([lfp_params()], settings)
    assert result.status == "FINISHED", result.reason
    assert result.metrics["steps"] > 3 * 61  # the bank wrapped many times
    assert result.metrics["phase_separation"] > 0.2  # the noise still nucleates the two phases
