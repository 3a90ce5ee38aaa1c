"""MLflow conventions of the screening: how sweeps and candidates become runs.

Layout (ARCHITECTURE.md §4.4): experiment ``chemoscreen-screening``; one parent run per sweep tagged
``sweep_id``; one child run per candidate tagged ``candidate_id`` (the simulation key of
:func:`screening.ids.candidate_id`), ``composition_id`` (:func:`candidates.composition_id`),
``formula``, ``status`` and ``fidelity``. Only the driver writes to MLflow, through explicit run ids
(no global active run), so Ray workers need no tracking configuration and a tracking server sees a
handful of batched calls per candidate.

Exactly once under concurrency (docs/guarantees.md): two drivers of the same sweep may both create a
parent and both simulate a candidate. They converge instead of coordinating: the oldest active parent
run of a sweep id wins (younger ones are deleted), children logged under a deleted parent of the sweep
are moved to the winner, and among a candidate's *done* child runs (FINISHED with its artifacts) the
one with the smallest run id wins; the others are deleted (:func:`converge_sweep`). Each rule keeps the
smallest element of what a driver sees, so drivers that converge at different times never delete each
other's winner, and the last one to converge leaves one parent and one done run per candidate.

The store itself (names, default URI, probing, opening, experiments) is :mod:`chemoscreen.store`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from chemoscreen import store
from mechanics.errors import InputError

PARENT_TAG = "mlflow.parentRunId"
# child tag ``artifacts``: "logged" (the PNGs are stored), "missing" (rendering failed: redo on resume),
# "off" (the sweep ran without artifacts)
ARTIFACTS_TAG = "artifacts"
ARTIFACTS_MISSING = "missing"
# tag left on a run deleted as a duplicate: the run id that won
DUPLICATE_TAG = "duplicate_of"


def sweep_filter(sweep_id: str, field: str = "sweep_id") -> str:
    """The filter string of a sweep's parent run(s).

    Args:
        sweep_id: the 12 hex digits of :func:`screening.ids.sweep_id`.
        field: the option or argument ``sweep_id`` came from, named in errors.

    Returns:
        ``tags.sweep_id = '<sweep_id>'``.

    Raises:
        InputError: ``sweep_id`` is not 12 lower-case hex digits.
    """
    value = store.hex_id(sweep_id, field, store.SWEEP_ID_DIGITS)
    return f"tags.sweep_id = {store.filter_value(value, field)}"


def children_filter(parent_run_id: str) -> str:
    """The filter string of the child runs of ``parent_run_id`` (an MLflow run id, 32 hex digits).

    Raises:
        InputError: ``parent_run_id`` is not a run id.
    """
    value = store.hex_id(parent_run_id, "parent_run_id", store.RUN_ID_DIGITS)
    return f"tags.{PARENT_TAG} = {store.filter_value(value, 'parent_run_id')}"


def resolve_model(client, model_uri: str) -> str:
    """Pin ``models:/NAME@ALIAS`` or ``models:/NAME/latest`` to ``models:/NAME/VERSION``.

    A sweep uses one model version from start to end even if the alias moves meanwhile. Other URIs
    (``runs:/...``, ``models:/NAME/3``) are already immutable and returned as they are.
    """
    from mlflow.exceptions import MlflowException

    hint = ("a registered model version; run `chemoscreen calibrate IMAGES... --out DIR` "
            "(or `chemoscreen demo`) to register one, or pass --law vegard")
    if model_uri.startswith("runs:/"):
        return _check_run_model(client, model_uri)
    if not model_uri.startswith("models:/"):
        expected = "models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/PATH (a model in the store)"
        raise InputError("--model", expected, model_uri)
    body = model_uri[len("models:/"):]
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            version = client.get_model_version_by_alias(name, alias).version
        else:
            name, _, ref = body.partition("/")
            if not name or not ref:
                raise InputError("--model", "models:/NAME@ALIAS or models:/NAME/VERSION", model_uri)
            if ref == "latest":
                versions = client.search_model_versions(f"name = {store.filter_value(name, '--model')}")
                if not versions:
                    raise InputError("--model", hint, model_uri)
                version = max(int(v.version) for v in versions)
            else:
                version = client.get_model_version(name, ref).version
    except MlflowException:
        raise InputError("--model", hint, model_uri) from None
    return f"models:/{name}/{version}"


def _check_run_model(client, model_uri: str) -> str:
    """``runs:/RUN_ID/PATH`` as it is, once the run exists and holds artifacts under ``PATH``."""
    from mlflow.exceptions import MlflowException

    run_id, _, path = model_uri[len("runs:/"):].partition("/")
    expected = "runs:/RUN_ID/PATH of a run in this store that holds a model under PATH"
    if not run_id or not path.strip("/"):
        raise InputError("--model", expected, model_uri)
    try:
        store.hex_id(run_id, "--model", store.RUN_ID_DIGITS)
        client.get_run(run_id)
        found = client.list_artifacts(run_id, path.strip("/"))
    except (MlflowException, InputError):
        raise InputError("--model", expected, model_uri) from None
    if not found:
        raise InputError("--model", expected, model_uri)
    return model_uri


@dataclass(frozen=True)
class ChildRun:
    """What the driver needs to know about an existing child run."""

    run_id: str
    candidate_id: str
    status: str
    metrics: dict[str, float]
    tags: dict[str, str]

    @property
    def done(self) -> bool:
        """FINISHED with its artifacts: a resumed sweep skips it (a run whose PNGs were lost is redone)."""
        return self.status == "FINISHED" and self.tags.get(ARTIFACTS_TAG) != ARTIFACTS_MISSING


def open_parent_run(client, experiment_id: str, sweep_id: str, run_name: str,
                    tags: Mapping[str, str], params: Mapping[str, object]) -> tuple[str, bool]:
    """Create the sweep's parent run, or reopen the one a previous (perhaps killed) driver left.

    Search, then create, then search again: when another driver created a parent for the same sweep
    id meanwhile, the oldest one (start time, then run id) wins and the younger ones are deleted
    (tagged ``duplicate_of``) before anything is logged under them. Each driver searches after
    creating its own, so of two drivers at least the younger sees both and joins the oldest; one that
    chose a parent deleted later is brought over by :func:`converge_sweep` (docs/guarantees.md).

    Returns ``(run_id, resumed)``: ``resumed`` is True when the run was not created by this call.
    """
    from mlflow.entities import Param, RunTag

    existing = store.search_all_runs(client, experiment_id, sweep_filter(sweep_id))
    created = None
    if not existing:
        run = client.create_run(experiment_id, run_name=run_name, tags={"sweep_id": sweep_id, **tags})
        created = run.info.run_id
        client.log_batch(created, params=[Param(k, str(v)) for k, v in params.items()],
                         tags=[RunTag("status", "RUNNING")])
        existing = store.search_all_runs(client, experiment_id, sweep_filter(sweep_id))
    chosen, *younger = [run.info.run_id for run in
                        sorted(existing, key=lambda run: (run.info.start_time, run.info.run_id))]
    _delete_duplicates(client, younger, chosen)
    if chosen != created:
        client.update_run(chosen, status="RUNNING")
    return chosen, chosen != created


def _delete_duplicates(client, run_ids, winner: str) -> int:
    """Tag each run ``duplicate_of=<winner>`` and delete it; returns how many this call deleted."""
    from mlflow.exceptions import MlflowException

    deleted = 0
    for run_id in run_ids:
        try:
            client.set_tag(run_id, DUPLICATE_TAG, winner)
            client.delete_run(run_id)
        except MlflowException:  # another driver deleted it first
            continue
        deleted += 1
    return deleted


def child_runs(client, experiment_id: str, parent_run_id: str) -> list[ChildRun]:
    runs = store.search_all_runs(client, experiment_id, children_filter(parent_run_id))
    return [
        ChildRun(run.info.run_id, run.data.tags.get("candidate_id", ""), run.info.status,
                 dict(run.data.metrics), dict(run.data.tags))
        for run in runs
    ]


def _preference(child: ChildRun) -> tuple:
    """Sort key of a candidate's runs, best first: done (smallest run id), FINISHED, then the rest."""
    return (not child.done, child.status != "FINISHED", child.run_id)


