"""Speed of the mechanics core: homogeneous (one-pass Green operator) and free-particle (PCG) solves.

Prints one table per device: time per solve, CG iterations, and the ratio to one FFT round trip
(rfftn + irfftn of the m-component strain field of the same batch and grid, float32 unless --dtype),
measured in the same run. The free particle runs twice, on the solver's two forms of the same CG
(``mechanics.elasticity.particle``): the Fourier path, eager, and the real-space path fused by
torch.compile (its compilation is not timed: the first call is an untimed warm-up). Imports only torch
and numpy (and mechanics).

    python benchmarks/mechanics.py            # 2-D 256² (batch 1, 64), 3-D 128³ (batch 1)
    python benchmarks/mechanics.py --quick    # 2-D 64² (batch 1, 8), 3-D 32³
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# run as a script, this file's folder comes first on sys.path and its name would shadow the package
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import torch  # noqa: E402

from mechanics import Grid, Stiffness, solve_elasticity  # noqa: E402
from mechanics.elasticity import particle as particle_mod  # noqa: E402
from mechanics.parameters.lfp import lfp_params  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int, min_time_s: float = 0.2):
    """Median wall time (s) of ``fn`` after one warm-up call; at least ``repeats`` calls."""
    out = fn()
    _sync(device)
    times = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start < min_time_s and len(times) < 50):
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], out


def problem(shape, batch, dtype, device):
    """LFP particle (ellipse / ellipsoid filling ~half the box) with a lithiation front along a."""
    d = len(shape)
    grid = Grid(shape, spacing_nm=1.0)
    x = grid.coordinates_nm(dtype=dtype, device=device)
    semi = [0.4 * n for n in shape]
    semi[-1] = 0.25 * shape[-1]
    mask = sum((x[..., i] / semi[i]) ** 2 for i in range(d)) < 1
    shift = torch.linspace(-0.2, 0.2, batch, dtype=dtype, device=device).reshape(batch, *([1] * d))
    X = torch.sigmoid((x[..., 0] / shape[0] - shift) * 40.0)  # (batch, *grid)
    p = lfp_params()
    mis = torch.tensor(p.misfit, dtype=dtype, device=device)
    if d == 2:
        axes = (0, 2)
        eps_diag = torch.stack([mis[axes[0]] * X, mis[axes[1]] * X], dim=-1)
    else:
        axes = (0, 1)
        eps_diag = X[..., None] * mis
    eps0 = torch.diag_embed(eps_diag)
    C = Stiffness.from_voigt(p.stiffness_voigt()).to(dtype, device)
    return grid, C, eps0, mask, axes


def fft_round_trip(grid, batch, dtype, device):
    m = grid.ndim * (grid.ndim + 1) // 2
    field = torch.randn(batch, m, *grid.shape, dtype=dtype, device=device)
    dims = tuple(range(-grid.ndim, 0))
    return lambda: torch.fft.irfftn(torch.fft.rfftn(field, dim=dims), s=grid.shape, dim=dims)


def run_case(device, shape, batch, dtype, repeats: int, eta: float) -> list[dict]:
    grid, C, eps0, mask, axes = problem(shape, batch, dtype, device)
    kw = dict(plane="stress", axes=axes)
    t_fft, _ = timed(fft_round_trip(grid, batch, dtype, device), device, repeats)
    t_h, _ = timed(lambda: solve_elasticity(grid, C, eps0, **kw), device, repeats)

    def particle(eps, x0=None):
        return solve_elasticity(grid, C, eps, mask=mask, void_stiffness=eta, x0=x0, **kw)

    few = max(1, repeats // 3)
    size = "x".join(map(str, shape))
    timings = [("homogeneous", t_h, "-")]
    for path, mode in (("Fourier", False), ("fused", True)):  # the two forms of the same CG (particle.py)
        particle_mod.COMPILE = mode
        t_p, cold = timed(lambda: particle(eps0), device, few, min_time_s=0.0)
        t_w, warm = timed(lambda c=cold: particle(eps0 * 1.001, c), device, few, min_time_s=0.0)
        timings += [(f"particle cold, {path} (eta={eta:g})", t_p, int(cold.iterations.max())),
                    (f"particle warm, {path}", t_w, int(warm.iterations.max()))]
    particle_mod.COMPILE = "auto"
    rows = []
    for case, t, its in timings:
        rows.append(dict(device=str(device), case=case, grid=size, batch=batch, ms=1e3 * t,
                         ms_per_item=1e3 * t / batch, iterations=its, fft_ms=1e3 * t_fft, ratio=t / t_fft))
    return rows


HEADER = (f"{'case':<36} {'grid':>11} {'batch':>5} {'ms/solve':>10} {'ms/item':>9} {'iters':>6} "
          f"{'FFT rt ms':>10} {'ratio':>8}")


def format_row(r: dict) -> str:
    return (f"{r['case']:<36} {r['grid']:>11} {r['batch']:>5} {r['ms']:>10.2f} "
            f"{r['ms_per_item']:>9.3f} {str(r['iterations']):>6} {r['fft_ms']:>10.3f} {r['ratio']:>8.1f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (64², 32³)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--void-stiffness", type=float, default=1e-3)
    parser.add_argument("--device", action="append",
                        help="cpu and/or cuda, repeatable (default: cpu, and cuda if present)")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    if args.quick:
        cases = [((64, 64), 1), ((64, 64), 8), ((32, 32, 32), 1)]
    else:
        cases = [((256, 256), 1), ((256, 256), 64), ((128, 128, 128), 1)]
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    for name in devices:
        device = torch.device(name)
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else \
            f"CPU, {torch.get_num_threads()} threads"
        print(f"\ndevice: {label}; dtype {args.dtype}; torch {torch.__version__}; "
              f"ratio = time / one FFT round trip of the strain field")
        print(HEADER)
        print("-" * len(HEADER), flush=True)
        for shape, batch in cases:
            for row in run_case(device, shape, batch, dtype, args.repeats, args.void_stiffness):
                print(format_row(row), flush=True)


if __name__ == "__main__":
    main()
