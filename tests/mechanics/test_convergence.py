"""Accuracy of the free-particle solver against the free core-shell disc as a function of grid and
void stiffness (the table in docs/mechanics.md); about 8 s on one core."""

from __future__ import annotations

import math

import torch

from mechanics import Grid, Stiffness, solve_elasticity

F64 = torch.float64
E_GPA, NU, EPS = 100.0, 0.3, 0.01
K_DISC = E_GPA / (2 * (1 + NU)) * EPS / (1 - NU)


def disc_errors(N: int, eta: float, scheme: str = "rotated") -> dict:
    """Errors in units of k = μ ε*/(1 − ν): core mean and max (r < 0.6 a), shell rms of σ_rr and σ_θθ
    (cells ≥ 2 from both interfaces); b = 0.35 N, a = b/2, closed form with the pixelated radii."""
    g = Grid((N, N), 1.0)
    x = g.coordinates_nm()
    r = x.norm(dim=-1)
    b, a = 0.35 * N, 0.175 * N
    core, mask = (r < a).to(F64), r < b
    res = solve_elasticity(g, Stiffness.isotropic(E_GPa=E_GPA, nu=NU),
                           EPS * core[..., None, None] * torch.eye(2, dtype=F64),
                           mask=mask, void_stiffness=eta, scheme=scheme)
    a2, b2 = float(core.sum()) / math.pi, float(mask.sum()) / math.pi
    n = x / r[..., None].clamp_min(1e-12)
    t = torch.stack([-n[..., 1], n[..., 0]], -1)
    s_rr = torch.einsum("...i,...ij,...j->...", n, res.stress, n)
    s_tt = torch.einsum("...i,...ij,...j->...", t, res.stress, t)
    ex_rr = torch.where(r < a, -K_DISC * (1 - a2 / b2), K_DISC * a2 * (1 / b2 - 1 / r**2))
    ex_tt = torch.where(r < a, -K_DISC * (1 - a2 / b2), K_DISC * a2 * (1 / b2 + 1 / r**2))
    deep = r < 0.6 * a
    shell = (r > a + 2) & (r < b - 2)
    return {
        "iterations": int(res.iterations),
        "core_mean": abs(float(s_rr[deep].mean() - ex_rr[deep].mean())) / K_DISC,
        "core_max": float((s_rr - ex_rr)[deep].abs().max()) / K_DISC,
        "shell_rms": float(torch.cat([(s_rr - ex_rr)[shell], (s_tt - ex_tt)[shell]]).pow(2).mean().sqrt())
        / K_DISC,
    }


def test_free_disc_convergence_table():
    """The rotated scheme converges at first order in h/b (staircase surface): the core-mean error
    halves from 64² to 256² and stays below 0.8 % of k on 128²+; iteration counts stay below 60 for
    void stiffness 1e-2..1e-4 (the count barely depends on η for this scheme), while the spectral scheme
    needs several times more at η = 1e-4 (ringing at the surface)."""
    table = {(N, eta): disc_errors(N, eta) for N in (32, 64, 128, 256) for eta in (1e-2, 1e-3, 1e-4)}
    print("\n| N | void η | CG its | core mean | core max | shell rms |")
    for (N, eta), e in table.items():
        print(f"| {N} | {eta:g} | {e['iterations']} | {100 * e['core_mean']:.2f} % | "
              f"{100 * e['core_max']:.2f} % | {100 * e['shell_rms']:.2f} % |")
    for eta in (1e-2, 1e-3, 1e-4):
        assert table[(256, eta)]["core_mean"] < 0.5 * table[(64, eta)]["core_mean"] + 1e-3
        assert table[(128, eta)]["core_mean"] < 0.008
        assert all(table[(N, eta)]["iterations"] < 60 for N in (32, 64, 128, 256))
    spectral = disc_errors(128, 1e-4, scheme="spectral")
    print(f"spectral scheme, N = 128, η = 1e-4: {spectral}")
    assert spectral["iterations"] > 3 * table[(128, 1e-4)]["iterations"]
