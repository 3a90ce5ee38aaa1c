"""The MLflow store: the project's names (ARCHITECTURE.md §4.4) and the helpers every command uses.

This module is the one home of the tracking conventions that calibration (``inverse.tracking``) and
screening (``screening.tracking``) share: experiment and registered-model names, the alias, where
the default store is, how a tracking URI is resolved and probed, how the store and an experiment are
opened, and how a value enters an MLflow filter string.

Default store: ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the
working directory. For any SQLite store the artifacts go to ``mlartifacts/`` beside the database file.

MLflow is imported inside the functions that need it, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import socket
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from mechanics.errors import InputError

CALIBRATION_EXPERIMENT = "chemoscreen-calibration"
SCREENING_EXPERIMENT = "chemoscreen-screening"
MODEL_NAME = "lfp-chemomech"
ALIAS = "champion"
DEFAULT_MODEL_URI = f"models:/{MODEL_NAME}@{ALIAS}"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# The experiment tag the MLflow 3.x UI reads to choose an experiment's pages: without it a new experiment
# opens on the GenAI traces overview. "custom_model_development" (the UI's CUSTOM_MODEL_DEVELOPMENT kind,
# in mlflow/server/js) opens the runs table.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
PROBE_TIMEOUT_S = 5.0

TRACKING_FIELD = "--tracking-uri"
# hex digits of the ids this project writes: screening.ids.sweep_id / candidate_id, MLflow run ids
SWEEP_ID_DIGITS = 12
CANDIDATE_ID_DIGITS = 16
RUN_ID_DIGITS = 32
# schemes MLflow 3 can use as a tracking store (``file`` is refused by MLflow itself)
STORE_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")
EXPECTED_STORE = ("sqlite:///FILE.db, http(s)://HOST:PORT (an MLflow server) or "
                  "postgresql|mysql|mssql://... (a database server)")


# ---------------------------------------------------------------------------------------------------
# where the store is


def resolve_tracking_uri(explicit: str | None = None) -> str:
    """The tracking URI to use.

    Args:
        explicit: ``--tracking-uri`` (or the ``tracking_uri`` argument of a Python call), or None.

    Returns:
        ``explicit``, else ``$MLFLOW_TRACKING_URI``, else :data:`DEFAULT_TRACKING_URI`.
    """
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI.

    Args:
        uri: a tracking URI.

    Returns:
        The path as written in the URI (relative or absolute), or None for other stores.
    """
    if not uri.startswith("sqlite:"):
        return None
    path = urlparse(uri).path
    # sqlite:///rel.db -> "/rel.db" (relative), sqlite:////abs.db -> "//abs.db" (absolute)
    return Path(path[1:]) if path.startswith("/") else Path(path)


def absolute_tracking_uri(uri: str) -> str:
    """A SQLite URI with an absolute path, so workers and later commands find the same file.

    Args:
        uri: a tracking URI.

    Returns:
        ``uri`` with its SQLite path made absolute; other URIs (and in-memory SQLite) unchanged.
    """
    path = sqlite_path(uri)
    if path is None or str(path) in ("", ":memory:") or path.is_absolute():
        return uri
    return "sqlite:///" + str(path.resolve())


def artifact_location(uri: str) -> str | None:
    """Where a new experiment of the store ``uri`` keeps its artifacts.

    Args:
        uri: a tracking URI.

    Returns:
        The ``file://`` URI of ``mlartifacts/`` beside a SQLite database; None (the server's choice)
        for other stores.
    """
    path = sqlite_path(uri)
    if path is None or str(path) in ("", ":memory:"):
        return None
    return (path.resolve().parent / "mlartifacts").as_uri()


