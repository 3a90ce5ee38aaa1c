"""Ray actors that hold a loaded simulator on their device and simulate batches of candidates.

One actor per device (or per fraction of a GPU): the eigenstrain law is moved to the device once, in
the constructor, and every call runs a whole batch of candidates as one tensor program
(:func:`mechanics.screen.simulate_candidates`), because one candidate alone leaves a GPU launch-bound.
Simulations are pure functions of their inputs, so Ray may rerun a call on a restarted actor.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

MAX_SNAPSHOT_PIXELS = 128


@dataclass(frozen=True)
class CandidateResult:
    """What an actor sends back for one candidate (plain numpy, no tensors).

    metrics: simulator metrics plus the user's extra metrics (float).
    voltage_curve: (n, 2) [Li fraction X, voltage V].
    snapshots: name -> (S, H', W') fields strided down to at most 128 pixels a side, plus "soc" (S,).
    status: "FINISHED" or "FAILED"; reason: why it failed ("" otherwise).
    seconds: wall time of the batch divided by its size.
    """

    candidate_id: str
    status: str
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)
    voltage_curve: np.ndarray | None = None
    snapshots: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0


def _thin(array: np.ndarray) -> np.ndarray:
    """Stride the last two axes of a field down to at most MAX_SNAPSHOT_PIXELS (plots need no more)."""
    array = np.asarray(array)
    if array.ndim < 2:
        return array
    step = max(1, math.ceil(max(array.shape[-2:]) / MAX_SNAPSHOT_PIXELS))
    return np.ascontiguousarray(array[..., ::step, ::step])


def _to_numpy(value):
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def package_result(candidate_id: str, result, metric_fn: Callable | None, seconds: float) -> CandidateResult:
    """Turn a :class:`mechanics.screen.ScreeningResult` into a :class:`CandidateResult`.

    A non-finite ranking metric turns a FINISHED result into FAILED (a blow-up the simulator did not
    catch); an exception in the user's ``metric_fn`` fails that candidate only.
    """
    status, reason = result.status, result.reason
    metrics = {k: float(v) for k, v in result.metrics.items()}
    if status == "FINISHED" and metric_fn is not None:
        try:
            extra = metric_fn(result)
            metrics.update({str(k): float(v) for k, v in dict(extra).items()})
        except Exception as exc:  # the user's code: report it on the candidate, keep the sweep going
            status, reason = "FAILED", f"metric_fn raised {type(exc).__name__}: {exc}"
    # a non-finite ranking metric means the run blew up; other non-finite metrics (an interface angle
    # of a particle that never phase-separated) are simply absent
    required = ("peak_tensile_stress_MPa", "peak_elastic_energy_MJ_m3", "phase_separation")
    bad = sorted(k for k in required if k in metrics and not math.isfinite(metrics[k]))
    if status == "FINISHED" and bad:
        status, reason = "FAILED", f"non-finite metrics {bad}"
    metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
    snapshots = {k: _thin(_to_numpy(v)) for k, v in (result.snapshots or {}).items()}
    curve = None if result.voltage_curve is None else _to_numpy(result.voltage_curve)
    return CandidateResult(candidate_id, status, reason, metrics, curve, snapshots, seconds)


class SimulatorActor:
    """Holds the eigenstrain law on one device and simulates batches of candidates.

    Wrapped with ``ray.remote`` by :mod:`screening.driver`; usable directly as a plain object too (the
    benchmark times the simulator through it without Ray).
    """

    def __init__(self, num_threads: int = 1, metric_fn: Callable | None = None,
                 simulator: str = "mechanics.screen:simulate_candidates") -> None:
        import importlib

        import torch

        torch.set_num_threads(max(1, int(num_threads)))
        module, _, name = simulator.partition(":")
        self.simulate = getattr(importlib.import_module(module), name)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.metric_fn = metric_fn
        self.law = None
        self._law_key: object = None

    def _load_law(self, law_box: Sequence) -> None:
        """Fetch the law once per object (``law_box`` = [ObjectRef] or [module]) and keep it on the device.

        The law travels by reference (``ray.put`` once in the driver) inside a list, so Ray does not
        resolve it on every call and a restarted actor fetches it again from the driver's object store.
        """
        import ray

        (law,) = law_box
        by_reference = isinstance(law, ray.ObjectRef)
        key = law.hex() if by_reference else id(law)
        if key == self._law_key:
            return
        if by_reference:
            law = ray.get(law)
        self.law = None if law is None else law.to(self.device).eval()
        self._law_key = key

    def describe(self) -> dict:
        import os

        return {"pid": os.getpid(), "device": str(self.device)}

    def run_batch(self, batch: Sequence[tuple[str, object]], settings, law_box: Sequence = (None,)
                  ) -> list[CandidateResult]:
        """Simulate ``batch`` = [(candidate_id, MaterialParams), ...] under ``settings`` in one program.

        If the batched program raises, the batch is rerun one candidate at a time so that only the
        candidate that breaks it is marked FAILED.
        """
        self._load_law(law_box)
        ids = [cid for cid, _ in batch]
        params = [p for _, p in batch]
        start = time.perf_counter()
        try:
            results = self.simulate(params, settings, self.law, self.device)
        except Exception:
            return [self._run_one(cid, p, settings) for cid, p in batch]
        seconds = (time.perf_counter() - start) / max(1, len(batch))
        return [package_result(cid, r, self.metric_fn, seconds) for cid, r in zip(ids, results, strict=True)]

    def _run_one(self, cid: str, params, settings) -> CandidateResult:
        start = time.perf_counter()
        try:
            (result,) = self.simulate([params], settings, self.law, self.device)
        except Exception as exc:
            return CandidateResult(cid, "FAILED", f"simulation raised {type(exc).__name__}: {exc}",
                                   seconds=time.perf_counter() - start)
        return package_result(cid, result, self.metric_fn, time.perf_counter() - start)
