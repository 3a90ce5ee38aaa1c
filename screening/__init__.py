"""chemoscreen screening: Ray sweeps of candidates through the simulator, tracked in MLflow, and ranking.

```python
import candidates, screening
space = candidates.olivine_space(metals=("Fe", "Mn", "Co"), step=0.25)
table = screening.run_sweep(space, law="vegard")      # pandas.DataFrame, one row per candidate
```
The command line is ``chemoscreen`` (:mod:`screening.cli`); see ``docs/screening.md``.
"""

from screening.api import prepare_items, resolve_law, run_sweep, sweep
from screening.ranking import pareto_ranks, rank_candidates, scores

__all__ = ["pareto_ranks", "prepare_items", "rank_candidates", "resolve_law", "run_sweep", "scores", "sweep"]
