"""Writing finished candidates to MLflow while the actors keep simulating (the sweep driver's logger).

PNGs are drawn by a few :class:`screening.plots.Renderer` actors (restarted when they die, a lost drawing
asked again); MLflow calls run in logging threads. Used by :mod:`screening.driver`.
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


class RunLogger:
    """Writes finished candidates to MLflow while the actors keep simulating.

    PNGs are drawn by a few :class:`screening.plots.Renderer` actors that reserve no CPU (matplotlib
    holds the GIL for a few hundred ms per candidate, which would serialise the driver); the MLflow calls
    run in logging threads: one for a SQLite store (it serialises writes anyway), four for a server.
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
        self.renderers: list = []
        self.rendered = 0
        self.artifacts_lost = 0

    def _renderer(self):
        """The next renderer, round robin (started on first use)."""
        if not self.renderers:
            import ray

            from screening.plots import Renderer

            count = max(1, min(4, (os.cpu_count() or 2) // 4))
            remote = ray.remote(num_cpus=0, max_restarts=self.max_retries, max_task_retries=0)(Renderer)
            self.renderers = [remote.remote() for _ in range(count)]
        renderer = self.renderers[self.rendered % len(self.renderers)]
        self.rendered += 1
        return renderer

    def submit(self, result: CandidateResult, item: SweepItem, *, fidelity: str, params: dict,
               reuse_run_id: str | None, extra_tags: Mapping[str, str]) -> Future:
        rendering = None
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
                rendering = self._renderer().render.remote(result.snapshots, result.voltage_curve,
                                                           item.formula)
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
