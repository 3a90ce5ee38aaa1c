"""Active learning against the exhaustive grid: how many simulations grid, random and bayes need to reach
98 % of the grid's hypervolume.

    python benchmarks/active_learning.py                 # table + benchmarks/active_learning_traces.png
    python benchmarks/active_learning.py --seeds 5 --proposal-batch 16

1. The oracle: every composition of the 0.05 grid of Fe/Mn/Co/Ni (1,771) that is feasible in the
   default 4.5 V window is simulated once at cheap settings (``ScreeningSettings(grid_points=16,
   observations=8, snapshots=2, soc_step_max=0.02)``, periodic, Vegard's law, literature properties;
   the simulator the actors run, in this process) and cached in ``benchmarks/.cache/`` (gitignored),
   keyed by the settings. The closed-form objectives come from :func:`screening.active.build_pool`.
2. The strategies run on that table (a lookup instead of a simulation) through the same
   :func:`screening.active.next_batch` the sweep uses, with the default objective set
   (usable energy, peak tensile stress, |volume change|, cost, supply risk), until they reach the
   target or the pool is exhausted; grid once, random and bayes for ``--seeds`` proposal seeds (bayes
   stops at random's median: beyond it, it has lost).
3. Hypervolume: every objective normalised by its range over the grid, reference point −0.1 in each;
   estimated on 2^18 scrambled Sobol points in [−0.1, 1]^5 (the same points for every run, so each
   run's fraction of the grid's hypervolume is a ratio of counts over one point set).

Prints one table (simulations to reach the target: median and range over the seeds) and writes the
traces as a PNG. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

# benchmarks/mechanics.py would shadow the mechanics package when this script's folder leads sys.path
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

METALS = ("Fe", "Mn", "Co", "Ni")
STEP = 0.05
SETTINGS = {"grid_points": 16, "observations": 8, "snapshots": 2, "soc_step_max": 0.02}
CACHE = HERE / ".cache"


def oracle(pool, batch: int = 64) -> np.ndarray:
    """(m, s) simulated objectives (oriented) of every pool point, cached on disk; NaN for a failed one."""
    import torch

    import candidates
    from mechanics.screen import ScreeningSettings, simulate_candidates
    from screening.objectives import OBJECTIVES

    settings = ScreeningSettings(**SETTINGS)
    key = hashlib.sha256(json.dumps({"settings": dict(sorted(vars(settings).items())), "ids": pool.space_ids,
                                     "simulated": pool.simulated}, default=str).encode()).hexdigest()[:12]
    path = CACHE / f"active_learning_{key}.npz"
    if path.exists():
        return np.load(path, allow_pickle=False)["values"]
    torch.set_num_threads(2)
    values = np.full((len(pool.candidates), len(pool.simulated)), np.nan)
    start = time.perf_counter()
    for first in range(0, len(pool.candidates), batch):
        chunk = pool.candidates[first:first + batch]
        params = [candidates.properties(c).params for c in chunk]
        for i, result in enumerate(simulate_candidates(params, settings)):
            if result.status == "FINISHED":
                values[first + i] = [OBJECTIVES[n].direction * result.metrics[OBJECTIVES[n].column]
                                     for n in pool.simulated]
        print(f"  oracle: {first + len(chunk)}/{len(pool.candidates)} simulated, "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, values=values, seconds=time.perf_counter() - start)
    return values


def run(strategy, pool, truth: np.ndarray, target_count: int, u: np.ndarray, grid_scale, stop_at: float,
        cap: int | None = None):
    """Simulations in proposal order with the dominated count after each; stops past ``stop_at`` or
    after ``cap`` simulations."""
    from screening.active import next_batch, scale_of

    order: list[int] = []
    counts: list[int] = []
    covered = np.zeros(len(u), dtype=bool)
    scale, k = None, 0
    while len(order) < len(pool.candidates):
        values = truth[order]
        batch = next_batch(strategy, pool, order, values, scale, k, size=len(pool.candidates) - len(order))
        if not batch:
            break
        for index in batch:
            point = grid_scale(np.concatenate([truth[index], pool.exact[index]]))
            if np.isfinite(point).all():
                covered |= (u <= point).all(axis=1)
            order.append(index)
            counts.append(int(covered.sum()))
        if k == 0:
            scale = scale_of(pool, truth[order])
        k += 1
        if counts[-1] >= stop_at * target_count or (cap is not None and len(order) >= cap):
            break
    return order, np.array(counts) / target_count


def main() -> None:
    import candidates
    from screening.active import REFERENCE, Scale, build_pool
    from screening.objectives import ObjectiveSpec
    from screening.strategies import StrategySettings, dominated, sobol_points

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--proposal-batch", type=int, default=16)
    parser.add_argument("--target", type=float, default=0.98)
    parser.add_argument("--png", default=str(HERE.parent / "docs" / "img" / "active_learning_traces.png"))
    args = parser.parse_args()

    spec = ObjectiveSpec()
    space = candidates.olivine_space(METALS, step=STEP)
    pool = build_pool(space, spec)
    print(f"pool: {len(space)} compositions, {len(pool.candidates)} inside the {spec.max_voltage_V:g} V "
          f"window; objectives {', '.join(pool.simulated + pool.exact_names)}", flush=True)
    truth = oracle(pool)
    failed = int((~np.isfinite(truth).all(axis=1)).sum())
    everything = np.hstack([truth, pool.exact])
    ok = np.isfinite(everything).all(axis=1)
    low, high = everything[ok].min(axis=0), everything[ok].max(axis=0)
    grid_scale = Scale(low, high - low)
    ref = np.full(everything.shape[1], REFERENCE)
    u = ref + sobol_points(len(ref), 18, seed=12345) * (1.0 - ref)
    target_count = int(dominated(u, grid_scale(everything[ok])).sum())
    print(f"oracle: {failed} failed simulations; grid front covers {target_count} of {len(u)} Sobol points "
          f"({target_count / len(u):.3f} of the box)", flush=True)

    results: dict[str, list] = {}
    cap = None
    for name in ("grid", "random", "bayes"):
        seeds = [0] if name == "grid" else list(range(args.seeds))
        if name == "bayes":  # past random's median, bayes has lost: stop there (reported as "> cap")
            cap = int(np.median([n or len(pool.candidates) for n, _, _ in results["random"]]))
        for seed in seeds:
            strategy = StrategySettings(name, len(pool.candidates), args.proposal_batch, seed)
            start = time.perf_counter()
            order, fraction = run(strategy, pool, truth, target_count, u, grid_scale, args.target, cap)
            reached = np.flatnonzero(fraction >= args.target)
            needed = int(reached[0]) + 1 if len(reached) else None
            seconds = time.perf_counter() - start
            results.setdefault(name, []).append((needed, fraction, seconds))
            print(f"  {name} seed {seed}: {needed} simulations to {args.target:.0%} ({seconds:.0f} s)",
                  flush=True)

    print()
    print(f"| strategy | runs | simulations to reach {args.target:.0%} of the grid's hypervolume: median "
          "(min–max) | fraction of the feasible pool | strategy time per run (s, median) |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        needed = [n if n is not None else np.inf for n, _, _ in runs]
        median = float(np.median(needed))
        shown = [f"{v:.0f}" if np.isfinite(v) else f"> {cap}" for v in (median, min(needed), max(needed))]
        print(f"| {name} | {len(runs)} | {shown[0]} ({shown[1]}–{shown[2]}) | "
              f"{median / len(pool.candidates):.2f} | {np.median([s for _, _, s in runs]):.1f} |")
    ratio = np.median([n or np.inf for n, _, _ in results["bayes"]]) / np.median(
        [n or np.inf for n, _, _ in results["random"]])
    print(f"\nbayes / random (medians): {ratio:.2f} (target ≤ 0.5); pool {len(pool.candidates)} feasible of "
          f"{len(space)}; batch {args.proposal_batch}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=110)
    colors = {"grid": "0.4", "random": "tab:orange", "bayes": "tab:blue"}
    for name, runs in results.items():
        for i, (_, fraction, _) in enumerate(runs):
            ax.plot(np.arange(1, len(fraction) + 1), fraction, color=colors[name], alpha=0.8, lw=1,
                    label=name if i == 0 else None)
    ax.axhline(args.target, color="k", ls=":", lw=1)
    ax.set_xlabel("simulations")
    ax.set_ylabel("fraction of the grid's hypervolume")
    ax.set_ylim(0, 1.02)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.png)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
