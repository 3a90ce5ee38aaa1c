"""Envelope speed and grid convergence of the driving stress (issue 15; docs/envelope.md).

Prints two tables:
1. convergence: the envelope's driving stress (flaw a₀ = ``--flaw-fraction``·L, interface length
   λ = ``--interface-fraction``·L, the upper seed quantile ``--quantile`` over ``--seeds`` noise seeds) of
   LiFePO4 on N² and (2N)² grids and its relative change (the issue asks ≤ 10 %), with the seed mean and
   the seed spread beside it; the noise keeps its intensity per platelet area
   (``--noise-reference-grid``, the envelope's 32; 0 for the per-cell noise of the sweep);
2. speed (unless ``--skip-speed``): per scanned rate, one batched tensor program over ``--candidates``
   candidates × seeds (``mechanics.screen.simulate_conditions``, the envelope's path): its wall time and
   steps, and the demo's 35 × 3 × 7 × 2 envelope extrapolated from them (sizes above
   λ_material/interface_fraction run the same scale-free problem and share one simulation, so sizes do not
   multiply the cost; directions do). The extrapolation is an estimate, linear in the candidates.
   ``--baseline-corrections K`` runs every rate a second time with K corrector iterations per step (0: the
   plain stabilised step, the integrator before correctors) in the same process, and prints the speed-up
   of the settings' own count (``--corrections``, default the screening's) and the driving stress of both
   (``--baseline-rates``: only at those rates); ``--baseline-solver fourier`` runs the baseline's
   free-platelet solves on the Fourier path, eager (the solver before the fused real-space path);
   ``--baseline-events synchronous`` steps the baseline's batch from event to event together (before
   per-element events: each observation waited for the batch's slowest element). The
   cost per element falls with the elements per tensor program (``--candidates`` × ``--seeds``) up to
   about a hundred on 2 cores; the envelope's batches hold
   up to ``EnvelopeSettings.batch_elements`` (128), so ``--candidates 16 --seeds 8`` is its real batch.

    PYTHONPATH=. python benchmarks/envelope.py --grid 32 --rates 5 --seeds 8 --skip-speed
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

from mechanics import screen  # noqa: E402
from mechanics.elasticity import particle  # noqa: E402
from mechanics.parameters.lfp import lfp_params  # noqa: E402
from mechanics.screen import ScreeningSettings, simulate_conditions  # noqa: E402
from screening.envelope import EnvelopeSettings, model_parameters  # noqa: E402

DEFAULT = EnvelopeSettings()
_SOLVER = {"auto": "default (fused real space from 2¹⁸ element-cells)", False: "Fourier path, eager"}
_EVENTS = {False: "per element", True: "synchronous"}


def _numbers(text):
    return tuple(float(x) for x in text.split(","))


def _candidates(n: int):
    import candidates

    space = candidates.olivine_space(metals=("Fe", "Mn", "Co", "Ni"), step=0.25)[:n]
    return [candidates.properties(c, "literature").params for c in space]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", type=int, default=32)
    ap.add_argument("--rates", type=_numbers, default=(5.0,))
    ap.add_argument("--sizes", type=_numbers, default=(200.0,))
    ap.add_argument("--seeds", type=int, default=DEFAULT.seeds)
    ap.add_argument("--quantile", type=float, default=DEFAULT.seed_quantile)
    ap.add_argument("--flaw-fraction", type=float, default=DEFAULT.flaw_fraction)
    ap.add_argument("--interface-fraction", type=float, default=DEFAULT.interface_fraction)
    ap.add_argument("--direction", default="charge")
    ap.add_argument("--observations", type=int, default=30)
    ap.add_argument("--candidates", type=int, default=2)
    ap.add_argument("--noise-reference-grid", type=int, default=DEFAULT.noise_reference_grid)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-convergence", action="store_true")
    ap.add_argument("--corrections", type=int, default=ScreeningSettings().corrections)
    ap.add_argument("--baseline-corrections", type=int, default=None)
    ap.add_argument("--baseline-solver", choices=("same", "fourier"), default="same",
                    help="'fourier': the baseline's free-platelet solves run on the Fourier path, never "
                         "fused by torch.compile (mechanics.elasticity.particle.COMPILE = False)")
    ap.add_argument("--baseline-events", choices=("same", "synchronous"), default="same",
                    help="'synchronous': the baseline's batch steps from event to event together, waiting "
                         "at each observation for its slowest element (mechanics.screen.SYNCHRONOUS_EVENTS)")
    ap.add_argument("--baseline-rates", type=_numbers, default=None,
                    help="the rates at which the baseline runs too (default: all of --rates)")
    args = ap.parse_args()
    settings = ScreeningSettings(grid_points=args.grid, fidelity="particle", direction=args.direction,
                                 observations=args.observations, snapshots=0, corrections=args.corrections)
    seeds = list(range(args.seeds))
    noise_ref = args.noise_reference_grid or None

    if not args.skip_convergence:
        print(f"| size nm | C-rate | N | driving MPa (q{args.quantile:g}, {args.seeds} seeds) at N² "
              f"| at (2N)² "
              f"| change | seed mean N / 2N | seed min–max N / 2N |")
        print("|---|---|---|---|---|---|---|---|")
        for size, rate in itertools.product(args.sizes, args.rates):
            p = model_parameters(lfp_params(), size, args.interface_fraction)
            runs = []
            for grid in (args.grid, 2 * args.grid):
                s = dataclasses.replace(settings, grid_points=grid, particle_size_nm=size, c_rate=rate)
                res = simulate_conditions([p] * args.seeds, s, seeds=seeds, flaw_fraction=args.flaw_fraction,
                                          noise_reference_grid=noise_ref)
                runs.append(np.array([r.metrics["driving_stress_MPa"] for r in res]))
            q = [float(np.quantile(v, args.quantile)) for v in runs]
            change = abs(q[1] - q[0]) / q[1]
            print(f"| {size:g} | {rate:g} | {args.grid} | {q[0]:.0f} | {q[1]:.0f} | {100 * change:.1f} % | "
                  f"{runs[0].mean():.0f} / {runs[1].mean():.0f} | {runs[0].min():.0f}–{runs[0].max():.0f} / "
                  f"{runs[1].min():.0f}–{runs[1].max():.0f} |", flush=True)

    if not args.skip_speed:
        params = _candidates(args.candidates)
        elements = [(p, s) for p in params for s in seeds]
        main_variant = (args.corrections, "auto", False)
        variants = [main_variant]
        if args.baseline_corrections is not None or args.baseline_solver == "fourier" \
                or args.baseline_events == "synchronous":
            k = args.corrections if args.baseline_corrections is None else args.baseline_corrections
            variants.append((k, False if args.baseline_solver == "fourier" else "auto",
                             args.baseline_events == "synchronous"))
        print()
        print(f"| C-rate | elements ({len(params)} candidates × {args.seeds} seeds) | correctors "
              f"| platelet solver | events | steps | wall s | s per element "
              f"| driving MPa (q{args.quantile:g}) "
              f"| baseline ÷ this |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        total = dict.fromkeys(variants, 0.0)
        for rate in args.rates:
            walls = {}
            for v in variants:
                k, compile_mode, synchronous = v
                skip = args.baseline_rates is not None and rate not in args.baseline_rates
                if v != main_variant and skip:
                    continue
                particle.COMPILE = compile_mode
                screen.SYNCHRONOUS_EVENTS = synchronous
                s = dataclasses.replace(settings, c_rate=rate, particle_size_nm=max(args.sizes),
                                        corrections=k)
                t0 = time.perf_counter()
                res = simulate_conditions([model_parameters(p, max(args.sizes), args.interface_fraction)
                                           for p, _ in elements], s, seeds=[seed for _, seed in elements],
                                          flaw_fraction=args.flaw_fraction, noise_reference_grid=noise_ref)
                walls[v] = time.perf_counter() - t0
                steps = max(r.metrics["steps"] for r in res)
                failed = sum(r.status != "FINISHED" for r in res)
                driving = float(np.quantile([r.metrics["driving_stress_MPa"] for r in res], args.quantile))
                total[v] += walls[v] / len(elements)
                ratio = "" if v == main_variant else f"{walls[v] / walls[main_variant]:.2f}×"
                note = f" ({failed} FAILED)" if failed else ""
                print(f"| {rate:g} | {len(elements)} | {k} | {_SOLVER[compile_mode]} | "
                      f"{_EVENTS[synchronous]} | {steps:.0f}{note} | "
                      f"{walls[v]:.1f} | {walls[v] / len(elements):.2f} | {driving:.0f} | {ratio} |",
                      flush=True)
            particle.COMPILE = "auto"
            screen.SYNCHRONOUS_EVENTS = False
        demo = 35 * 2 * args.seeds
        for v in variants:
            if v != main_variant and args.baseline_rates is not None \
                    and set(args.rates) - set(args.baseline_rates):
                continue  # the baseline did not run every rate: no estimate of its whole envelope
            print(f"| demo envelope 35 candidates × rates {args.rates} × 2 directions × {args.seeds} seeds "
                  f"(sizes shared), **estimated** | {demo * len(args.rates)} | {v[0]} | {_SOLVER[v[1]]} | "
                  f"{_EVENTS[v[2]]} | | "
                  f"{demo * total[v]:.0f} | | | "
                  f"{'' if v == main_variant else f'{total[v] / total[main_variant]:.2f}×'} |")


if __name__ == "__main__":
    main()
