"""PFHub benchmark 4 (elastic precipitate), variants a (C_p = C_m) and c (C_p = 1.1 C_m).

    python benchmarks/pfhub_bm4.py --variant a --t-end 200 --out DIR [--n 256]

Model (Jokisaari et al., Comput. Mater. Sci. 149, 336 (2018); summary in the reference notes):
F = ∫ f_bulk(η) + κ/2 |∇η|² + ½ σ:ε_el dA, f_bulk = w Σ a_j η^j, ε_el = ε − ε^T h(η),
C(η) = C_m (1 − h) + C_p h, h = η³(6η² − 15η + 10), ∂η/∂t = ∇·(M ∇ δF/δη), plane strain, cubic C_m
(C11 = 250, C12 = 150, C44 = 100 GPa), ε^T = 0.005 δ_ij, κ = 0.29 aJ/nm, w = 0.1 aJ/nm³, M = 5, a disc
of radius 20 nm in a periodic (400 nm)² box, η = 1 inside and 0.0065 outside.

δE_el/δη = −σ:ε^T h'(η) + ½ (s − 1) h'(η) ε_el:C_m:ε_el with C_p = s C_m; the stress comes from the
core's solver: the exact periodic Green operator for variant a, the heterogeneous PCG path
(``stiffness_scale`` = 1 + (s − 1) h, warm-started) for variant c. The Cahn-Hilliard step is the
project's semi-implicit spectral stepper with the elastic potential explicit.

Reports per output time (CSV ``DIR/bm4{variant}.csv`` and stdout): time, a_10 and a_01 (distance from
the box centre to the η = ½ contour along +x and +y, nm), elastic, gradient, bulk and total free energy
(aJ per nm of thickness), precipitate area (η > ½, nm²); PNG of η at the end. Prints wall time.
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

from mechanics import solve_elasticity  # noqa: E402
from mechanics.grid import Grid  # noqa: E402
from mechanics.parameters.pfhub import benchmark4  # noqa: E402
from mechanics.phasefield import spectral  # noqa: E402
from mechanics.phasefield.cahn_hilliard import CahnHilliard, cahn_hilliard  # noqa: E402
from mechanics.phasefield.free_energy import Polynomial  # noqa: E402
from mechanics.phasefield.protocols import output_schedule, run_to_times  # noqa: E402
from mechanics.stiffness import Stiffness  # noqa: E402


def interpolation(eta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """h = η³(6η² − 15η + 10) and h' = 30 η²(η − 1)²."""
    return eta**3 * (6 * eta**2 - 15 * eta + 10), 30 * eta**2 * (eta - 1) ** 2


class Bm4Elastic:
    """The elastic part of BM4: μ_el(η) for the stepper and the elastic energy for the report."""

    def __init__(self, spec, grid: Grid, dtype, device):
        self.spec = spec
        self.grid = grid
        self.C = Stiffness.cubic(C11_GPa=spec.C1111_GPa, C12_GPa=spec.C1122_GPa, C44_GPa=spec.C1212_GPa)
        self.C = self.C.to(dtype=dtype, device=device)
        self.eps_t = torch.tensor([[spec.eigenstrain_11, spec.eigenstrain_12],
                                   [spec.eigenstrain_12, spec.eigenstrain_22]], dtype=dtype, device=device)
        self.s = spec.precipitate_stiffness_factor

    def solve(self, eta: torch.Tensor, x0=None):
        h, _ = interpolation(eta)
        eps0 = h[..., None, None] * self.eps_t
        kwargs = {}
        if self.s != 1.0:
            kwargs = {"stiffness_scale": 1 + (self.s - 1) * h, "x0": x0}
        result = solve_elasticity(self.grid, self.C, eps0, plane="strain", axes=(0, 1), **kwargs)
        return result, eps0

    def potential(self, eta: torch.Tensor, aux):
        result, eps0 = self.solve(eta, aux if self.s != 1.0 else None)
        h, dh = interpolation(eta)
        mu = -dh * (result.stress * self.eps_t).sum(dim=(-2, -1))
        if self.s != 1.0:
            scale = 1 + (self.s - 1) * h
            w_m = ((result.stress * (result.strain - eps0)).sum(dim=(-2, -1))) / scale  # ε_el:C_m:ε_el
            mu = mu + 0.5 * (self.s - 1) * dh * w_m
        return mu, result


def initial_condition(spec, n: int, dtype, device) -> torch.Tensor:
    """Disc of radius R at the box centre, η = η_p inside, η_m outside, a 1-nm tanh edge (resolves the
    step on the grid)."""
    h = spec.box_length_nm / n
    x = (torch.arange(n, dtype=torch.float64) + 0.5) * h - spec.box_length_nm / 2
    X, Y = torch.meshgrid(x, x, indexing="ij")
    r = torch.sqrt(X**2 + Y**2)
    inside = 0.5 * (1 - torch.tanh((r - spec.radius_nm) / 1.0))
    eta = spec.eta_matrix + (spec.eta_precipitate - spec.eta_matrix) * inside
    return eta.to(dtype=dtype, device=device)


