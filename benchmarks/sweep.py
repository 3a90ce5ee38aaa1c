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


if __name__ == "__main__":
    main()
