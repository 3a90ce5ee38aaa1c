"""Phase-field step throughput against the FFT bound of the same run.

    python benchmarks/phasefield_speed.py [--quick] [--device cuda] [--dtype float32] [--compile]

For each case it times (a) one FFT round trip (rfftn + irfftn) of the field batch, (b) the semi-implicit
Cahn-Hilliard step with the Khachaturyan kernel (3 FFTs: ĉ, FFT f'(c), inverse), (c) the screening ACR
step (4 FFTs: ĉ, μ back, R̂, Δc back; plus the galvanostatic reservoir solve), and prints cell-steps/s
and the fraction of the FFT bound (time of the step's FFTs alone, from (a)). Cases: 2-D 256² × 64 and
3-D 128³ (``--quick``: 64² × 16 and 32³ for a CPU), and one particle vs the batch (launch-bound
speed-up). The one particle is timed again through :func:`mechanics.phasefield.graphs.captured_loop`
(10 steps per call: one CUDA graph replay on a GPU, the plain loop elsewhere) and compared with its own
FFT round trip. Imports torch, numpy and mechanics only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mechanics import units  # noqa: E402
from mechanics.coherency import coherency_kernel  # noqa: E402
from mechanics.grid import Grid  # noqa: E402
from mechanics.parameters.lfp import lfp_params  # noqa: E402
from mechanics.phasefield import spectral  # noqa: E402
from mechanics.phasefield.adjoint import ch_fixed_step, saved_bytes_per_step  # noqa: E402
from mechanics.phasefield.cahn_hilliard import CahnHilliard, cahn_hilliard  # noqa: E402
from mechanics.phasefield.free_energy import RegularSolution  # noqa: E402
from mechanics.phasefield.graphs import captured_loop, uses_graph  # noqa: E402
from mechanics.phasefield.reaction import AllenCahnReaction, ButlerVolmer, allen_cahn_reaction  # noqa: E402
from mechanics.stiffness import Stiffness  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def _setup(batch: int, shape: tuple[int, ...], dtype, device):
    p = lfp_params()
    d = len(shape)
    spacing = 200.0 / shape[0]
    kT = units.kT_aJ(p.temperature_K)
    rho = p.site_density_per_nm3
    free = RegularSolution(rho, kT, p.omega_eV * units.AJ_PER_EV)
    C = Stiffness.from_voigt(torch.tensor(p.stiffness_voigt(), dtype=torch.float64))
    misfit = torch.diag(torch.tensor(p.misfit, dtype=torch.float64))
    grid = Grid(shape, spacing)
    kernel = coherency_kernel(grid, C, misfit, "stress", (0, 2))
    kernel = kernel.to(dtype=dtype, device=device)
    gen = torch.Generator().manual_seed(0)
    c = 0.5 + 0.05 * torch.randn((batch, *shape), generator=gen, dtype=torch.float64)
    c = c.to(dtype=dtype, device=device)
    kappa = torch.full((d,), p.kappa_aJ_per_nm[0], dtype=dtype, device=device)
    return p, free, kernel, c, kappa, grid, rho, kT


def _fft_roundtrip_s(c: torch.Tensor, shape: tuple[int, ...], device, repeats: int) -> float:
    return _time(lambda: spectral.irfft(spectral.rfft(c, len(shape)), shape), device, repeats)


def bench_case(batch: int, shape: tuple[int, ...], dtype, device, repeats: int, compile_step: bool) -> dict:
    p, free, kernel, c, kappa, grid, rho, kT = _setup(batch, shape, dtype, device)
    cells = batch * c[0].numel()
    t_fft = _fft_roundtrip_s(c, shape, device, repeats)
    ch = CahnHilliard(grid=grid, free_energy=free, mobility=1.0, kappa=kappa, linear_kernel=kernel)
    # the whole adaptive step through the public factory (eager, or fused with torch.compile)
    init_ch, step_ch = cahn_hilliard(ch, compile=compile_step)
    ch_state = init_ch(c, 1e-3)
    t_ch = _time(lambda: step_ch(ch_state), device, repeats)
    rate = 2 * p.exchange_rate_A_m2 / units.ELEMENTARY_CHARGE_C * 1e-18 / (rho * 20.0)
    acr = AllenCahnReaction(
        grid=grid, free_energy=free, kappa_aJ_per_nm=kappa, site_density_per_nm3=rho,
        kT_aJ=kT, rate_law=ButlerVolmer(rate, 0.5), linear_kernel_GPa=kernel,
        current_per_s=torch.full((batch,), 1 / 3600, dtype=dtype, device=device),
    )
    init_fn, step_fn = allen_cahn_reaction(acr, compile=compile_step)
    state = init_fn(c, 1.0)
    t_acr = _time(lambda: step_fn(state), device, repeats)
    return {
        "case": f"{'x'.join(map(str, shape))} x {batch}",
        "cells": cells,
        "fft_roundtrip_ms": t_fft * 1e3,
        "ch_ms": t_ch * 1e3,
        "ch_Gcell_steps_s": cells / t_ch / 1e9,
        "ch_of_bound": 1.5 * t_fft / t_ch,  # 3 FFTs = 1.5 round trips
        "acr_ms": t_acr * 1e3,
        "acr_Gcell_steps_s": cells / t_acr / 1e9,
        "acr_of_bound": 2.0 * t_fft / t_acr,  # 4 FFTs = 2 round trips
        "ch_step": step_ch, "ch_state": ch_state,  # reused by bench_captured (no second compilation)
    }


def bench_captured(case: dict, device, repeats: int, n_steps: int = 10) -> dict:
    """One particle's CH step (``case`` from :func:`bench_case`, batch 1) through ``captured_loop``
    (``n_steps`` per call), per step, with the same step function (fused or eager)."""
    state = case["ch_state"]
    run = captured_loop(case["ch_step"], n_steps, graphs="auto")
    t_loop = _time(lambda: run(state), device, max(2, repeats // n_steps)) / n_steps
    if run.replays:
        how = "one CUDA graph replay"
    elif uses_graph(state.c, "auto"):
        how = f"plain loop: capture failed, {run.failure}"
    else:
        how = "plain loop, no CUDA graph on this device"
    return {"ms": t_loop * 1e3, "fft_ms": case["fft_roundtrip_ms"], "how": how, "n_steps": n_steps}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes for a CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="fused steps (torch.compile, compile=True)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if args.quick:
        cases = [(16, (64, 64)), (1, (32, 32, 32))]
        single = (64, 64)
        repeats = args.repeats or 10
    else:
        cases = [(64, (256, 256)), (1, (128, 128, 128))]
        single = (256, 256)
        repeats = args.repeats or 50
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"{args.dtype}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    header = (f"{'case':>18} {'FFT rt ms':>10} {'CH ms':>9} {'CH Gc-s/s':>10} {'CH/bound':>9} "
              f"{'ACR ms':>9} {'ACR Gc-s/s':>11} {'ACR/bound':>10}")
    print(header)
    rows = []
    for batch, shape in cases:
        r = bench_case(batch, shape, dtype, device, repeats, args.compile)
        rows.append(r)
        print(f"{r['case']:>18} {r['fft_roundtrip_ms']:>10.3f} {r['ch_ms']:>9.3f} "
              f"{r['ch_Gcell_steps_s']:>10.3f} {r['ch_of_bound']:>9.2f} {r['acr_ms']:>9.3f} "
              f"{r['acr_Gcell_steps_s']:>11.3f} {r['acr_of_bound']:>10.2f}")
    one = bench_case(1, single, dtype, device, repeats, args.compile)
    many = rows[0]
    print(f"one particle {one['case']}: CH {one['ch_ms']:.3f} ms/step "
          f"({one['ch_Gcell_steps_s']:.3f} Gcell-steps/s); "
          f"batched {many['case']}: {many['ch_ms']:.3f} ms/step -> batching speed-up "
          f"{many['ch_Gcell_steps_s'] / one['ch_Gcell_steps_s']:.1f}x in cell-steps/s")
    cap = bench_captured(one, device, repeats)
    print(f"one particle {one['case']}, captured loop of {cap['n_steps']} steps ({cap['how']}): "
          f"CH {cap['ms']:.3f} ms/step = {cap['ms'] / cap['fft_ms']:.1f}x its FFT round trip "
          f"({cap['fft_ms']:.3f} ms)")
    # memory autograd keeps per step (differentiating through time), in grid-sized tensors
    _, free, kernel, c, kappa, grid, _, _ = _setup(1, single, torch.float64, device)
    mob = torch.tensor(1.0, dtype=torch.float64, device=device, requires_grad=True)
    ch = CahnHilliard(grid=grid, free_energy=free, mobility=mob, kappa=kappa.double(),
                      linear_kernel=kernel.double())
    saved = saved_bytes_per_step(ch_fixed_step(ch, 1e-3), c.requires_grad_(True))
    grid_bytes = c.numel() * c.element_size()
    print(f"autograd through one CH step saves {saved / 2**20:.2f} MiB = {saved / grid_bytes:.1f} grid-sized "
          f"float64 tensors (complex spectra count double); checkpointing every k steps keeps 1 per k steps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
