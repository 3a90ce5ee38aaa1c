"""Calibration time of one LFP platelet image set versus its size (issue 4 target: 512² < 2 min on 2 CPU
cores). The image sets are synthesised first (not timed; oversample 1 above 256² to keep the synthesis
short) and calibrated with the defaults (NLM start, 2 joint X/law rounds, dislocation nuisances,
64 bootstrap replicates).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/inverse.py [--sizes 128,256,512]
"""

from __future__ import annotations

import argparse
import os
import platform
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
    args = parser.parse_args()
    misfit = lfp_material().misfit
    print(f"device: CPU ({platform.processor() or platform.machine()}), os.cpu_count={os.cpu_count()}, "
          f"torch threads={torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    header = (f"{'size':>6} {'pixels':>8} {'prepare':>8} {'fit':>6} {'joint':>6} {'uncert':>7} {'report':>7} "
              f"{'total s':>8} {'slope_a err':>11} {'slope_c err':>11}")
    print(header)
    print("-" * len(header))
    for n in (int(s) for s in args.sizes.split(",")):
        images = synthesize(size_px=n, oversample=2 if n <= 256 else 1, seed=1,
                            pixel_size_nm=20.0 * 96 / n)
        start = time.perf_counter()
        cal = calibrate(images, n_bootstrap=args.bootstrap)
        total = time.perf_counter() - start
        t = cal.fit["timings_s"]
        ea = cal.vegard["slope_a"] / misfit[0] - 1
        ec = cal.vegard["slope_c"] / misfit[2] - 1
        print(f"{n:>5}² {int(images.mask.sum()):>8} {t['prepare_s']:>8.1f} {t['linear_fit_s']:>6.1f} "
              f"{t['joint_s']:>6.1f} {t['uncertainty_s']:>7.1f} {t['report_s']:>7.1f} {total:>8.1f} "
              f"{ea * 100:>10.2f}% {ec * 100:>10.2f}%", flush=True)


if __name__ == "__main__":
    main()
