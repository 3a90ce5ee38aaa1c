"""The sweep driver: candidates → Ray actor pool → MLflow runs, exactly once per candidate.

Flow of one sweep:

1. Open the MLflow store and the experiment (driver only, before any worker exists).
2. Compute every candidate's ``candidate_id`` (composition, property source, settings, model version)
   and the ``sweep_id``; create the parent run or reopen the one an interrupted driver left.
3. Read the parent's child runs: FINISHED candidates are skipped; a leftover RUNNING run (driver killed
   while logging it) or a FAILED run is completed in place, so a candidate never gets a second run.
4. Start actors (Ray restarts a killed actor: ``max_restarts``). A batch whose actor died is resubmitted
   to a live actor; the dead one gets no work until a ping shows it restarted, because an actor whose
   node is gone may wait for resources forever. Submit batches with at most two in flight per live
   actor (back-pressure through ``ray.wait``); the law goes to the object store once (``ray.put``)
   (:mod:`screening.pool`).
5. Each result is logged by a background thread while the actors keep simulating
   (:mod:`screening.runlog`).
6. Optionally rerun the top K on the free-surface particle (``fidelity="particle"``) as further child runs
   tagged ``fidelity=particle`` and ``refines=<candidate_id of the periodic run>``.
7. Rank the sweep, log ``score``/``pareto_rank`` on the children whose values changed and the ranking
   table + Pareto plot on the parent, and mark the parent FINISHED.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import pandas as pd

from chemoscreen import store
from mechanics.errors import InputError
from screening import ids, tracking
from screening.actors import CandidateResult
from screening.cluster import ray_session, resolve_address
from screening.objectives import ObjectiveSpec
from screening.pool import ActorPool, simulate
from screening.results import (  # noqa: F401  (the metric names are part of this module's interface)
    CONTRACT_METRICS,
    DESCRIPTOR_METRICS,
    RANK_METRICS,
    SIMULATION_METRICS,
    log_ranking,
    rank_sweep,
)
from screening.runlog import RunLogger
from screening.scratch import scratch_folder


@dataclass(frozen=True)
class SweepItem:
    """One candidate ready to simulate.

    composition_id: :func:`candidates.composition_id` of the composition (``Candidate.id``; the child
    run's ``composition_id`` tag); params: :class:`mechanics.parameters.base.MaterialParams`;
    descriptors: the static metrics of ``DESCRIPTOR_METRICS`` (from :func:`candidates.properties`);
    fractions: metal-site fractions.
    """

    composition_id: str
    formula: str
    fractions: Mapping[str, float]
    params: object
    descriptors: Mapping[str, float]
    source: str = "literature"
    uncertainties: Mapping[str, float] = field(default_factory=dict)  # 1σ, candidates.properties


DEFAULT_SIMULATOR = "mechanics.screen:simulate_candidates"
DRAW_SIMULATOR = "screening.uncertainty:simulate_draws"
MAX_SAMPLES = 256


@dataclass(frozen=True)
class SweepOptions:
    """How to run a sweep (not what to compute: that is the settings and the law).

    experiment: MLflow experiment name. tracking_uri / address: None → environment → local defaults.
    num_cpus: CPUs of the embedded local Ray (None: all). gpus_per_actor: GPU share of one actor when
    the cluster has GPUs (fractions allowed, e.g. 0.5 puts two actors on a GPU). cpus_per_actor: CPU
    actors' cores (and torch threads). actors: how many (None: fill the cluster). batch_size: candidates
    per call (None: one call per actor, at most 256 on a GPU, 64 on a CPU). refine: rerun the
    top K on the free-surface particle. artifacts: log snapshot and voltage PNGs. max_retries: Ray actor
    restarts/task retries, and driver resubmissions of a batch whose actor died for good. simulator:
    ``module:function`` of the batched simulator, same signature as
    :func:`mechanics.screen.simulate_candidates`. space: a description of the candidate space (parent tag).
    objectives: what the sweep is ranked by (:class:`screening.objectives.ObjectiveSpec`; None: its
    defaults), from ``--objectives``, ``--max-voltage`` and ``--constraint``. samples: joint draws of the
    law and the parameters per candidate (``--samples``; :mod:`screening.uncertainty`).
    allow_pickle_model: also load a law version an older chemoscreen stored with pickle
    (``--allow-pickle-model``); unpickling runs code from the store, so only for a store whose every
    writer is trusted.

    Every field is checked when the options are built; a bad value is an :class:`InputError` naming
    the ``chemoscreen sweep`` option it comes from (``--refine``, ``--num-cpus``, ...), or the field
    itself where the command line has no such option.
    """

    experiment: str = store.SCREENING_EXPERIMENT
    tracking_uri: str | None = None
    address: str | None = None
    num_cpus: int | None = None
    gpus_per_actor: float = 1.0
    cpus_per_actor: float = 1.0
    actors: int | None = None
    batch_size: int | None = None
    refine: int = 0
    artifacts: bool = True
    max_retries: int = 3
    progress: bool = True
    space: str = ""
    simulator: str = DEFAULT_SIMULATOR
    objectives: ObjectiveSpec | None = None
    samples: int = 1
    allow_pickle_model: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.experiment, str) or not self.experiment.strip():
            raise InputError("--experiment", "an MLflow experiment name", self.experiment)
        for name, flag in (("tracking_uri", "--tracking-uri"), ("address", "--address")):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise InputError(flag, "a URI or address (or None for the default)", value)
        counts = (("num_cpus", "--num-cpus"), ("actors", "--actors"), ("batch_size", "--batch-size"))
        for name, flag in counts:
            value = getattr(self, name)
            if value is not None and not _is_int(value, minimum=1):
                raise InputError(flag, "a positive integer (or None for the default)", value)
        if not _is_number(self.gpus_per_actor) or self.gpus_per_actor <= 0:
            raise InputError("--gpus-per-actor", "a positive GPU share such as 1 or 0.5", self.gpus_per_actor)
        if not _is_number(self.cpus_per_actor) or self.cpus_per_actor <= 0:
            raise InputError("cpus_per_actor", "a positive number of CPUs", self.cpus_per_actor)
        if not _is_int(self.refine, minimum=0):
            raise InputError("--refine", "a non-negative number of candidates", self.refine)
        if not _is_int(self.max_retries, minimum=0):
            raise InputError("max_retries", "a non-negative integer", self.max_retries)
        for name, flag in (("artifacts", "--no-artifacts"), ("progress", "progress"),
                           ("allow_pickle_model", "--allow-pickle-model")):
            if not isinstance(getattr(self, name), bool):
                raise InputError(flag, "True or False", getattr(self, name))
        if not isinstance(self.space, str):
            raise InputError("space", "a description of the candidate space (str)", self.space)
        module, _, function = (self.simulator if isinstance(self.simulator, str) else "").partition(":")
        if not (module and function):
            raise InputError("simulator", "module:function of a batched simulator", self.simulator)
        # at most MAX_SAMPLES: each draw adds 3 values to a child's one log_batch (MLflow takes 1,000)
        if not _is_int(self.samples, minimum=1) or self.samples > MAX_SAMPLES:
            raise InputError("--samples", f"draws per candidate in 1..{MAX_SAMPLES}", self.samples)
        if self.samples > 1 and self.simulator not in (DEFAULT_SIMULATOR, DRAW_SIMULATOR):
            raise InputError("--samples", f"1 with a simulator other than {DEFAULT_SIMULATOR}", self.samples)
        if self.objectives is not None and not isinstance(self.objectives, ObjectiveSpec):
            raise InputError("--objectives", "a screening.objectives.ObjectiveSpec or None", self.objectives)


def _is_int(value, minimum: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class SweepOutcome:
    """What a finished sweep returns: its identity and the ranked table (one row per candidate).

    ``tracking_uri`` is the store it logged to (a SQLite path made absolute); ``model_uri`` the law's
    version that entered every ``candidate_id`` (a pinned ``models:/NAME/VERSION``, ``vegard`` or a
    content hash).
    """

    sweep_id: str
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    table: pd.DataFrame
    simulated: int = 0
    skipped: int = 0
    failed: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    model_uri: str = ""


def _settings_dict(settings) -> dict:
    return settings.as_dict() if hasattr(settings, "as_dict") else dataclasses.asdict(settings)


def _child_params(item: SweepItem, settings: dict, model_uri: str) -> dict[str, object]:
    params = {f"x_{el}": round(float(x), 9) for el, x in sorted(item.fractions.items())}
    params.update({f"settings.{k}": v for k, v in settings.items()})
    params.update(source=item.source, model=model_uri, composition_id=item.composition_id)
    return params


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    # disable=None: a bar on a terminal, nothing in a log file or CI (no carriage-return updates there)
    return tqdm(total=total, desc=desc, unit="cand", disable=None if enabled and total else True, leave=True)


class _DoneElsewhere:
    """``still_todo`` of :func:`_simulate`: drops candidates that have a done run in the store.

    Another driver of the same sweep (or the same command started twice) may finish candidates of this
    driver's to-do list; the store is read again at most every ``every_s`` seconds, so most of its work
    is not repeated. What is repeated anyway is settled by :func:`screening.tracking.converge_sweep`.
    """

    def __init__(self, client, experiment_id: str, parent_id: str, every_s: float = 2.0) -> None:
        self.client, self.experiment_id, self.parent_id = client, experiment_id, parent_id
        self.every_s = every_s
        self.read_at = time.monotonic()  # the caller's to-do list was read just now
        self.done: set[str] = set()
        self.dropped = 0

    def __call__(self, batch: list) -> list:
        if time.monotonic() - self.read_at >= self.every_s:
            children = tracking.child_runs(self.client, self.experiment_id, self.parent_id)
            self.done = {cid for cid, child in tracking.latest_by_candidate(children).items() if child.done}
            self.read_at = time.monotonic()
        kept = [(cid, item) for cid, item in batch if cid not in self.done]
        self.dropped += len(batch) - len(kept)
        return kept


def _run_stage(pool_for, work, settings, logger: RunLogger, *, fidelity: str, model_uri: str,
               existing: Mapping[str, tracking.ChildRun], options: SweepOptions,
               extra_tags: Mapping[str, Mapping[str, str]], samples: int = 1) -> tuple[int, int]:
    """Simulate and log ``work`` (``samples`` draws each, merged); returns (simulated, failed), failed
    counting lost artifacts too."""
    settings_dict = _settings_dict(settings)
    by_id = dict(work)
    futures: list[Future] = []
    failed = 0
    bar = _progress(len(work), f"simulate ({fidelity})", options.progress)
    elsewhere = _DoneElsewhere(logger.client, logger.experiment_id, logger.parent_run_id)
    lost_before = logger.artifacts_lost

    def on_result(result: CandidateResult) -> None:
        nonlocal failed
        item = by_id[result.candidate_id]
        failed += result.status != "FINISHED"
        leftover = existing.get(result.candidate_id)
        futures.append(logger.submit(
            result, item, fidelity=fidelity, params=_child_params(item, settings_dict, model_uri),
            reuse_run_id=None if leftover is None else leftover.run_id,
            extra_tags=extra_tags.get(result.candidate_id, {})))
        futures[-1].add_done_callback(lambda _: bar.update(1))

    def still_todo(batch: list) -> list:
        kept = elsewhere(batch)
        bar.update(len(batch) - len(kept))
        return kept

    if samples > 1:
        from screening.uncertainty import DrawStage

        # a candidate's draws are merged only when all have come back: none is dropped half-way
        stage = DrawStage(work, samples, settings.seed, on_result)
        simulate(pool_for(len(stage.items)), stage.items, settings, options, stage)
    else:
        simulate(pool_for(len(work)), work, settings, options, on_result, still_todo=still_todo)
    for future in futures:
        future.result()  # re-raise a logging error here, after the simulations
    bar.close()
    return len(work) - elsewhere.dropped, failed + logger.artifacts_lost - lost_before


def _refine(pool_for, items_by_id: Mapping[str, SweepItem], settings, logger: RunLogger, client, uri: str,
            experiment_id: str, parent_id: str, model_uri: str, options: SweepOptions) -> tuple[int, int]:
    """Rerun the top ``options.refine`` periodic candidates on the free-surface particle.

    Each becomes a child run of the same parent with ``fidelity=particle`` and ``refines=<periodic
    candidate_id>``; its ``candidate_id`` hashes the particle settings, so it is exactly-once as well.
    Returns (simulated, failed).
    """
    particle = dataclasses.replace(settings, fidelity="particle")
    particle_dict = _settings_dict(particle)
    ranked = rank_sweep(client, uri, experiment_id, parent_id, log_children=False, spec=options.objectives)
    top = ranked[ranked["pareto_rank"].notna()].head(options.refine)
    work, tags = [], {}
    for periodic_id in top["candidate_id"]:
        item = items_by_id[periodic_id]
        cid = ids.candidate_id(item.fractions, particle_dict, model_uri, item.source)
        work.append((cid, item))
        tags[cid] = {"refines": periodic_id}
    children = tracking.latest_by_candidate(tracking.child_runs(client, experiment_id, parent_id))
    todo = [(cid, it) for cid, it in work if not (cid in children and children[cid].done)]
    if not todo:
        return 0, 0
    return _run_stage(pool_for, todo, particle, logger, fidelity="particle", model_uri=model_uri,
                      existing=children, options=options, extra_tags=tags)


def execute_sweep(
    items: Sequence[SweepItem],
    settings,
    *,
    law,
    model_uri: str,
    options: SweepOptions,
    metric_fn: Callable | None = None,
    client=None,
    sweep_key: str | None = None,
    child_tags: Mapping[str, Mapping[str, str]] | None = None,
    finish: bool = True,
    keep_actors: list | None = None,
) -> SweepOutcome:
    """Run (or resume) the sweep of prepared ``items`` and return its ranked table.

    The engine under :func:`screening.api.sweep`, which checks the input, probes the store and the Ray
    address, resolves the law and prepares the items first; call that unless you hold prepared items.

    Args:
        items: the candidates (:func:`screening.api.prepare_items`).
        settings: :class:`mechanics.screen.ScreeningSettings`.
        law: the torch module the actors evaluate, or None for Vegard's law.
        model_uri: the law's version (a pinned ``models:/NAME/VERSION``, ``vegard`` or a content hash of
            an unregistered module); it enters every ``candidate_id``.
        options: how to run it.
        metric_fn: user metrics from each simulation result (runs in the actor).
        client: an open ``MlflowClient`` on ``options.tracking_uri`` (default: probe and open it).
        sweep_key: the sweep id to log under instead of the hash of ``items`` (an active-learning sweep
            adds its items one iteration at a time to one parent run: :mod:`screening.active`).
        child_tags: extra tags of the child runs by ``composition_id`` (e.g. ``iteration``).
        finish: rank the sweep and mark the parent FINISHED; False leaves the parent RUNNING and the table
            empty (more iterations follow).
        keep_actors: a list that holds the actor pool across calls (started by the first call that
            simulates, under a Ray session the caller keeps open); the caller closes it.

    Returns:
        The :class:`SweepOutcome`.
    """
    from mlflow.exceptions import MlflowException

    started = time.perf_counter()
    uri = store.absolute_tracking_uri(store.resolve_tracking_uri(options.tracking_uri))
    if client is None:
        store.probe_tracking_uri(uri)
        client = store.open_store(uri)
    experiment_id = store.ensure_experiment(client, options.experiment, uri)
    settings_dict = _settings_dict(settings)
    if options.samples > 1:  # draws change what is logged: another simulation key, another sweep
        settings_dict = {**settings_dict, "samples": options.samples}
        options = dataclasses.replace(options, simulator=DRAW_SIMULATOR)
    work = [(ids.candidate_id(it.fractions, settings_dict, model_uri, it.source), it) for it in items]
    unique = dict(work)
    if len(unique) != len(work):
        raise InputError("space", "distinct candidates (two entries have the same composition)",
                         len(work) - len(unique))
    sweep = sweep_key or ids.sweep_id(unique, settings_dict, model_uri)
    tags_of = {cid: dict(child_tags[it.composition_id]) for cid, it in work
               if child_tags and it.composition_id in child_tags}
    parent_tags = {"model_uri": model_uri, "candidate_space": options.space[:5000],
                   "n_candidates": str(len(work))}
    parent_params = {f"settings.{k}": v for k, v in settings_dict.items()}
    parent_params["model"] = model_uri
    parent_id, resumed = tracking.open_parent_run(client, experiment_id, sweep, f"sweep-{sweep}",
                                                  parent_tags, parent_params)
    if resumed:  # what an earlier pair of concurrent drivers left (one of them killed)
        parent_id = tracking.converge_sweep(client, experiment_id, sweep)
    existing = tracking.latest_by_candidate(tracking.child_runs(client, experiment_id, parent_id))
    todo = [(cid, it) for cid, it in work if not (cid in existing and existing[cid].done)]
    outcome = SweepOutcome(sweep, parent_id, experiment_id, uri, pd.DataFrame(),
                           skipped=len(work) - len(todo), model_uri=model_uri)
    client.set_tag(parent_id, "status", "RUNNING")

    address = resolve_address(options.address)
    status = "FAILED"
    scratch = contextlib.ExitStack()
    logger = RunLogger(client, experiment_id, parent_id, options.artifacts,
                        threads=1 if uri.startswith("sqlite:") else 4, max_retries=options.max_retries,
                        scratch=scratch.enter_context(scratch_folder()))
    try:
        with contextlib.ExitStack() as stack:
            pools: list[ActorPool] = [] if keep_actors is None else keep_actors

            def pool_for(work_items: int) -> ActorPool:
                """Start Ray and the actors on first use only: a sweep with nothing to do starts neither."""
                if not pools:
                    t_ray = time.perf_counter()
                    stack.enter_context(ray_session(address, options.num_cpus))
                    outcome.timings["ray_start_s"] = time.perf_counter() - t_ray
                    t_actors = time.perf_counter()
                    pools.append(ActorPool(law, options, uri, metric_fn, work_items))
                    if keep_actors is None:
                        stack.callback(pools[0].close)
                    outcome.timings["actor_start_s"] = time.perf_counter() - t_actors
                return pools[0]

            outcome.timings["prepare_s"] = time.perf_counter() - started
            t0 = time.perf_counter()
            if todo:
                simulated, failed = _run_stage(pool_for, todo, settings, logger, fidelity="periodic",
                                               model_uri=model_uri, existing=existing, options=options,
                                               extra_tags=tags_of, samples=options.samples)
                outcome.simulated += simulated
                outcome.skipped += len(todo) - simulated
                outcome.failed += failed
                start_up = outcome.timings.get("ray_start_s", 0.0) + outcome.timings.get("actor_start_s", 0.0)
                outcome.timings["simulate_and_log_s"] = time.perf_counter() - t0 - start_up
            if options.refine > 0:
                t0 = time.perf_counter()
                done = _refine(pool_for, unique, settings, logger, client, uri, experiment_id, parent_id,
                               model_uri, options)
                outcome.simulated += done[0]
                outcome.failed += done[1]
                outcome.timings["refine_s"] = time.perf_counter() - t0
        logger.close()
        outcome.timings["log_busy_s"] = logger.busy_s
        outcome.timings["simulate_busy_s"] = logger.simulated_s
        if finish:
            t0 = time.perf_counter()
            parent_id, outcome.table = _settle_and_rank(client, uri, experiment_id, sweep, options.objectives)
            outcome.parent_run_id = parent_id
            outcome.timings["rank_s"] = time.perf_counter() - t0
            status = "FINISHED"
        else:  # an iteration of a sweep that goes on: the parent stays open
            status = "RUNNING"
    finally:
        logger.close()
        scratch.close()
        n_failed = int((outcome.table.get("status", pd.Series(dtype=str)) != "FINISHED").sum())
        try:
            if status != "RUNNING":
                client.set_tag(parent_id, "status", status)
                client.set_tag(parent_id, "n_failed", str(n_failed))
                client.set_terminated(parent_id, status)
        except MlflowException:
            if status == "FINISHED":
                raise
            # failing anyway, under a parent another driver of the sweep deleted: keep the first error
    outcome.timings["total_s"] = time.perf_counter() - started
    if resumed:
        outcome.timings["resumed"] = 1.0
    return outcome


def _settle_and_rank(client, uri: str, experiment_id: str, sweep: str, spec=None,
                     attempts: int = 3) -> tuple[str, pd.DataFrame]:
    """Converge the sweep (one parent, one done run per candidate), rank it by ``spec`` (the sweep's
    objectives), log scores and ranking.

    A second driver of the same sweep may converge at the same moment and delete a run this one is
    about to log a score on (MLflow refuses writes to a deleted run); then converge and rank again.
    Returns the parent's run id (another driver's, when that one won) and the ranked table.
    """
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        parent_id = tracking.converge_sweep(client, experiment_id, sweep)
        try:
            table = rank_sweep(client, uri, experiment_id, parent_id, log_children=True, spec=spec)
            if not table.empty:
                log_ranking(client, parent_id, table, spec)
            return parent_id, table
        except MlflowException:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def model_label(law) -> str:
    """A stable label for an unregistered law module: class name + SHA-256 of its state."""
    import hashlib

    import torch

    if law is None:
        return "none"
    digest = hashlib.sha256(type(law).__qualname__.encode())
    for key, value in sorted(law.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().to(torch.float64).numpy().tobytes())
    return f"module:{type(law).__name__}:{digest.hexdigest()[:12]}"

