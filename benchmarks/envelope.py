"""Envelope speed and grid convergence of the driving stress (issue 15).

Prints two tables:
1. speed: one batched tensor program over candidates × sizes × rates × seeds
   (``mechanics.screen.simulate_conditions``) against the same simulations as one call per
   (size, rate, seed) batched over candidates only (``simulate_candidates``, the sweep's path), with the
   ratio, and the demo's 35 × 3 × 7 × 2 × seeds envelope extrapolated from the batched rate (estimated:
   the per-element cost depends on the rate, slow rates take more steps).
2. convergence: the seed quantile of the flaw-averaged driving stress on N² and (2N)² grids and its
   relative change (the issue asks ≤ 10 %).

    PYTHONPATH=. python benchmarks/envelope.py --fidelity periodic --grid 16 --rates 5,50 --sizes 50,200
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time
from pathlib import Path

# benchmarks/mechanics.py would shadow the mechanics package when this script's folder leads sys.path
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402

from mechanics.parameters.lfp import lfp_params  # noqa: E402
from mechanics.screen import ScreeningSettings, simulate_candidates, simulate_conditions  # noqa: E402


def _numbers(text):
    return tuple(float(x) for x in text.split(","))


def _candidates(n: int):
    import candidates

    space = candidates.olivine_space(metals=("Fe", "Mn"), step=0.5)[:n]
    return [candidates.properties(c, "literature").params for c in space] if space else [lfp_params()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fidelity", default="periodic")
    ap.add_argument("--grid", type=int, default=16)
    ap.add_argument("--rates", type=_numbers, default=(5.0, 50.0))
    ap.add_argument("--sizes", type=_numbers, default=(50.0, 200.0))
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--candidates", type=int, default=2)
    ap.add_argument("--quantile", type=float, default=0.75)
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    params = _candidates(args.candidates)
    settings = ScreeningSettings(grid_points=args.grid, fidelity=args.fidelity, direction="charge",
                                 observations=10, snapshots=0)
    conditions = list(itertools.product(args.sizes, args.rates, range(args.seeds)))
    elements = [(p, c) for c in conditions for p in params]
    n = len(elements)

    if not args.skip_speed:
        t0 = time.perf_counter()
        simulate_conditions([p for p, _ in elements], settings, c_rates=[c[1] for _, c in elements],
                            sizes_nm=[c[0] for _, c in elements], seeds=[c[2] for _, c in elements])
        batched = time.perf_counter() - t0
        t0 = time.perf_counter()
        for size, rate, seed in conditions:
            simulate_candidates(params, dataclasses.replace(settings, particle_size_nm=size, c_rate=rate,
                                                            seed=seed))
        looped = time.perf_counter() - t0
        demo = 35 * 3 * 7 * 2 * args.seeds
        print(f"| path ({args.fidelity}, {args.grid}², rates {args.rates}, sizes {args.sizes}) | "
              f"simulations | wall s | ratio |")
        print("|---|---|---|---|")
        print(f"| one call per (size, rate, seed), batched over candidates | {n} | {looped:.1f} | 1.00 |")
        print(f"| one batched call (candidates × sizes × rates × seeds) | {n} | {batched:.1f} | "
              f"{looped / batched:.2f} |")
        print(f"| demo envelope 35 × 3 × 7 × 2 × {args.seeds} (estimated from the batched rate) | {demo} | "
              f"{demo * batched / n:.0f} | – |")

    print()
    print(f"| size nm | C-rate | driving MPa at {args.grid}² | at {2 * args.grid}² | change |")
    print("|---|---|---|---|---|")
    lfp = params[0]
    for size, rate in itertools.product(args.sizes, args.rates):
        values = []
        for grid in (args.grid, 2 * args.grid):
            s = dataclasses.replace(settings, grid_points=grid)
            res = simulate_conditions([lfp] * args.seeds, s, c_rates=[rate] * args.seeds,
                                      sizes_nm=[size] * args.seeds, seeds=list(range(args.seeds)))
            values.append(float(np.quantile([r.metrics["driving_stress_MPa"] for r in res], args.quantile)))
        change = abs(values[1] - values[0]) / values[1]
        print(f"| {size:g} | {rate:g} | {values[0]:.0f} | {values[1]:.0f} | {100 * change:.1f} % |")


if __name__ == "__main__":
    main()