def latest_by_candidate(children: list[ChildRun]) -> dict[str, ChildRun]:
    """One run per candidate id: the done one that :func:`settle_duplicates` keeps, else a leftover.

    A leftover (RUNNING after a crash, FAILED, or FINISHED without its artifacts) is what a resumed
    sweep completes in place.
    """
    chosen: dict[str, ChildRun] = {}
    for child in children:
        held = chosen.get(child.candidate_id)
        if held is None or _preference(child) < _preference(held):
            chosen[child.candidate_id] = child
    return chosen


def _sweep_parents(client, experiment_id: str, sweep_id: str) -> list:
    """Every parent run of the sweep, active and deleted (oldest first)."""
    from mlflow.entities import ViewType

    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=sweep_filter(sweep_id),
                                  run_view_type=ViewType.ALL, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return sorted(runs, key=lambda run: (run.info.start_time, run.info.run_id))


def converge_sweep(client, experiment_id: str, sweep_id: str) -> str:
    """Bring a sweep to one parent and one done run per candidate; returns the parent's run id.

    The oldest active parent wins and younger active ones are deleted. A driver that had already
    chosen a younger parent (its create reached the store first but carries a later start time) keeps
    logging under it after another driver deleted it; its children are moved to the winner here (their
    ``mlflow.parentRunId`` tag is rewritten; only parents deleted as duplicates, never one a user
    deleted) and then :func:`settle_duplicates` keeps one done run per candidate. Every driver calls
    this before ranking, so the last one leaves the sweep settled.

    Args:
        client: an :class:`mlflow.MlflowClient`.
        experiment_id: the sweep's experiment.
        sweep_id: the sweep (12 hex digits).

    Returns:
        The run id of the winning parent.
    """
    from mlflow.exceptions import MlflowException

    parents = _sweep_parents(client, experiment_id, sweep_id)
    active = [run.info.run_id for run in parents if run.info.lifecycle_stage == "active"]
    if not active:
        raise InputError("sweep_id", "a sweep with an active parent run", sweep_id)
    winner, *younger = active
    _delete_duplicates(client, younger, winner)
    for run in parents:
        if run.info.run_id == winner or DUPLICATE_TAG not in run.data.tags:
            continue  # the winner, or a parent a user deleted (its runs are not to be counted)
        for child in store.search_all_runs(client, experiment_id, children_filter(run.info.run_id)):
            try:
                client.set_tag(child.info.run_id, PARENT_TAG, winner)
            except MlflowException:  # deleted meanwhile by another driver's settling
                continue
    settle_duplicates(client, experiment_id, winner)
    return winner


