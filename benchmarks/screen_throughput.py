"""Throughput of the screening simulator alone (no Ray, no MLflow): candidates per second of
:func:`mechanics.screen.simulate_candidates` in batches, on one device. Runs where only torch and numpy
are installed (the candidates are LFP-like parameter sets with perturbed misfits, not pymatgen ones).

    python benchmarks/screen_throughput.py --device cuda --candidates 256 --batch-size 64 --grid-points 64
    python benchmarks/screen_throughput.py --device cpu --candidates 16 --batch-size 8 --grid-points 32
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mechanics.parameters.lfp import lfp_params  # noqa: E402
from mechanics.screen import ScreeningSettings, simulate_candidates  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--candidates", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--grid-points", type=int, default=64)
    args = parser.parse_args()
    base = lfp_params()
    rng = np.random.default_rng(0)
    lat = base.delithiated
    params = []
    for _ in range(args.candidates):  # delithiated cell edges moved by up to ±1 %: misfits vary by ~±20 %
        f = rng.uniform(0.99, 1.01, 3)
        moved = dataclasses.replace(lat, a_A=lat.a_A * f[0], b_A=lat.b_A * f[1], c_A=lat.c_A * f[2])
        omega = base.omega_eV * rng.uniform(0.9, 1.1)
        params.append(dataclasses.replace(base, delithiated=moved, omega_eV=omega))
    settings = ScreeningSettings(grid_points=args.grid_points)
    device = torch.device(args.device)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU, {torch.get_num_threads()} threads")
    simulate_candidates(params[:2], dataclasses.replace(settings, max_steps=20), device=device)  # warm-up
    start = time.perf_counter()
    done = 0
    for i in range(0, len(params), args.batch_size):
        results = simulate_candidates(params[i:i + args.batch_size], settings, device=device)
        done += sum(r.status == "FINISHED" for r in results)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    print(f"device: {name}; torch {torch.__version__}; {args.candidates} candidates, "
          f"batch {args.batch_size}, {args.grid_points}² cells")
    print(f"simulator alone: {wall:.2f} s, {wall / args.candidates * 1e3:.1f} ms per candidate, "
          f"{done}/{args.candidates} finished")


if __name__ == "__main__":
    main()
