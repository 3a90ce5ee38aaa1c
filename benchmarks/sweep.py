"""Sweep throughput against the simulator alone, in the same run: what Ray + MLflow cost.

    python benchmarks/sweep.py                      # 256 candidates on a GPU, 32 on CPU
    python benchmarks/sweep.py --candidates 64 --grid-points 32 --batch-size 32

Three timings of the same candidates, settings and batch size:

- ``simulator``: :class:`screening.actors.SimulatorActor` called in this process, batch after batch (the
  same code the actors run, without Ray or MLflow);
- ``sweep (1 actor)``: the whole sweep with one actor on the same device and threads, logging every
  candidate to a fresh SQLite store; ``loop`` counts from the first submitted batch to the last logged
  run (the steady-state cost), ``total`` adds ``ray.init``, actor start and the final ranking;
- the same with artifacts (three PNGs per candidate) switched off.

``loop`` excludes the fixed costs (``ray.init``, actor start, final ranking), printed apart. Overhead =
(sweep loop − simulator) / simulator; ``loop / actor busy`` divides the loop by the time the sweep's own
actor spent simulating (its batches' wall time, measured in the actor during the same sweep, so a load
that slows the machine slows both); the target is ≤ 1.1. ``logging ms/candidate`` is the driver's
logging thread's busy time, which overlaps the simulations. Prints a table; nothing is asserted.

A second table times the two parts of the logging path on (up to 16 of) the simulated candidates, each
pair interleaved in this process (so a load that comes and goes hits both alike): the three PNGs of a
candidate drawn on fresh figures against a :class:`screening.plots.Renderer` that redraws its figures
(CPU ms, which is what competes with the simulators), and one child run written to SQLite with the
default rollback journal against write-ahead logging (:func:`screening.runlog.quicker_sqlite_commits`;
wall ms, mostly waiting for ``fsync``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/mechanics.py would shadow the mechanics package when this script's folder leads sys.path
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))


def _space(n: int):
    import candidates

    step = 0.1 if n > 84 else 0.2  # Fe/Mn/Co/Ni: 286 compositions at 0.1, 56 at 0.2
    space = candidates.olivine_space(metals=("Fe", "Mn", "Co", "Ni"), step=step)
    if n > len(space):
        space = candidates.olivine_space(metals=("Fe", "Mn", "Co", "Ni"), step=0.05)
    return space[:n]


PARTS_CANDIDATES = 16  # candidates the parts table draws and logs (twice each)


def _parts(results, items, settings) -> None:
    """Rendering and child-run logging per candidate: before (fresh figures, rollback journal) and after."""
    from chemoscreen import store
    from screening import tracking
    from screening.driver import _settings_dict
    from screening.plots import Renderer, render_candidate
    from screening.runlog import quicker_sqlite_commits

    results = results[:PARTS_CANDIDATES]
    finished = [r for r in results if r.status == "FINISHED"]
    renderer = Renderer()
    renderer.render(finished[0].snapshots, finished[0].voltage_curve, "warm-up")
    render_candidate(finished[0].snapshots, finished[0].voltage_curve, "warm-up")
    cpu = {"fresh": 0.0, "redrawn": 0.0}
    for r in finished:
        for name, draw in (("fresh", render_candidate), ("redrawn", renderer.render)):
            start = time.process_time()
            draw(r.snapshots, r.voltage_curve, "LiFePO4")
            cpu[name] += time.process_time() - start
    by_id = {it.composition_id: it for it in items}
    wall = {"rollback journal": 0.0, "write-ahead log": 0.0}
    with tempfile.TemporaryDirectory(prefix="chemoscreen-bench-") as tmp:
        clients = {}
        for name in wall:
            uri = f"sqlite:///{Path(tmp) / name.replace(' ', '-')}.db"
            client = store.open_store(uri)
            if name == "write-ahead log":
                quicker_sqlite_commits(client)
            experiment = store.ensure_experiment(client, "bench", uri)
            clients[name] = (client, experiment, client.create_run(experiment).info.run_id)
        params = {f"settings.{k}": v for k, v in _settings_dict(settings).items()}
        for r in results:
            for name, (client, experiment, parent) in clients.items():
                start = time.perf_counter()
                tracking.log_child_run(client, experiment, parent, run_name=by_id[r.candidate_id].formula,
                                       reuse_run_id=None, tags={"candidate_id": r.candidate_id},
                                       params=params, metrics=r.metrics, status=r.status)
                wall[name] += time.perf_counter() - start
    print("\n| part, per candidate | before | after | ratio |")
    print("|---|---|---|---|")
    n, m = len(finished), len(results)
    print(f"| three PNGs, CPU ms (fresh figures → redrawn) | {1e3 * cpu['fresh'] / n:.0f} "
          f"| {1e3 * cpu['redrawn'] / n:.0f} | {cpu['fresh'] / cpu['redrawn']:.2f}× |")
    before, after = wall["rollback journal"], wall["write-ahead log"]
    print(f"| child run on SQLite, wall ms (rollback journal → WAL) | {1e3 * before / m:.0f} "
          f"| {1e3 * after / m:.0f} | {before / after:.2f}× |")


def main() -> None:
    import torch

    from mechanics.screen import ScreeningSettings
    from screening.actors import SimulatorActor
    from screening.api import prepare_items
    from screening.driver import SweepOptions, execute_sweep

    on_gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=256 if on_gpu else 32)
    parser.add_argument("--grid-points", type=int, default=64 if on_gpu else 16)
    parser.add_argument("--batch-size", type=int, default=64 if on_gpu else 8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads of the simulator alone and of the one CPU actor")
    parser.add_argument("--observations", type=int, default=8)
    args = parser.parse_args()

    settings = ScreeningSettings(grid_points=args.grid_points, observations=args.observations, snapshots=3)
    items = prepare_items(_space(args.candidates))
    device = "cuda" if on_gpu else f"cpu ({args.threads} threads)"
    print(f"{len(items)} candidates, grid {args.grid_points}², batch {args.batch_size}, device {device}")

    # simulator alone, same batches
    actor = SimulatorActor(num_threads=args.threads)
    work = [(it.composition_id, it.params) for it in items]
    actor.run_batch(work[:2], settings)  # warm-up (kernels, caches); not counted
    if on_gpu:
        torch.cuda.synchronize()
    start = time.perf_counter()
    results = []
    for i in range(0, len(work), args.batch_size):
        results += actor.run_batch(work[i:i + args.batch_size], settings)
    if on_gpu:
        torch.cuda.synchronize()
    alone = time.perf_counter() - start
    failed = sum(r.status != "FINISHED" for r in results)

    rows = [("simulator alone", alone, alone, 0.0, alone, failed)]
    for artifacts in (True, False):
        with tempfile.TemporaryDirectory(prefix="chemoscreen-bench-") as tmp:
            options = SweepOptions(
                tracking_uri=f"sqlite:///{Path(tmp) / 'mlflow.db'}", num_cpus=args.threads, actors=1,
                cpus_per_actor=float(args.threads), gpus_per_actor=1.0, batch_size=args.batch_size,
                artifacts=artifacts, progress=False, space="benchmark")
            outcome = execute_sweep(items, settings, law=None, model_uri="vegard", options=options)
            loop = outcome.timings["simulate_and_log_s"]
            rows.append((f"sweep, 1 actor, artifacts {'on' if artifacts else 'off'}", loop,
                         outcome.timings["total_s"], outcome.timings["log_busy_s"],
                         outcome.timings["simulate_busy_s"], outcome.failed))
            fixed = {k: round(outcome.timings[k], 1) for k in ("prepare_s", "ray_start_s", "actor_start_s",
                                                               "rank_s")}
            print(f"fixed costs, artifacts {'on' if artifacts else 'off'}: {fixed}")

    print("\n| run | loop (s) | total (s) | candidates/s (loop) | overhead vs simulator "
          "| actor busy (s) | loop / actor busy | logging ms/candidate | failed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, loop, total, busy, simulating, n_failed in rows:
        alone_row = name == "simulator alone"
        overhead = "" if alone_row else f"{100 * (loop - alone) / alone:+.1f} %"
        per = "" if alone_row else f"{1e3 * busy / len(items):.0f}"
        rate = len(items) / loop
        print(f"| {name} | {loop:.2f} | {total:.2f} | {rate:.2f} | {overhead} | {simulating:.2f} "
              f"| {loop / simulating:.2f} | {per} | {n_failed} |")
    _parts(results, items, settings)


if __name__ == "__main__":
    main()