def settle_duplicates(client, experiment_id: str, parent_run_id: str) -> int:
    """Delete every done child run of a candidate but the one with the smallest run id.

    Runs that are not done (RUNNING, FAILED, artifacts missing) are left alone: another driver may be
    completing them. Each deleted run is tagged ``duplicate_of=<the winner>`` first.

    Args:
        client: an :class:`mlflow.MlflowClient`.
        experiment_id: the sweep's experiment.
        parent_run_id: the sweep's parent run.

    Returns:
        How many runs were deleted.
    """
    done: dict[str, list[str]] = {}
    for child in child_runs(client, experiment_id, parent_run_id):
        if child.done and child.candidate_id:
            done.setdefault(child.candidate_id, []).append(child.run_id)
    deleted = 0
    for run_ids in done.values():
        winner, *losers = sorted(run_ids)
        deleted += _delete_duplicates(client, losers, winner)
    return deleted


def log_child_run(
    client,
    experiment_id: str,
    parent_run_id: str,
    *,
    run_name: str,
    reuse_run_id: str | None,
    tags: Mapping[str, str],
    params: Mapping[str, object],
    metrics: Mapping[str, float],
    status: str,
    artifact_dir: str | None = None,
    history: Mapping[str, object] | None = None,
) -> str:
    """Write one candidate's run in four client calls: create (or reuse), log_batch, artifacts, terminate.

    ``reuse_run_id`` is a leftover of an earlier driver (RUNNING after a crash, or FAILED): it is
    completed in place rather than duplicated, so the candidate keeps exactly one run. ``history``:
    metric → values logged as ``<metric>_draw`` with step = index (the draws of ``--samples``), in the
    same batch.
    """
    from mlflow.entities import Metric, Param, RunTag

    all_tags = {PARENT_TAG: parent_run_id, **tags, "status": status}
    if reuse_run_id is None:
        run_id = client.create_run(experiment_id, run_name=run_name, tags=all_tags).info.run_id
        tag_list = []
    else:
        run_id = reuse_run_id
        client.update_run(run_id, status="RUNNING")
        tag_list = [RunTag(k, str(v)) for k, v in all_tags.items()]
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()]
        + [Metric(f"{k}_draw", float(v), now, step) for k, values in (history or {}).items()
           for step, v in enumerate(values)],
        # a reused run may hold these params already: MLflow accepts a param logged again with the same value
        params=[Param(k, str(v)) for k, v in params.items()],
        tags=tag_list,
    )
    if artifact_dir is not None:
        client.log_artifacts(run_id, artifact_dir)
    client.set_terminated(run_id, "FINISHED" if status == "FINISHED" else "FAILED")
    return run_id


def log_metrics(client, run_id: str, metrics: Mapping[str, float]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])


def find_sweep(client, experiment_id: str, sweep_id: str | None = None) -> str:
    """The parent run of sweep ``sweep_id``, or of the most recently started sweep when None."""
    where = sweep_filter(sweep_id, "--sweep-id") if sweep_id else "tags.sweep_id LIKE '%'"
    runs = client.search_runs([experiment_id], filter_string=where, order_by=["attributes.start_time DESC"],
                              max_results=1)
    if not runs:
        if sweep_id:
            raise InputError("--sweep-id", "the sweep_id tag of a sweep in this experiment", sweep_id)
        raise InputError("--experiment", "an experiment holding a sweep (run `chemoscreen sweep` first)",
                         experiment_id)
    return runs[0].info.run_id
