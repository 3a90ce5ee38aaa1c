"""chemoscreen screening: Ray sweeps of candidates through the simulator, tracked in MLflow, and ranking.

```python
import candidates, screening
space = candidates.olivine_space(metals=("Fe", "Mn", "Co"), step=0.25)
settings = screening.ScreeningSettings(grid_points=32)
table = screening.run_sweep(space, law="vegard", settings=settings)   # DataFrame, one row per candidate
outcome = screening.sweep(space, "vegard", settings, options=screening.SweepOptions(refine=2))  # SweepOutcome
```
:func:`sweep` is the one sweep path (``chemoscreen sweep``, ``chemoscreen demo`` and :func:`run_sweep`
wrap it). The command line is ``chemoscreen`` (:mod:`screening.cli`); see ``docs/screening.md``. The
MLflow names and store helpers are :mod:`chemoscreen.store`.

Names are imported on first use, so that light modules (``screening.plots``, used by the plot worker
processes) load without torch, Ray or MLflow.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "run_sweep": "screening.api", "sweep": "screening.api", "prepare_items": "screening.api",
    "resolve_law": "screening.api", "pareto_ranks": "screening.ranking",
    "rank_candidates": "screening.ranking", "scores": "screening.ranking",
    "SweepOptions": "screening.driver", "SweepOutcome": "screening.driver", "SweepItem": "screening.driver",
    "ScreeningSettings": "mechanics.screen", "ScreeningResult": "mechanics.screen",
    "ObjectiveSpec": "screening.objectives", "rank_draws": "screening.ranking",
    "charging_envelope": "screening.envelope", "EnvelopeSettings": "screening.envelope",
    "StrategySettings": "screening.strategies",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'screening' has no attribute {name!r}")
