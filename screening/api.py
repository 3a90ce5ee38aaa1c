"""The Python facade: ``screening.run_sweep(space, law=...)`` → one row per candidate.

```python
import candidates, screening
space = candidates.olivine_space(metals=("Fe", "Mn"), step=0.5)
table = screening.run_sweep(space, law="vegard")   # or law=cal.law, or "models:/lfp-chemomech@champion"
table[["formula", "score", "pareto_rank", "peak_tensile_stress_MPa"]]
```
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pandas as pd

from mechanics.errors import InputError
from screening import tracking
from screening.sweep import (
    DESCRIPTOR_METRICS,
    SweepItem,
    SweepOptions,
    SweepOutcome,
    execute_sweep,
    model_label,
)

VEGARD = "vegard"


def descriptors_of(props) -> dict[str, float]:
    """The static metrics of ARCHITECTURE.md §4.4 from a :class:`candidates.CandidateProperties` (in %)."""
    values = {
        "misfit_a_pct": 100.0 * props.misfit[0],
        "misfit_b_pct": 100.0 * props.misfit[1],
        "misfit_c_pct": 100.0 * props.misfit[2],
        "volume_change_pct": 100.0 * props.volume_change,
        "coherency_B_min_GPa": props.coherency_B_min_GPa,
        "voltage_V": props.voltage_V,
        "capacity_mAh_g": props.capacity_mAh_g,
        "specific_energy_Wh_kg": props.specific_energy_Wh_kg,
    }
    assert set(values) == set(DESCRIPTOR_METRICS)
    return {k: float(v) for k, v in values.items()}


def prepare_items(space: Iterable, source: str = "literature", *, progress: bool = False) -> list[SweepItem]:
    """Parameters and static descriptors of every candidate (``candidates.properties``), ready to sweep."""
    from tqdm.auto import tqdm

    import candidates

    space = list(space)
    if not space:
        raise InputError("space", "at least one candidate", space)
    items = []
    for candidate in tqdm(space, desc=f"properties ({source})", unit="cand", disable=not progress):
        props = candidates.properties(candidate, source)
        items.append(SweepItem(label=candidate.id, formula=candidate.formula, fractions=candidate.fractions,
                               params=props.params, descriptors=descriptors_of(props), source=source))
    return items


def resolve_law(law, tracking_uri: str | None = None, client=None):
    """Turn ``law`` into ``(module, model_uri)``: the torch module the actors evaluate and its version label.

    ``law`` is a torch module (label: a content hash), ``"vegard"`` (module None: the simulator then
    uses Vegard's law ε⁰(X) = X·ε⁰(1) with each candidate's own misfit), or an MLflow model URI
    (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/...``) which is pinned to one version and
    loaded with ``inverse.tracking.load_law``.
    """
    if law is None or (isinstance(law, str) and law.lower() == VEGARD):
        return None, VEGARD
    if isinstance(law, str):
        uri = tracking.resolve_tracking_uri(tracking_uri)
        if client is None:
            tracking.probe_tracking_uri(uri)
            client = tracking.open_store(uri)
        pinned = tracking.resolve_model(client, law)
        import mlflow

        from inverse.tracking import load_law

        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        return load_law(pinned), pinned
    if hasattr(law, "state_dict"):
        return law, model_label(law)
    raise InputError("law", "a torch module, 'vegard' or an MLflow model URI (models:/NAME@ALIAS)", law)


def default_settings():
    from mechanics.screen import ScreeningSettings

    return ScreeningSettings()


def sweep(
    space: Iterable,
    law=tracking.DEFAULT_MODEL_URI,
    settings=None,
    metric_fn: Callable | None = None,
    *,
    source: str = "literature",
    options: SweepOptions | None = None,
    progress: bool = False,
) -> SweepOutcome:
    """Like :func:`run_sweep` but returns the whole :class:`SweepOutcome` (run ids, counts, timings)."""
    options = options or SweepOptions(progress=progress)
    uri = tracking.resolve_tracking_uri(options.tracking_uri)
    tracking.probe_tracking_uri(uri)
    client = tracking.open_store(uri)
    module, model_uri = resolve_law(law, uri, client)
    settings = settings if settings is not None else default_settings()
    items = prepare_items(space, source, progress=options.progress)
    return execute_sweep(items, settings, law=module, model_uri=model_uri, options=options,
                         metric_fn=metric_fn, client=client)


def run_sweep(
    space: Iterable,
    law=tracking.DEFAULT_MODEL_URI,
    settings=None,
    metric_fn: Callable | None = None,
    *,
    source: str = "literature",
    experiment: str = tracking.SCREENING_EXPERIMENT,
    tracking_uri: str | None = None,
    address: str | None = None,
    refine: int = 0,
    num_cpus: int | None = None,
    gpus_per_actor: float = 1.0,
    batch_size: int | None = None,
    artifacts: bool = True,
    progress: bool = False,
) -> pd.DataFrame:
    """Screen ``space`` (``list[candidates.Candidate]``) and return the ranked table, one row per candidate.

    Every candidate becomes an MLflow child run of one parent run in ``experiment``; a repeated call skips
    candidates that already finished. ``law``: a torch module (e.g. ``inverse.calibrate(...).law``),
    ``"vegard"`` or a model URI (default: the ``champion`` of ``lfp-chemomech``). ``settings``:
    :class:`mechanics.screen.ScreeningSettings` (default: its defaults). ``metric_fn(result) -> dict``
    adds metrics computed from each :class:`mechanics.screen.ScreeningResult` (it runs in the Ray actor).
    ``refine``: rerun the best K on the free-surface particle (columns ``particle_*``).

    Columns: ``rank``, ``candidate_id``, ``formula``, ``score``, ``pareto_rank``, the metrics of
    ARCHITECTURE.md §4.4, the user's metrics, ``status``, ``failure_reason`` and ``run_id``.
    """
    options = SweepOptions(experiment=experiment, tracking_uri=tracking_uri, address=address, refine=refine,
                           num_cpus=num_cpus, gpus_per_actor=gpus_per_actor, batch_size=batch_size,
                           artifacts=artifacts, progress=progress, space=f"python API ({source})")
    return sweep(space, law, settings, metric_fn, source=source, options=options).table
