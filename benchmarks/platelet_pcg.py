"""Cost of one PCG iteration of the matrix-free free-platelet solver (``mechanics.elasticity.PlateletPCG``,
the calibration's GPU path) for its two forms of the element operators: array slices and 2×2 convolutions.

A single-particle solve is bound by the number of torch operations it dispatches (Python and kernel-launch
latency) on a GPU at every size here, and on a CPU below about 100²; the table therefore counts the
operations dispatched per CG iteration (``TorchDispatchMode``, views included) next to the time.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/platelet_pcg.py            # CPU, one thread
    python benchmarks/platelet_pcg.py --device cuda

Columns: image size; cropped element count; operator form; CG iterations to rtol 1e-9 from a cold
start; ms per solve (one right-hand side, float64, best of ``--repeats`` after one untimed solve); ms per
iteration; torch operations dispatched per iteration (of which launch kernels: not views).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from inverse.images import stiffness_to_grid  # noqa: E402
from mechanics.elasticity import PlateletPCG  # noqa: E402
from mechanics.parameters.lfp import lfp_params  # noqa: E402
from mechanics.stiffness import Stiffness  # noqa: E402


class _Count(TorchDispatchMode):
    """Torch operations dispatched inside the block: all of them, and those that are not views."""

    def __init__(self):
        super().__init__()
        self.ops = self.kernels = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        self.kernels += not func.is_view
        return func(*args, **(kwargs or {}))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ops_per_iteration(pcg, eig: torch.Tensor) -> tuple[float, float]:
    """(all, kernel-launching) torch operations per CG iteration: the difference of a short and a long
    solve of the same load divided by their difference in iterations (set-up cancels; the residual
    check every 4 iterations is included)."""
    counts = []
    for tol in (1e-3, pcg.rtol):
        with _Count() as c:
            pcg.solve(eig, rtol=tol)
        counts.append((c.ops, c.kernels, int(pcg.iterations[0])))
    (o0, k0, i0), (o1, k1, i1) = counts
    return (o1 - o0) / (i1 - i0), (k1 - k0) / (i1 - i0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="32,64,128,256,512")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}, threads {torch.get_num_threads()}; float64")
    header = (f"{'size':>6} {'elements':>9} {'form':>7} {'iters':>6} {'ms/solve':>9} {'ms/iter':>8} "
              f"{'ops/iter':>9} {'kernels/iter':>13}")
    print(header)
    print("-" * len(header), flush=True)
    # the calibration's LFP platelet: generalized plane stress in the a-c plane, crystal a at 20° (as
    # inverse.forward.platelet_solver builds it)
    c_ac = Stiffness.from_voigt(lfp_params().stiffness_voigt()).reduced(axes=(0, 2), plane="stress")
    c_grid = stiffness_to_grid(c_ac.numpy(), 20.0)
    for n in (int(s) for s in args.sizes.split(",")):
        y, x = np.mgrid[:n, :n] - n / 2 + 0.5
        mask = (x / (0.4 * n)) ** 2 + (y / (0.3 * n)) ** 2 < 1
        eig = torch.zeros(1, n, n, 2, 2, dtype=torch.float64)
        eig[0, :, : n // 2, 0, 0] = 0.05
        eig[0, : n // 2, :, 1, 1] = -0.02
        for conv in (False, True):
            pcg = PlateletPCG(mask, c_grid, 10.0, device=device, conv=conv)
            pcg.solve(eig)
            times = []
            for _ in range(args.repeats):
                _sync(device)
                start = time.perf_counter()
                pcg.solve(eig)
                _sync(device)
                times.append(time.perf_counter() - start)
            per_solve = min(times)
            iters = int(pcg.iterations[0])
            ops, kernels = ops_per_iteration(pcg, eig)
            hh, ww = pcg._crop_shape
            print(f"{n:>5}² {hh * ww:>9} {'conv' if conv else 'slices':>7} {iters:>6} "
                  f"{per_solve * 1e3:>9.2f} {per_solve / iters * 1e3:>8.3f} {ops:>9.1f} {kernels:>13.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
