"""MLflow conventions of the screening: where the store is, how sweeps and candidates become runs.

Layout (ARCHITECTURE.md §4.4): experiment ``chemoscreen-screening``; one parent run per sweep tagged
``sweep_id``; one child run per candidate tagged ``candidate_id``, ``formula``, ``status`` and
``fidelity``. Only the driver writes to MLflow, through explicit run ids (no global active run), so Ray
workers need no tracking configuration and a tracking server sees a handful of batched calls per
candidate.

Default store: ``sqlite:///mlflow.db`` in the working directory with artifacts in ``./mlartifacts``
beside it. For any SQLite store the artifacts go to ``mlartifacts/`` next to the database file.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlparse

from inverse.tracking import (  # noqa: F401  (the store conventions are shared with calibration)
    DEFAULT_TRACKING_URI,
    artifact_location,
    ensure_experiment,
    open_store,
    resolve_tracking_uri,
    sqlite_path,
)
from mechanics.errors import InputError

SCREENING_EXPERIMENT = "chemoscreen-screening"
CALIBRATION_EXPERIMENT = "chemoscreen-calibration"
DEFAULT_MODEL_URI = "models:/lfp-chemomech@champion"
PARENT_TAG = "mlflow.parentRunId"
PROBE_TIMEOUT_S = 5.0






def _tcp_reachable(host: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def probe_tracking_uri(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast with :class:`InputError` (field ``--tracking-uri``) when the store cannot be reached.

    HTTP(S) servers must answer ``GET /health`` within ``timeout_s``; database servers must accept a
    TCP connection; a SQLite file must sit in an existing directory. MLflow 3 refuses plain file stores,
    so those are rejected here with the alternative named.
    """
    field = "--tracking-uri"
    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+")[0]
    if scheme in ("http", "https"):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (http/https only)
                if response.status != 200:
                    raise InputError(field, "an MLflow tracking server whose /health answers 200", uri)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise InputError(
                field, f"a reachable MLflow tracking server (GET /health within {timeout_s:g} s; {exc})", uri
            ) from None
    elif scheme == "sqlite":
        path = sqlite_path(uri)
        if path is not None and str(path) not in ("", ":memory:") and not path.resolve().parent.is_dir():
            raise InputError(field, "sqlite:///FILE.db in an existing directory", uri)
    elif scheme in ("postgresql", "mysql", "mssql"):
        default_port = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}[scheme]
        host, port = parsed.hostname or "localhost", parsed.port or default_port
        if not _tcp_reachable(host, port, timeout_s):
            raise InputError(field, f"a reachable database server ({host}:{port} refused or timed out)", uri)
    elif scheme in ("", "file"):
        expected = "sqlite:///mlflow.db or an http(s):// tracking server (MLflow 3 refuses file stores)"
        raise InputError(field, expected, uri)








def search_all_runs(client, experiment_id: str, filter_string: str = "") -> list:
    """Every active run matching ``filter_string``, following pagination."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def resolve_model(client, model_uri: str) -> str:
    """Pin ``models:/NAME@ALIAS`` or ``models:/NAME/latest`` to ``models:/NAME/VERSION``.

    A sweep uses one model version from start to end even if the alias moves meanwhile. Other URIs
    (``runs:/...``, ``models:/NAME/3``) are already immutable and returned as they are.
    """
    from mlflow.exceptions import MlflowException

    hint = ("a registered model version; run `chemoscreen calibrate IMAGES... --out DIR` "
            "(or `chemoscreen demo`) to register one, or pass --law vegard")
    if not model_uri.startswith("models:/"):
        return model_uri
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
                versions = client.search_model_versions(f"name = '{name}'")
                if not versions:
                    raise InputError("--model", hint, model_uri)
                version = max(int(v.version) for v in versions)
            else:
                version = client.get_model_version(name, ref).version
    except MlflowException:
        raise InputError("--model", hint, model_uri) from None
    return f"models:/{name}/{version}"


@dataclass(frozen=True)
class ChildRun:
    """What the driver needs to know about an existing child run."""

    run_id: str
    candidate_id: str
    status: str
    metrics: dict[str, float]
    tags: dict[str, str]


def open_parent_run(client, experiment_id: str, sweep_id: str, run_name: str,
                    tags: Mapping[str, str], params: Mapping[str, object]) -> tuple[str, bool]:
    """Create the sweep's parent run, or reopen the one a previous (perhaps killed) driver left.

    Returns ``(run_id, resumed)``.
    """
    from mlflow.entities import Param, RunTag

    existing = search_all_runs(client, experiment_id, f"tags.sweep_id = '{sweep_id}'")
    if existing:
        oldest = min(existing, key=lambda run: run.info.start_time)
        client.update_run(oldest.info.run_id, status="RUNNING")
        return oldest.info.run_id, True
    run = client.create_run(experiment_id, run_name=run_name, tags={"sweep_id": sweep_id, **tags})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()],
                     tags=[RunTag("status", "RUNNING")])
    return run.info.run_id, False


def child_runs(client, experiment_id: str, parent_run_id: str) -> list[ChildRun]:
    runs = search_all_runs(client, experiment_id, f"tags.{PARENT_TAG} = '{parent_run_id}'")
    return [
        ChildRun(run.info.run_id, run.data.tags.get("candidate_id", ""), run.info.status,
                 dict(run.data.metrics), dict(run.data.tags))
        for run in runs
    ]


def latest_by_candidate(children: list[ChildRun]) -> dict[str, ChildRun]:
    """One run per candidate id: a FINISHED one if there is any, else the most recent leftover."""
    chosen: dict[str, ChildRun] = {}
    for child in children:
        held = chosen.get(child.candidate_id)
        if held is None or (child.status == "FINISHED" and held.status != "FINISHED"):
            chosen[child.candidate_id] = child
    return chosen


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
) -> str:
    """Write one candidate's run in four client calls: create (or reuse), log_batch, artifacts, terminate.

    ``reuse_run_id`` is a leftover of an earlier driver (RUNNING after a crash, or FAILED): it is
    completed in place rather than duplicated, so the candidate keeps exactly one run.
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
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
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
    where = f"tags.sweep_id = '{sweep_id}'" if sweep_id else "tags.sweep_id LIKE '%'"
    runs = client.search_runs([experiment_id], filter_string=where, order_by=["attributes.start_time DESC"],
                              max_results=1)
    if not runs:
        if sweep_id:
            raise InputError("--sweep-id", "the sweep_id tag of a sweep in this experiment", sweep_id)
        raise InputError("--experiment", "an experiment holding a sweep (run `chemoscreen sweep` first)",
                         experiment_id)
    return runs[0].info.run_id