def _tcp_reachable(host: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def probe_tracking_uri(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast when the store ``uri`` cannot be reached or cannot be used.

    HTTP(S) servers must answer ``GET /health`` within ``timeout_s``; database servers must accept a
    TCP connection; a SQLite file must sit in an existing directory. MLflow 3 refuses plain file
    stores, so those are rejected here with the alternative named. Nothing is created.

    Args:
        uri: a tracking URI.
        timeout_s: how long a server may take to answer (s).

    Raises:
        InputError: (field ``--tracking-uri``) the store is unreachable or of an unusable kind.
    """
    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+")[0]
    if scheme in ("http", "https"):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (http/https only)
                if response.status != 200:
                    expected = "an MLflow tracking server whose /health answers 200"
                    raise InputError(TRACKING_FIELD, expected, uri)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            expected = f"a reachable MLflow tracking server (GET /health within {timeout_s:g} s; {exc})"
            raise InputError(TRACKING_FIELD, expected, uri) from None
    elif scheme == "sqlite":
        path = sqlite_path(uri)
        if path is not None and str(path) not in ("", ":memory:") and not path.resolve().parent.is_dir():
            raise InputError(TRACKING_FIELD, "sqlite:///FILE.db in an existing directory", uri)
    elif scheme in ("postgresql", "mysql", "mssql"):
        default_port = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}[scheme]
        host, port = parsed.hostname or "localhost", parsed.port or default_port
        if not _tcp_reachable(host, port, timeout_s):
            expected = f"a reachable database server ({host}:{port} refused or timed out)"
            raise InputError(TRACKING_FIELD, expected, uri)
    elif scheme in ("", "file"):
        expected = "sqlite:///mlflow.db or an http(s):// tracking server (MLflow 3 refuses file stores)"
        raise InputError(TRACKING_FIELD, expected, uri)
    elif scheme not in STORE_SCHEMES:
        raise InputError(TRACKING_FIELD, f"a tracking URI of a known kind: {EXPECTED_STORE}", uri)


# ---------------------------------------------------------------------------------------------------
# opening the store


@contextlib.contextmanager
def creation_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock for a SQLite store's database file (nothing for other stores).

    MLflow creates (or migrates) a SQLite schema the first time a process opens the file; two processes
    doing so at once crash one of them (``duplicate column name: step``). Everything that may create
    the schema runs under this lock, so the second process waits and then finds the tables made. The
    lock is an ``flock`` on a file named by a hash of the database's absolute path in the machine's
    temporary folder (``chemoscreen-locks/``), so nothing is ever left beside the user's database; it
    is released when the block ends or the process dies. (A SQLite store is local to one machine, as
    the lock is.)

    Args:
        uri: a tracking URI.

    Raises:
        InputError: (field ``--tracking-uri``) the database's folder is not writable (read-only
            filesystem or permissions): SQLite could not write its journal there either.
    """
    path = sqlite_path(uri)
    if path is None or str(path) in ("", ":memory:"):
        yield
        return
    folder = path.resolve().parent
    if folder.is_dir():  # a read-only filesystem or folder: SQLite could not write its journal either
        try:
            with tempfile.TemporaryFile(dir=folder):  # made and gone at once: nothing stays
                pass
        except OSError as exc:
            expected = f"a SQLite file in a writable folder ({folder}: {exc.strerror or exc})"
            raise InputError(TRACKING_FIELD, expected, uri) from None
    locks = Path(tempfile.gettempdir()) / "chemoscreen-locks"
    locks.mkdir(mode=0o777, exist_ok=True)
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24]
    fd = os.open(locks / f"{digest}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _store_error(uri: str, exc: Exception) -> InputError | None:
    """The :class:`InputError` for a SQLite file that is not an MLflow store, or None for other errors."""
    text = str(exc).lower()
    if sqlite_path(uri) is None:
        return None
    if "not a database" in text or "malformed" in text or "file is encrypted" in text:
        return InputError(TRACKING_FIELD, "an MLflow SQLite store (this file is not a usable database)", uri)
    if "readonly database" in text or "unable to open database" in text:
        return InputError(TRACKING_FIELD, "a SQLite file this user can write", uri)
    if "no such table" in text or "can't locate revision" in text:
        return InputError(TRACKING_FIELD, "an MLflow SQLite store (this database holds other tables)", uri)
    return None


def open_store(uri: str):
    """An :class:`mlflow.MlflowClient` on ``uri`` whose store (schema included) exists.

    The tracking and registry schemas are created under :func:`creation_lock`, so several drivers may
    open a fresh SQLite store at once. Called by a driver before any worker starts.

    Args:
        uri: a tracking URI (also used as the registry URI).

    Returns:
        The client.

    Raises:
        InputError: (field ``--tracking-uri``) a SQLite store in a read-only folder, a file that is
            not an MLflow database (corrupt, truncated, another program's), or one this user cannot
            write; checked before any other work.
    """
    from mlflow import MlflowClient

    logging.getLogger("alembic").setLevel(logging.WARNING)
    path = sqlite_path(uri)
    if path is not None and path.is_file() and not os.access(path, os.R_OK | os.W_OK):
        raise InputError(TRACKING_FIELD, "a SQLite file this user can read and write", uri)
    with creation_lock(uri):
        try:
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # opens (and creates) the store
            client.search_experiments(max_results=1)
            client.search_registered_models(max_results=1)
        except Exception as exc:
            error = _store_error(uri, exc)
            if error is None:
                raise
            raise error from None
    return client


def ensure_experiment(client, name: str, uri: str) -> str:
    """The id of experiment ``name``, created (with the store's artifact location) when missing.

    The experiment is tagged :data:`EXPERIMENT_KIND_TAG` = :data:`EXPERIMENT_KIND` so that the MLflow UI
    (3.x) opens it as a model-training experiment on its runs table, not on the GenAI traces overview.
    An existing experiment without that tag (one an older chemoscreen created) gets it too; a kind
    somebody set on purpose is left alone.

    Args:
        client: an :class:`mlflow.MlflowClient` on ``uri``.
        name: the experiment name (``--experiment``).
        uri: the tracking URI (decides :func:`artifact_location`).

    Returns:
        The experiment id.

    Raises:
        InputError: (field ``--experiment``) the experiment exists but is deleted.
    """
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            expected = "an active experiment (this one is deleted; restore or rename it)"
            raise InputError("--experiment", expected, name)
        if EXPERIMENT_KIND_TAG not in experiment.tags:
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(uri),
                                        tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except MlflowException:
        # another process created it between our lookup and create
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def search_all_runs(client, experiment_id: str, filter_string: str = "") -> list:
    """Every active run of an experiment matching ``filter_string``, following pagination.

    Args:
        client: an :class:`mlflow.MlflowClient`.
        experiment_id: the experiment to search.
        filter_string: an MLflow filter; build values into it with :func:`filter_value`.

    Returns:
        The runs (``mlflow.entities.Run``).
    """
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


# ---------------------------------------------------------------------------------------------------
# values in filter strings

_UNQUOTABLE = re.compile(r"['\\\x00-\x1f\x7f]")


def filter_value(value: object, field: str) -> str:
    """``value`` as a quoted literal for an MLflow filter string (``tags.k = <literal>``).

    MLflow's filter parser strips the outer quotes of a literal and does not unescape what is inside,
    so a value holding a single quote, a backslash or a control character cannot be matched exactly;
    such a value is refused instead of being spliced into the filter.

    Args:
        value: the value to compare with (turned into ``str``).
        field: the option or argument it came from, named in the error.

    Returns:
        ``'value'``.

    Raises:
        InputError: ``value`` holds a character a filter literal cannot carry.
    """
    text = str(value)
    if _UNQUOTABLE.search(text):
        raise InputError(field, "a value without quotes, backslashes or control characters", text)
    return f"'{text}'"


def hex_id(value: object, field: str, digits: int) -> str:
    """Check that ``value`` is an id of ``digits`` lower-case hex digits (a sweep, candidate or run id).

    Args:
        value: the id, e.g. from ``--sweep-id``.
        field: the option or argument it came from, named in the error.
        digits: its length (:data:`SWEEP_ID_DIGITS`, :data:`CANDIDATE_ID_DIGITS`, :data:`RUN_ID_DIGITS`).

    Returns:
        ``value`` (a ``str``), safe to put in a filter with :func:`filter_value`.

    Raises:
        InputError: ``value`` is not such an id.
    """
    if not isinstance(value, str) or re.fullmatch(f"[0-9a-f]{{{digits}}}", value) is None:
        raise InputError(field, f"an id of {digits} lower-case hex digits", value)
    return value
