"""Writing finished candidates to MLflow while the actors keep simulating (the sweep driver's logger).

PNGs are drawn by a few :class:`screening.plots.Renderer` actors (restarted when they die, a lost drawing
asked again); MLflow calls run in logging threads. Used by :mod:`screening.driver`.

A child run is three store transactions (create with its tags, one ``log_batch`` of metrics and params,
terminate), each several SQLite commits. With SQLite's default rollback journal every commit waits for
``fsync``s, which made up three quarters of a child run's time; the logger switches a SQLite store to
write-ahead logging with ``synchronous=NORMAL`` (:func:`quicker_sqlite_commits`), under which a commit
waits for no disk flush and the store stays consistent through a crash of any process or of the machine
(a power loss may undo the last commits; a resumed sweep then redoes those candidates).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from screening import tracking
from screening.actors import CandidateResult
from screening.results import DESCRIPTOR_METRICS

if TYPE_CHECKING:  # annotations only: the driver imports this module
    from screening.driver import SweepItem


def _sqlite_pragmas(connection, _record) -> None:
    """Write-ahead log, then ``synchronous=NORMAL``, which is safe against power loss only under it."""
    import sqlite3

    cursor = connection.cursor()
    try:
        (mode,) = cursor.execute("PRAGMA journal_mode=WAL").fetchone()
        if str(mode).lower() == "wal":
            cursor.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.OperationalError:  # locked by another writer at this moment: keep the current journal
        pass
    finally:
        cursor.close()


def quicker_sqlite_commits(client) -> bool:
    """Put every connection of ``client``'s SQLite store in WAL mode with ``synchronous=NORMAL``.

    Write-ahead logging is a property of the database file (later readers and writers use it too:
    MLflow, the UI, a second driver); ``synchronous`` is per connection. A connection that cannot switch
    (another process holds the file locked at that moment) keeps the journal it has. Returns False,
    changing nothing, for a store that is not SQLite.
    """
    from sqlalchemy import event

    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    engine = getattr(store, "engine", None)
    if engine is None or engine.dialect.name != "sqlite":
        return False
    if event.contains(engine, "connect", _sqlite_pragmas):
        return True
    event.listen(engine, "connect", _sqlite_pragmas)
    engine.dispose()  # pooled connections were opened before the listener: open them again
    return True


class RunLogger:
    """Writes finished candidates to MLflow while the actors keep simulating.

    PNGs are drawn by a few :class:`screening.plots.Renderer` actors that reserve no CPU (matplotlib
    holds the GIL for a few hundred ms per candidate, which would serialise the driver; each renderer
    keeps its figures and redraws them); two at least, so the drawings of the last batch, which nothing
    else overlaps, take half the time. The MLflow calls run in logging threads: one for a SQLite store
    (it serialises writes anyway; see :func:`quicker_sqlite_commits`), four for a server.
    A renderer that dies is restarted by Ray (``max_restarts``) and its lost drawing is asked again,
    of the next renderer, up to ``max_retries`` times; a candidate whose PNGs are still lost is logged
    FINISHED with the tag ``artifacts=missing``, counted as failed, and redone by a resumed sweep.
    """

    def __init__(self, client, experiment_id: str, parent_run_id: str, artifacts: bool,
                 threads: int = 1, max_retries: int = 3, scratch: Path | None = None) -> None:
        self.client, self.experiment_id, self.parent_run_id = client, experiment_id, parent_run_id
        self.artifacts = artifacts
        self.max_retries = max_retries
        self.scratch = scratch  # where PNGs wait for their upload (None: the system's temporary folder)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mlflow-logger")
        self.busy_s = 0.0  # time the logging threads spent (overlaps the simulations)
        self.simulated_s = 0.0  # the actors' busy time: batch wall time, summed over the results logged
        quicker_sqlite_commits(client)
        self.renderers: list = []
        self.rendered = 0
        self.artifacts_lost = 0

    def _renderer(self):
        """The next renderer, round robin (started on first use)."""
        if not self.renderers:
            import ray

            from screening.plots import Renderer

            # two at least: the last batch's drawings are the sweep's tail, drawn while no actor runs
            count = max(2, min(4, (os.cpu_count() or 2) // 4))
            remote = ray.remote(num_cpus=0, max_restarts=self.max_retries, max_task_retries=0)(Renderer)
            self.renderers = [remote.remote() for _ in range(count)]
        renderer = self.renderers[self.rendered % len(self.renderers)]
        self.rendered += 1
        return renderer

    def submit(self, result: CandidateResult, item: SweepItem, *, fidelity: str, params: dict,
               reuse_run_id: str | None, extra_tags: Mapping[str, str]) -> Future:
        rendering = None
        self.simulated_s += result.seconds
        if self.artifacts and result.status == "FINISHED":
            from candidates.space import chemist_formula

            rendering = self._renderer().render.remote(result.snapshots, result.voltage_curve,
                                                       chemist_formula(item.formula))
        return self.pool.submit(self._log, result, item, fidelity, params, reuse_run_id, extra_tags,
                                rendering)

    def _pngs(self, result: CandidateResult, item: SweepItem, rendering) -> dict[str, bytes]:
        """The rendered PNGs; a drawing lost with its renderer is asked again (Ray restarts the actor)."""
        import ray
        from ray.exceptions import RayActorError

        for attempt in range(self.max_retries + 1):
            try:
                return ray.get(rendering)
            except RayActorError:
                if attempt == self.max_retries:
                    raise
                from candidates.space import chemist_formula

                rendering = self._renderer().render.remote(result.snapshots, result.voltage_curve,
                                                           chemist_formula(item.formula))
        raise AssertionError("unreachable")

    def _log(self, result, item, fidelity, params, reuse_run_id, extra_tags, rendering) -> str:
        start = time.perf_counter()
        directory = None
        try:
            if rendering is not None:
                directory = tempfile.mkdtemp(prefix="chemoscreen-", dir=self.scratch)
                try:
                    for name, data in self._pngs(result, item, rendering).items():
                        Path(directory, name).write_bytes(data)
                except Exception as exc:  # a lost plot must not lose the candidate's metrics
                    self.artifacts_lost += 1
                    extra_tags = {**extra_tags, "artifacts_error": f"{type(exc).__name__}: {exc}"[:500],
                                  tracking.ARTIFACTS_TAG: tracking.ARTIFACTS_MISSING}
            return self._write(result, item, fidelity, params, reuse_run_id, extra_tags, directory)
        finally:
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)
            self.busy_s += time.perf_counter() - start

    def _write(self, result, item, fidelity, params, reuse_run_id, extra_tags, directory) -> str:
        metrics = {k: float(item.descriptors[k]) for k in DESCRIPTOR_METRICS if k in item.descriptors}
        for key, value in result.metrics.items():
            # the simulator's own voltage (under current) must not overwrite the open-circuit descriptor
            metrics[f"sim_{key}" if key in DESCRIPTOR_METRICS else key] = value
        metrics["sim_seconds"] = result.seconds
        artifact_dir = directory if directory is not None and any(Path(directory).iterdir()) else None
        # FINISHED is written after the artifacts, so "logged" is true of every FINISHED run that carries it
        logged = "logged" if artifact_dir else ("none" if self.artifacts else "off")
        tags = {"candidate_id": result.candidate_id, "formula": item.formula, "fidelity": fidelity,
                "composition_id": item.composition_id, tracking.ARTIFACTS_TAG: logged, **extra_tags}
        if result.status != "FINISHED":
            tags["failure_reason"] = result.reason[:5000]
        from candidates.space import chemist_formula

        display = chemist_formula(item.formula)  # the run name a person reads; tag formula stays pymatgen's
        run_name = display if fidelity == "periodic" else f"{display} ({fidelity})"
        return tracking.log_child_run(
            self.client, self.experiment_id, self.parent_run_id, run_name=run_name,
            reuse_run_id=reuse_run_id, tags=tags, params=params, metrics=metrics,
            status=result.status, artifact_dir=artifact_dir, history=getattr(result, "draws", None))

    def close(self) -> None:
        self.pool.shutdown(wait=True)