def report(spec, model: CahnHilliard, elastic: Bm4Elastic, eta: torch.Tensor) -> dict:
    """The benchmark's quantities for one field η (n, n)."""
    n = eta.shape[-1]
    h = model.grid.spacing_nm
    d = 2
    ks = model.grid.axis_wavevectors(dtype=eta.dtype, device=eta.device)
    grads = spectral.spectral_gradient(spectral.rfft(eta, d), ks, (n, n))
    gradient = 0.5 * spec.kappa_aJ_per_nm * float(sum((g**2).sum() for g in grads)) * h * h
    bulk = float(model.free_energy.density(eta).sum()) * h * h
    result, _ = elastic.solve(eta[None])
    elastic_energy = float(result.energy[0])
    centre = n // 2
    profile_x = eta[centre:, centre].cpu().numpy()
    profile_y = eta[centre, centre:].cpu().numpy()

    def radius(profile):
        below = np.nonzero(profile < 0.5)[0]
        if len(below) == 0:
            return math.nan
        j = below[0]
        if j == 0:
            return 0.0
        # linear interpolation of the η = ½ crossing; cell centres at (k + ½) h from the box centre
        frac = (profile[j - 1] - 0.5) / (profile[j - 1] - profile[j])
        return (j - 1 + frac + 0.5) * h

    return {
        "a_10_nm": radius(profile_x),
        "a_01_nm": radius(profile_y),
        "elastic_energy": elastic_energy,
        "gradient_energy": gradient,
        "bulk_energy": bulk,
        "total_free_energy": elastic_energy + gradient + bulk,
        "precipitate_area_nm2": float((eta > 0.5).sum()) * h * h,
    }


def run(variant: str, t_end: float, n: int, dtype=torch.float64, device="cpu", dc_tol: float = 0.01,
        progress=None):
    spec = benchmark4(variant)
    grid = Grid((n, n), spacing_nm=spec.box_length_nm / n)
    elastic = Bm4Elastic(spec, grid, dtype, device)
    model = CahnHilliard(
        grid=grid,
        free_energy=Polynomial(w=spec.w_aJ_per_nm3, coefficients=spec.bulk_coefficients),
        mobility=spec.mobility, kappa=spec.kappa_aJ_per_nm, explicit_potential=elastic.potential,
        dc_tol=dc_tol,
    )
    init_fn, step_fn = cahn_hilliard(model)
    state = init_fn(initial_condition(spec, n, dtype, device)[None], 1e-3)
    rows = []

    def observe(s):
        rows.append({"time": float(s.time[0]), **report(spec, model, elastic, s.c[0])})

    state = run_to_times(step_fn, state, output_schedule(t_end), [observe], on_step=progress)
    return rows, state


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", choices=("a", "c"), default="a")
    parser.add_argument("--t-end", type=float, default=100.0)
    parser.add_argument("--n", type=int, default=256, help="grid points per side of the 400 nm box")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dc-tol", type=float, default=0.01)
    args = parser.parse_args(argv)
    if args.t_end <= 0 or args.n < 16:
        parser.error("--t-end must be > 0 and --n >= 16")
    args.out.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    bar = tqdm(desc=f"BM4{args.variant}", unit="step", mininterval=1.0)
    start = time.perf_counter()
    rows, state = run(args.variant, args.t_end, args.n, getattr(torch, args.dtype), args.device, args.dc_tol,
                      progress=lambda s: bar.update(1))
    wall = time.perf_counter() - start
    bar.close()
    keys = list(rows[0].keys())
    fd, tmp = tempfile.mkstemp(dir=args.out, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(",".join(keys) + "\n")
        for r in rows:
            fh.write(",".join(f"{r[k]:.10g}" for k in keys) + "\n")
    os.replace(tmp, args.out / f"bm4{args.variant}.csv")
    print(" ".join(f"{k:>18}" for k in keys))
    for r in rows:
        print(" ".join(f"{r[k]:>18.6g}" for k in keys))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    L = benchmark4(args.variant).box_length_nm
    im = ax.imshow(state.c[0].cpu().numpy().T, origin="lower", extent=(0, L, 0, L), vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(f"BM4{args.variant}, t = {float(state.time[0]):g}")
    fig.tight_layout()
    fig.savefig(args.out / f"eta_4{args.variant}.png", dpi=80)
    plt.close(fig)
    print(f"BM4{args.variant}: {int(state.steps[0])} steps to t = {args.t_end:g} on {args.device} "
          f"({args.dtype}, n = {args.n}), wall time {wall:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
