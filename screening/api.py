"""The Python facade and THE sweep path: ``screening.sweep`` and ``screening.run_sweep``.

```python
import candidates, screening
space = candidates.olivine_space(metals=("Fe", "Mn"), step=0.5)
table = screening.run_sweep(space, law="vegard")   # or law=cal.law, or "models:/lfp-chemomech@champion"
table[["formula", "score", "pareto_rank", "peak_tensile_stress_MPa"]]

outcome = screening.sweep(space, "vegard", screening.ScreeningSettings(grid_points=32),
                          options=screening.SweepOptions(num_cpus=2, refine=1))
outcome.sweep_id, outcome.parent_run_id, outcome.table
```
:func:`sweep` is the one function that runs a sweep: ``chemoscreen sweep``, ``chemoscreen demo`` and
:func:`run_sweep` only build its settings and options and present what it returns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import pandas as pd

from chemoscreen import store
from mechanics.errors import InputError
from screening import tracking
from screening.cluster import probe_address, resolve_address
from screening.driver import (
    DESCRIPTOR_METRICS,
    SweepItem,
    SweepOptions,
    SweepOutcome,
    execute_sweep,
    model_label,
)

VEGARD = "vegard"
EXPECTED_LAW = "a torch module, 'vegard' or an MLflow model URI (models:/NAME@ALIAS)"


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
    """Parameters and static descriptors of every candidate (``candidates.properties``), ready to sweep.

    Args:
        space: ``candidates.Candidate`` objects.
        source: where end-member properties come from (``candidates.SOURCES``).
        progress: show a progress bar.

    Returns:
        One :class:`SweepItem` per candidate, in order.

    Raises:
        InputError: an empty ``space`` or an unknown ``source``.
    """
    from tqdm.auto import tqdm

    import candidates

    space = list(space)
    if not space:
        raise InputError("space", "at least one candidate", space)
    items = []
    for candidate in tqdm(space, desc=f"properties ({source})", unit="cand",
                          disable=None if progress else True):
        props = candidates.properties(candidate, source)
        items.append(SweepItem(composition_id=candidate.id, formula=candidate.formula,
                               fractions=candidate.fractions, params=props.params,
                               descriptors=descriptors_of(props), source=source,
                               uncertainties=dict(props.uncertainties)))
    return items


def _check_law(law) -> None:
    if not (law is None or isinstance(law, str) or hasattr(law, "state_dict")):
        raise InputError("law", EXPECTED_LAW, law)


def resolve_law(law, tracking_uri: str | None = None, client=None, *, allow_pickle: bool = False):
    """Turn ``law`` into ``(module, model_uri)``: the torch module the actors evaluate and its version label.

    Args:
        law: a torch module (label: a content hash), ``"vegard"`` or None (module None: the simulator
            then uses Vegard's law ε⁰(X) = X·ε⁰(1) with each candidate's own misfit), or an MLflow model
            URI (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/...``), which is pinned to one
            version and loaded with ``inverse.tracking.load_law``.
        tracking_uri: the store holding the model (default: :func:`chemoscreen.store.resolve_tracking_uri`).
        client: an open ``MlflowClient`` on that store (default: probe and open it).
        allow_pickle: also load a version stored with pickle by an older chemoscreen (runs code from the
            store; see :func:`chemoscreen.models.load_model`).

    Returns:
        ``(module or None, model_uri)``; ``model_uri`` enters every candidate's ``candidate_id``.

    Raises:
        InputError: (field ``law``) another kind of value; (field ``--model``) no such model version.
    """
    _check_law(law)
    if law is None or (isinstance(law, str) and law.lower() == VEGARD):
        return None, VEGARD
    if isinstance(law, str):
        uri = store.resolve_tracking_uri(tracking_uri)
        if client is None:
            store.probe_tracking_uri(uri)
            client = store.open_store(uri)
        pinned = tracking.resolve_model(client, law)
        import mlflow

        from inverse.tracking import load_law

        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        return load_law(pinned, allow_pickle=allow_pickle), pinned
    return law, model_label(law)


def law_samples(module, model_uri: str, tracking_uri: str):
    """The law with its posterior samples (:class:`screening.uncertainty.LawSamples`) for ``--samples``.

    Raises:
        InputError: (``--samples``) the model version carries no posterior samples, or the law is a
            plain module (pass a ``LawSamples`` to draw it).
    """
    from screening.uncertainty import LawSamples

    if isinstance(module, LawSamples):
        return module
    if not model_uri.startswith(("models:/", "runs:/")):
        raise InputError("--samples", "a registered model version with posterior samples, a "
                         "screening.uncertainty.LawSamples, or --law vegard", model_uri)
    from chemoscreen.models import load_model

    stored = load_model(model_uri, tracking_uri=tracking_uri)
    if not stored.samples:
        raise InputError("--samples", "a model version that carries posterior samples (calibrate registers "
                         "the bootstrap replicates)", model_uri)
    return LawSamples(stored.model, stored.samples)


def default_settings():
    """:class:`mechanics.screen.ScreeningSettings` with its defaults."""
    from mechanics.screen import ScreeningSettings

    return ScreeningSettings()


def sweep(
    space: Iterable,
    law=store.DEFAULT_MODEL_URI,
    settings=None,
    metric_fn: Callable | None = None,
    *,
    source: str = "literature",
    options: SweepOptions | None = None,
    strategy=None,
    kinetics_model: str | None = None,
) -> SweepOutcome:
    """Run (or resume) the sweep of ``space``: the one path behind the CLI, the demo and :func:`run_sweep`.

    In order: ``options`` were validated when built (:class:`SweepOptions`); the law's kind, the
    space and the source are checked; the tracking store and the Ray address are probed (nothing is
    created yet, so bad input costs no work); then the store is opened, the law resolved (a model URI
    is pinned to one version), the candidates' properties computed and the sweep executed
    (:func:`screening.driver.execute_sweep`).

    Args:
        space: ``candidates.Candidate`` objects (e.g. ``candidates.olivine_space(...)``).
        law: see :func:`resolve_law`; default the ``champion`` of ``lfp-chemomech``.
        settings: :class:`mechanics.screen.ScreeningSettings` (``screening.ScreeningSettings``;
            default: its defaults).
        metric_fn: ``metric_fn(result) -> dict`` of extra metrics from each
            :class:`mechanics.screen.ScreeningResult` (runs in the Ray actor).
        source: where end-member properties come from (``"literature"`` or ``"chgnet"``).
        options: how to run it (default ``SweepOptions()``): experiment, store, Ray, actors, refine.
        strategy: None simulates every candidate of ``space``; a
            :class:`screening.strategies.StrategySettings` makes ``space`` the pool of an
            active-learning sweep that simulates ``strategy.budget`` of them, chosen in batches
            (:mod:`screening.active`).
        kinetics_model: a ``learn-kinetics`` model version (``models:/lfp-kinetics@champion``): LFP-like
            candidates take its Ω and k₀ (rule: :func:`inverse.kinetics.law.with_learned_kinetics`); the
            pinned version joins the model label, so it enters every ``candidate_id``.

    Returns:
        The :class:`SweepOutcome`: sweep id, parent run id, the store used (absolute), the pinned
        model URI, counts, timings and the ranked table.

    Raises:
        InputError: bad input, named by its CLI field (``--tracking-uri``, ``--address``, ``--model``,
            ``--source``, ``--samples`` (a law without posterior samples), ...), before any simulation.
    """
    import candidates

    options = SweepOptions() if options is None else options
    if not isinstance(options, SweepOptions):
        raise InputError("options", "a screening.SweepOptions", options)
    from screening.strategies import StrategySettings

    if strategy is not None and not isinstance(strategy, StrategySettings):
        raise InputError("strategy", "a screening.StrategySettings or None", strategy)
    if strategy is not None and options.refine:
        raise InputError("--refine", "0 with --strategy (refine a ranked sweep with a plain sweep)",
                         options.refine)
    if strategy is not None and kinetics_model is not None:
        raise InputError("--kinetics-model", "no learned kinetics with --strategy (an active sweep uses the "
                         "literature kinetics)", kinetics_model)
    _check_law(law)
    if source not in candidates.SOURCES:
        raise InputError("--source", f"one of {', '.join(candidates.SOURCES)}", source)
    space = list(space)
    if not space:
        raise InputError("space", "at least one candidate", space)
    settings = default_settings() if settings is None else settings

    uri = store.absolute_tracking_uri(store.resolve_tracking_uri(options.tracking_uri))
    store.probe_tracking_uri(uri)
    address = resolve_address(options.address)
    probe_address(address)
    options = dataclasses.replace(options, tracking_uri=uri, address=address)

    client = store.open_store(uri)
    module, model_uri = resolve_law(law, uri, client, allow_pickle=options.allow_pickle_model)
    if options.samples > 1 and module is not None:
        module = law_samples(module, model_uri, uri)
    if strategy is not None:
        from screening.active import run_active

        outcome = run_active(space, settings, law=module, model_uri=model_uri, options=options,
                             strategy=strategy, source=source, client=client, metric_fn=metric_fn)
        log_report(client, outcome)
        return outcome
    items = prepare_items(space, source, progress=options.progress)
    if kinetics_model is not None:
        items, kinetics_uri = _with_kinetics(items, kinetics_model, uri, client)
        model_uri = f"{model_uri}+{kinetics_uri}"
    outcome = execute_sweep(items, settings, law=module, model_uri=model_uri, options=options,
                            metric_fn=metric_fn, client=client)
    log_report(client, outcome)
    return outcome


def _with_kinetics(items: list[SweepItem], model_uri: str, tracking_uri: str, client):
    """The items with learned kinetics where the rule applies, and the pinned kinetics model URI."""
    from inverse.kinetics.law import load_kinetics, with_learned_kinetics

    try:
        pinned = tracking.resolve_model(client, model_uri)
        model = load_kinetics(pinned, tracking_uri=tracking_uri)
    except InputError as exc:
        raise InputError("--kinetics-model", exc.expected, exc.got) from None
    return [dataclasses.replace(it, params=with_learned_kinetics(it.params, it.fractions, model))
            for it in items], pinned


def log_report(client, outcome: SweepOutcome) -> str | None:
    """Attach the sweep's HTML report (:mod:`screening.report`) to its parent run as ``report/report.html``
    and share its ranking view in the MLflow UI.

    The sweep's results are already safe in the store: a report that cannot be written is a warning
    (and the parent run's tag ``report_error``), not a failed sweep.

    Returns:
        Where the logged report lies (:func:`screening.report.report_artifact`), or None.
    """
    import tempfile
    import warnings
    from pathlib import Path

    from screening.report import report_artifact, report_for_sweep

    if outcome.table.empty:
        return None
    try:
        with tempfile.TemporaryDirectory(prefix="chemoscreen-report-") as tmp:
            report_for_sweep(client, outcome.tracking_uri, outcome.experiment_id, outcome.parent_run_id,
                             Path(tmp, "report.html"), table=outcome.table)
        return report_artifact(client, outcome.parent_run_id)
    except Exception as exc:  # any failure of the report leaves the sweep intact
        reason = f"{type(exc).__name__}: {exc}"[:500]
        warnings.warn(f"sweep {outcome.sweep_id}: the report was not written ({reason}); "
                      "`chemoscreen report` writes it later", stacklevel=2)
        client.set_tag(outcome.parent_run_id, "report_error", reason)
        return None


def run_sweep(
    space: Iterable,
    law=store.DEFAULT_MODEL_URI,
    settings=None,
    metric_fn: Callable | None = None,
    *,
    source: str = "literature",
    experiment: str = store.SCREENING_EXPERIMENT,
    tracking_uri: str | None = None,
    address: str | None = None,
    refine: int = 0,
    num_cpus: int | None = None,
    gpus_per_actor: float = 1.0,
    batch_size: int | None = None,
    artifacts: bool = True,
    progress: bool = False,
    objectives=None,
    samples: int = 1,
    strategy: str | None = None,
    budget: int = 64,
    proposal_batch: int = 8,
    proposal_seed: int = 0,
) -> pd.DataFrame:
    """Screen ``space`` (``list[candidates.Candidate]``) and return the ranked table, one row per candidate.

    A thin wrapper of :func:`sweep`: the keyword arguments become a :class:`SweepOptions`. Every
    candidate becomes an MLflow child run of one parent run in ``experiment``; a repeated call skips
    candidates that already finished.

    Args:
        space: ``candidates.Candidate`` objects.
        law: a torch module (e.g. ``inverse.calibrate(...).law``), ``"vegard"`` or a model URI (default:
            the ``champion`` of ``lfp-chemomech``).
        settings: :class:`mechanics.screen.ScreeningSettings` (default: its defaults).
        metric_fn: ``metric_fn(result) -> dict`` adds metrics computed from each
            :class:`mechanics.screen.ScreeningResult` (it runs in the Ray actor).
        source: where end-member properties come from.
        experiment: MLflow experiment name.
        tracking_uri: MLflow store (None: ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``).
        address: Ray address (None: ``$RAY_ADDRESS``, else a local Ray).
        num_cpus: CPUs of the embedded local Ray (None: all).
        gpus_per_actor: GPU share of one actor when the cluster has GPUs.
        batch_size: candidates per actor call (None: one call per actor).
        artifacts: log the snapshot and voltage PNGs.
        progress: show progress bars.
        refine: rerun the best K on the free-surface particle (columns ``particle_*``).
        objectives: what the candidates are ranked by (:class:`screening.objectives.ObjectiveSpec`;
            default: its defaults).
        samples: joint draws of the law and the parameters per candidate (:mod:`screening.uncertainty`).
        strategy: None simulates all of ``space``; ``"grid"``, ``"random"`` or ``"bayes"`` simulate
            ``budget`` candidates of it, ``proposal_batch`` at a time (:mod:`screening.active`).
        budget: simulations in all (with ``strategy``).
        proposal_batch: candidates proposed per iteration (with ``strategy``).
        proposal_seed: seed of the proposals (with ``strategy``).

    Returns:
        Columns ``rank``, ``candidate_id``, ``formula``, ``score``, ``pareto_rank``, the metrics of
        ARCHITECTURE.md §4.4, the user's metrics, ``status``, ``failure_reason`` and ``run_id``.
    """
    options = SweepOptions(experiment=experiment, tracking_uri=tracking_uri, address=address, refine=refine,
                           num_cpus=num_cpus, gpus_per_actor=gpus_per_actor, batch_size=batch_size,
                           artifacts=artifacts, progress=progress, space=f"python API ({source})",
                           objectives=objectives, samples=samples)
    chosen = None
    if strategy is not None:
        from screening.strategies import StrategySettings

        chosen = StrategySettings(strategy, budget, proposal_batch, proposal_seed)
    return sweep(space, law, settings, metric_fn, source=source, options=options, strategy=chosen).table
