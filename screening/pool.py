"""The Ray side of a sweep: simulator actors, batches, back-pressure and resubmission of lost batches.

Used by :mod:`screening.driver`; Ray is imported inside the functions, so importing this module is light.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from screening.actors import CandidateResult, SimulatorActor

if TYPE_CHECKING:  # annotations only: the driver imports this module
    from screening.driver import SweepItem, SweepOptions


class ActorPool:
    """Actors holding the law on their device; batches go to the least-loaded one, two in flight each."""

    def __init__(self, law, options: SweepOptions, tracking_uri: str, metric_fn: Callable | None,
                 work_items: int) -> None:
        import ray

        resources = ray.cluster_resources()
        gpus = float(resources.get("GPU", 0.0))
        self.on_gpu = gpus > 0 and options.gpus_per_actor > 0
        if self.on_gpu:
            capacity = int(gpus / options.gpus_per_actor + 1e-9)
            placement = {"num_gpus": options.gpus_per_actor, "num_cpus": 1}
            threads = 1
        else:
            capacity = int(float(resources.get("CPU", 1.0)) / options.cpus_per_actor + 1e-9)
            placement = {"num_gpus": 0, "num_cpus": options.cpus_per_actor}
            threads = max(1, int(options.cpus_per_actor))
        count = options.actors or max(1, capacity)
        count = max(1, min(count, work_items))
        env = {"MLFLOW_TRACKING_URI": tracking_uri, "OMP_NUM_THREADS": str(threads)}
        # no task retries inside Ray: a call on a dead actor fails at once and the sweep resubmits the
        # batch to a live actor (Ray would hold it for a restart that may never find resources)
        remote = ray.remote(SimulatorActor).options(
            **placement, max_restarts=options.max_retries, max_task_retries=0,
            runtime_env={"env_vars": env})
        _ship_by_value(metric_fn)
        # the law goes to the object store once; actors receive the reference (boxed) with each batch
        self.law_box = [ray.put(law)]
        self.actors = [remote.remote(threads, metric_fn, options.simulator) for _ in range(count)]
        self.in_flight = [0] * count
        # wait until every actor holds its simulator: a worker that cannot import it fails here, once
        self.devices = ray.get([actor.describe.remote() for actor in self.actors])

    def batch_size(self, options: SweepOptions, work_items: int) -> int:
        """``options.batch_size``, else one batch per actor up to 256 (GPU) or 64 (CPU) candidates.

        A time step of a small batch costs about the same as of a large one (kernel launches on a GPU,
        Python overhead per step on a CPU), so fewer, larger batches win until the device is full.
        """
        if options.batch_size:
            return int(options.batch_size)
        return max(1, min(256 if self.on_gpu else 64, math.ceil(work_items / len(self.actors))))

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)


def _ship_by_value(function: Callable | None) -> None:
    """Make Ray pickle a user function's module by value when workers may not be able to import it.

    A metric function defined in a script, a notebook or a test module lives in a module that exists
    only in the driver's ``sys.path``; functions from installed packages travel by reference as usual.
    """
    import sys
    import sysconfig

    module = sys.modules.get(getattr(function, "__module__", None) or "")
    if function is None or module is None or module.__name__ == "__main__":
        return
    path = getattr(module, "__file__", None) or ""
    installed = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    ours = module.__name__.split(".")[0] in ("mechanics", "inverse", "candidates", "screening")
    if ours or any(path.startswith(p) for p in installed):
        return
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(module)


def simulate(pool: ActorPool, work: list[tuple[str, SweepItem]], settings, options: SweepOptions,
              on_result: Callable[[CandidateResult], None],
              still_todo: Callable[[list], list] | None = None) -> None:
    """Run ``work`` = [(candidate_id, item)] through the pool; call ``on_result`` for each candidate.

    An actor whose call fails with ``RayActorError`` is set aside and pinged (``describe``); it gets
    batches again once the ping returns (Ray restarted it). When every actor is set aside and none can
    come back (all pings failed), the remaining batches are reported FAILED instead of waiting forever.
    ``still_todo(batch)`` drops, just before a batch is submitted, candidates no longer to be done
    (another driver of the same sweep finished them); they get no ``on_result``.
    """
    import ray
    from ray.exceptions import RayActorError

    size = pool.batch_size(options, len(work))
    queue = deque((work[i:i + size], 0) for i in range(0, len(work), size))
    settings_ref = ray.put(settings)
    pending: dict = {}
    pings: dict = {}  # ping ref -> slot of an actor set aside
    lost: set[int] = set()  # slots whose actor failed a ping: restarts exhausted
    n_slots = len(pool.actors)

    def set_aside(slot: int) -> None:
        if slot not in pings.values() and slot not in lost:
            pings[pool.actors[slot].describe.remote()] = slot

    while queue or pending:
        usable = [i for i in range(n_slots) if i not in pings.values() and i not in lost]
        if not usable and not pings and not pending:
            while queue:
                batch, attempt = queue.popleft()
                for cid, _ in batch:
                    on_result(CandidateResult(cid, "FAILED", "every simulator actor died"))
            break
        while queue and usable and min(pool.in_flight[i] for i in usable) < 2:
            batch, attempt = queue.popleft()
            batch = still_todo(batch) if still_todo is not None else batch
            if not batch:
                continue
            slot = min(usable, key=lambda i: pool.in_flight[i])
            ref = pool.actors[slot].run_batch.remote([(cid, it.params) for cid, it in batch], settings_ref,
                                                     pool.law_box)
            pending[ref] = (batch, attempt, slot)
            pool.in_flight[slot] += 1
        if not pending and not pings:
            continue  # every queued batch was done elsewhere
        ready, _ = ray.wait([*pending, *pings], num_returns=1)
        for ref in ready:
            if ref in pings:
                slot = pings.pop(ref)
                try:
                    ray.get(ref)  # the actor is back
                except RayActorError:
                    lost.add(slot)
                continue
            batch, attempt, slot = pending.pop(ref)
            pool.in_flight[slot] -= 1
            try:
                results = ray.get(ref)
            except RayActorError as exc:
                set_aside(slot)
                if attempt < options.max_retries:
                    queue.append((batch, attempt + 1))
                    continue
                results = [CandidateResult(cid, "FAILED", f"actor died {attempt + 1} times: {exc}")
                           for cid, _ in batch]
            except Exception as exc:  # the actor raised outside the per-candidate guard
                results = [CandidateResult(cid, "FAILED", f"{type(exc).__name__}: {exc}") for cid, _ in batch]
            for result in results:
                on_result(result)
