"""PFHub benchmark 1 (spinodal decomposition), cases a (periodic) and b (no-flux).

    python benchmarks/pfhub_bm1.py --case a --t-end 1e4 --out DIR

writes ``DIR/free_energy_1a.csv`` (``time,free_energy``, t = 0 included, 1-2-5 output times and t_end) and
PNG snapshots of c at t = 1e3, 1e4, ... up to t_end, and prints the wall time. Specification:
Jokisaari et al., Comput. Mater. Sci. 126, 139 (2017); summary in the project's reference notes.
Model: f = 5 (c − 0.3)² (0.7 − c)², κ = 2, M = 5, 200 × 200 grid with unit spacing.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mechanics.grid import Grid  # noqa: E402
from mechanics.parameters.pfhub import benchmark1  # noqa: E402
from mechanics.phasefield.cahn_hilliard import CahnHilliard, cahn_hilliard, total_free_energy  # noqa: E402
from mechanics.phasefield.free_energy import DoubleWell  # noqa: E402
from mechanics.phasefield.protocols import output_schedule, run_to_times  # noqa: E402

SPEC = benchmark1()
SIZE = int(SPEC.box_length)


def initial_condition(n: int = SIZE, spacing: float = 1.0, *, dtype=torch.float64, device="cpu"):
    """c = c0 + ε[cos(0.105x)cos(0.11y) + (cos(0.13x)cos(0.087y))² + cos(0.025x − 0.15y)cos(0.07x − 0.02y)]
    sampled at x, y = i·spacing (node-based, so the periodic seam is the one the spec's F(0) ≈ 319.2 has)."""
    x = torch.arange(n, dtype=dtype, device=device) * spacing
    X, Y = torch.meshgrid(x, x, indexing="ij")
    return SPEC.c0 + SPEC.epsilon * (
        torch.cos(0.105 * X) * torch.cos(0.11 * Y)
        + (torch.cos(0.13 * X) * torch.cos(0.087 * Y)) ** 2
        + torch.cos(0.025 * X - 0.15 * Y) * torch.cos(0.07 * X - 0.02 * Y)
    )


def model(case: str, n: int = SIZE, dc_tol: float = 0.002) -> CahnHilliard:
    # the benchmark is dimensionless: the grid's length unit (spacing_nm) is its unit length
    return CahnHilliard(
        grid=Grid((n, n), spacing_nm=SIZE / n),
        free_energy=DoubleWell(rho=SPEC.rho_s, c_alpha=SPEC.c_alpha, c_beta=SPEC.c_beta),
        mobility=SPEC.mobility,
        kappa=SPEC.kappa,
        boundary="periodic" if case == "a" else "noflux",
        dc_tol=dc_tol,
    )


def run(case: str, t_end: float, *, n: int = SIZE, dtype=torch.float64, device="cpu", dc_tol: float = 0.002,
        snapshot_times=(), progress=None):
    """Returns (times, energies, snapshots{t: c (n, n) numpy}, steps)."""
    m = model(case, n, dc_tol)
    init_fn, step_fn = cahn_hilliard(m)
    state = init_fn(initial_condition(n, SIZE / n, dtype=dtype, device=device)[None], 0.05)
    times, energies, snaps = [], [], {}
    schedule = sorted(set(output_schedule(t_end)) | {t for t in snapshot_times if t <= t_end})

    def record(s):
        t = float(s.time[0])
        times.append(t)
        energies.append(float(total_free_energy(m, s.c)[0]))
        for ts in snapshot_times:
            if math.isclose(t, ts, rel_tol=1e-9):
                snaps[ts] = s.c[0].detach().cpu().numpy()

    state = run_to_times(step_fn, state, schedule, [record], on_step=progress)
    return np.array(times), np.array(energies), snaps, int(state.steps[0])


def _write_csv_atomic(path: Path, times, energies) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write("time,free_energy\n")
        for t, f in zip(times, energies):
            fh.write(f"{t:.10g},{f:.10g}\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--case", choices=("a", "b"), default="a")
    parser.add_argument("--t-end", type=float, default=1.0e4)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=SIZE, help="grid points per side (the box stays 200)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dc-tol", type=float, default=0.002,
                        help="target max |Δc| per step (0.002: F(1e3) within 0.7 percent of a 4x finer run)")
    args = parser.parse_args(argv)
    if args.t_end <= 0:
        parser.error("--t-end must be > 0")
    args.out.mkdir(parents=True, exist_ok=True)
    snapshot_times = [10.0**k for k in range(3, 7) if 10.0**k <= args.t_end]
    from tqdm import tqdm

    bar = tqdm(desc=f"BM1{args.case}", unit="step", mininterval=1.0)
    start = time.perf_counter()
    times, energies, snaps, steps = run(
        args.case, args.t_end, n=args.n, dtype=getattr(torch, args.dtype), device=args.device,
        dc_tol=args.dc_tol, snapshot_times=snapshot_times, progress=lambda s: bar.update(1),
    )
    wall = time.perf_counter() - start
    bar.close()
    _write_csv_atomic(args.out / f"free_energy_1{args.case}.csv", times, energies)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for t, c in snaps.items():
        fig, ax = plt.subplots(figsize=(4, 4))
        im = ax.imshow(c.T, origin="lower", cmap="viridis", vmin=0.25, vmax=0.75, extent=(0, SIZE, 0, SIZE))
        fig.colorbar(im, ax=ax, shrink=0.8)
        ax.set_title(f"BM1{args.case}, t = {t:g}")
        fig.tight_layout()
        fig.savefig(args.out / f"c_1{args.case}_t{t:.0e}.png", dpi=80)
        plt.close(fig)
    for t, f in zip(times, energies):
        if t in (0.0, 100.0, 1000.0, 10000.0, 100000.0, 1000000.0):
            print(f"t = {t:>9g}  F = {f:.4f}")
    print(f"BM1{args.case}: {steps} steps to t = {args.t_end:g} on {args.device} ({args.dtype}), "
          f"wall time {wall:.2f} s, torch threads {torch.get_num_threads()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
