"""Constants of the PFHub phase-field benchmarks 1 and 4 (CHiMaD/NIST).

Sources: A. M. Jokisaari, P. W. Voorhees, J. E. Guyer, J. Warren, O. G. Heinonen, "Benchmark problems
for numerical implementations of phase field models", Comput. Mater. Sci. 126, 139 (2017)
(benchmark 1, spinodal decomposition) and "Phase field benchmark problems for dendritic growth and
linear elasticity", Comput. Mater. Sci. 149, 336 (2018) (benchmark 4, elastic precipitate);
summarised in ``shared/reference/pfhub.md``. Units as in the benchmarks (dimensionless for 1;
aJ, nm for 4, so stiffness in aJ/nm³ = GPa).
"""

from __future__ import annotations

from dataclasses import dataclass

CITATION_1 = "Jokisaari et al., Comput. Mater. Sci. 126, 139 (2017), PFHub benchmark 1"
CITATION_4 = "Jokisaari et al., Comput. Mater. Sci. 149, 336 (2018), PFHub benchmark 4"


@dataclass(frozen=True)
class Benchmark1:
    """Spinodal decomposition: f = ρ_s (c − c_α)² (c_β − c)², ∂c/∂t = ∇·M∇(f' − κ∇²c) (dimensionless)."""

    c_alpha: float = 0.3
    c_beta: float = 0.7
    rho_s: float = 5.0
    kappa: float = 2.0
    mobility: float = 5.0
    c0: float = 0.5
    epsilon: float = 0.01
    box_length: float = 200.0


@dataclass(frozen=True)
class Benchmark4:
    """Elastic precipitate, variant a (C_p = C_m) unless ``precipitate_stiffness_factor`` = 1.1 (c, d)."""

    kappa_aJ_per_nm: float = 0.29
    w_aJ_per_nm3: float = 0.1
    mobility: float = 5.0
    eigenstrain_11: float = 0.005
    eigenstrain_22: float = 0.005
    eigenstrain_12: float = 0.0
    C1111_GPa: float = 250.0
    C1122_GPa: float = 150.0
    C1212_GPa: float = 100.0
    precipitate_stiffness_factor: float = 1.0
    radius_nm: float = 20.0
    box_length_nm: float = 400.0
    eta_matrix: float = 0.0065
    eta_precipitate: float = 1.0
    bulk_coefficients: tuple[float, ...] = (
        0.0, 0.0, 8.072789087, -81.24549382, 408.0297321, -1244.129167, 2444.046270,
        -3120.635139, 2506.663551, -1151.003178, 230.2006355,
    )


def benchmark1() -> Benchmark1:
    return Benchmark1()


def benchmark4(variant: str = "a") -> Benchmark4:
    """Variants a, b, e, f: C_p = C_m; c, d, g, h: C_p = 1.1 C_m."""
    if variant not in tuple("abcdefgh"):
        from mechanics.errors import InputError

        raise InputError("variant", "one of a..h", variant)
    return Benchmark4(precipitate_stiffness_factor=1.1 if variant in "cdgh" else 1.0)
