"""Calibration time of one LFP platelet image set versus its size (issue 4 targets: 512² < 2 min on 2 CPU
cores, < 10 s on a GPU). The image sets are synthesised first (not timed; oversample 1 above 256² to
keep the synthesis short) and calibrated with the defaults (NLM start, 2 joint X/law rounds,
dislocation nuisances, 64 bootstrap replicates) and the synthetic PSFs modelled (10 nm each).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/inverse.py [--sizes 128,256,512]
    python benchmarks/inverse.py --device cuda            # GPU path (matrix-free PCG)
    python benchmarks/inverse.py --device cpu --solver lu,pcg   # both solvers, same run

Columns: the calibration's own stage timings (prepare = registration, denoising and the basis
solves; fit = first robust GCV fit; joint = X/law alternations; uncert = Laplace and bootstrap; disl =
dislocation nuisances of the final fit; CG solves/iters = the PCG path's solves, a batch counting once,
and their iterations).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import sys
import time
from pathlib import Path

# this script is named like the package it measures: keep its own folder off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

from inverse import calibrate, synthesize  # noqa: E402
from inverse.forward import lfp_material  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="128,256,512")
    parser.add_argument("--bootstrap", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    parser.add_argument("--solver", default="auto", help="comma list of auto, lu, pcg (default auto)")
    parser.add_argument("--psf-nm", type=float, default=10.0, help="PSF σ modelled for both modalities")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the timed calibrations and print the 30 costliest functions")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="skip the untimed 48² calibration that first loads the device's kernels")
    args = parser.parse_args()
    misfit = lfp_material().misfit
    print(f"host: {platform.processor() or platform.machine()}, os.cpu_count={os.cpu_count()}, "
          f"torch {torch.__version__} threads={torch.get_num_threads()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    header = (f"{'size':>6} {'pixels':>8} {'solver':>6} {'device':>26} {'prepare':>8} {'fit':>6} "
              f"{'joint':>6} {'uncert':>7} {'report':>7} {'total s':>8} {'slope_a err':>11} "
              f"{'slope_c err':>11} {'disl':>5} {'CG solves/iters':>16}")
    print(header)
    print("-" * len(header))
    if args.warmup:  # CUDA context, cuFFT plans and kernel loading: a one-off cost per process
        calibrate(synthesize(size_px=48, seed=0), n_bootstrap=2, device=args.device,
                  solver=args.solver.split(",")[0])
    profiler = cProfile.Profile() if args.profile else None
    for n in (int(s) for s in args.sizes.split(",")):
        images = synthesize(size_px=n, oversample=2 if n <= 256 else 1, seed=1,
                            pixel_size_nm=20.0 * 96 / n)
        for solver in args.solver.split(","):
            start = time.perf_counter()
            if profiler:
                profiler.enable()
            cal = calibrate(images, n_bootstrap=args.bootstrap, device=args.device, solver=solver,
                            strain_psf_nm=args.psf_nm, composition_psf_nm=args.psf_nm)
            if profiler:
                profiler.disable()
            total = time.perf_counter() - start
            t = cal.fit.timings_s
            ea = cal.vegard.slope_a / misfit[0] - 1
            ec = cal.vegard.slope_c / misfit[2] - 1
            cg = (f"{cal.fit.pcg_solves}/{cal.fit.pcg_iterations}" if cal.fit.pcg_solves is not None
                  else "-")
            print(f"{n:>5}² {int(images.mask.sum()):>8} {cal.fit.solver:>6} {cal.fit.device[:26]:>26} "
                  f"{t['prepare_s']:>8.2f} {t['linear_fit_s']:>6.2f} {t['joint_s']:>6.2f} "
                  f"{t['uncertainty_s']:>7.2f} {t['report_s']:>7.2f} {total:>8.2f} "
                  f"{ea * 100:>10.2f}% {ec * 100:>10.2f}% {len(cal.dislocations[0]):>5} "
                  f"{cg:>16}", flush=True)
    if profiler:  # GPU time shows up where the host waits for it (synchronising calls)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
