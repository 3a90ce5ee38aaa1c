"""Cost of one PCG iteration of the matrix-free free-platelet solver (:mod:`mechanics.fem_pcg`, the
calibration's GPU path) for its two forms of the element operators: array slices and 2×2 convolutions.

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
import collections
import sys
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from mechanics.fem_pcg import PlateletPCG  # noqa: E402

_VIEWS = {"view", "slice", "select", "expand", "transpose", "unsqueeze", "permute", "_unsafe_view",
          "as_strided", "t", "alias", "squeeze", "_reshape_alias"}


class _Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _stiffness():
    """LFP-like orthotropic in-plane stiffness (GPa) rotated by 20°."""
    c = np.zeros((2, 2, 2, 2))
    c[0, 0, 0, 0], c[1, 1, 1, 1], c[0, 0, 1, 1] = 138.9, 175.0, 51.6
    c[1, 1, 0, 0] = c[0, 0, 1, 1]
    c[0, 1, 0, 1] = c[1, 0, 1, 0] = c[0, 1, 1, 0] = c[1, 0, 0, 1] = 50.4
    t = np.radians(20.0)
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return np.einsum("ip,jq,kr,ls,pqrs->ijkl", r, r, r, r, c)


def ops_per_iteration(pcg: PlateletPCG) -> tuple[int, int]:
    """(all, kernel-launching) torch operations of one iteration of the single-RHS recurrences."""
    hh, ww = pcg._crop_shape
    gen = torch.Generator(device="cpu").manual_seed(0)
    r = (torch.randn(1, 2, hh + 1, ww + 1, generator=gen, dtype=pcg.dtype).to(pcg.device)
         * pcg._nmask)
    target = torch.zeros(1, dtype=pcg.dtype, device=pcg.device)
    z = pcg._precondition(r)
    keep = pcg.max_iter
    pcg.max_iter = 10**9
    counts = []
    try:
        for n_iter in (4, 8):  # the difference of two runs: iterations only, no set-up
            with _Count() as c:
                _limited_cg(pcg, r.clone(), z.clone(), target, n_iter)
            counts.append(c.ops)
    finally:
        pcg.max_iter = keep
    diff = {k: (counts[1][k] - counts[0].get(k, 0)) / 4 for k in counts[1]}
    total = sum(diff.values())
    return round(total), round(total - sum(v for k, v in diff.items() if k in _VIEWS))


def _limited_cg(pcg, r, z, target, n_iter):
    """``n_iter`` iterations of the solver's own single-RHS loop (its residual check never passes)."""
    x = torch.zeros_like(r)
    rz = (r * z).sum(dim=(1, 2, 3))
    bnorm = torch.linalg.vector_norm(r.reshape(1, -1), dim=1)
    calls = {"n": 0}
    orig = pcg._matvec

    def counted(u):
        calls["n"] += 1
        if calls["n"] > n_iter:
            raise StopIteration
        return orig(u)

    pcg._matvec = counted
    try:
        pcg._cg_single(x, r, z.clone(), rz, bnorm, target - 1.0)
    except StopIteration:
        pass
    finally:
        del pcg._matvec


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
    for n in (int(s) for s in args.sizes.split(",")):
        y, x = np.mgrid[:n, :n] - n / 2 + 0.5
        mask = (x / (0.4 * n)) ** 2 + (y / (0.3 * n)) ** 2 < 1
        eig = torch.zeros(1, n, n, 2, 2, dtype=torch.float64)
        eig[0, :, : n // 2, 0, 0] = 0.05
        eig[0, : n // 2, :, 1, 1] = -0.02
        for conv in (False, True):
            pcg = PlateletPCG(mask, _stiffness(), 10.0, device=device, rtol=1e-9, conv=conv)
            pcg.apply_torch(eig)
            times = []
            for _ in range(args.repeats):
                _sync(device)
                start = time.perf_counter()
                pcg.apply_torch(eig)
                _sync(device)
                times.append(time.perf_counter() - start)
            per_solve = min(times)
            iters = int(pcg.iterations[0])
            ops, kernels = ops_per_iteration(pcg)
            hh, ww = pcg._crop_shape
            print(f"{n:>5}² {hh * ww:>9} {'conv' if conv else 'slices':>7} {iters:>6} "
                  f"{per_solve * 1e3:>9.2f} {per_solve / iters * 1e3:>8.3f} {ops:>9} {kernels:>13}",
                  flush=True)


if __name__ == "__main__":
    main()
