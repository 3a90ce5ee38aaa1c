"""Mixing rules that turn end-member data into the properties of a solid solution.

Symbols: x_i M-site fraction of metal i (Σ x_i = 1); A = redox-active metals (Fe, Mn, Co, Ni);
I = inactive dopants (Mg).

* Lattices (Vegard's law, virtual crystal):
    a_k(lithiated)   = Σ_i x_i a_k(LiM_iPO4)
    a_k(delithiated) = Σ_{i∈A} x_i a_k(M_iPO4) + Σ_{j∈I} x_j a_k(LiM_jPO4)
  An inactive cation stays 2+ and keeps one Li per formula unit on charge, so its share of the cell
  keeps the lithiated lattice. Measured for LiFe(y)Mn(1−y)PO4 by Yamada, Kudo & Liu (2001); the
  CHGNet study in the project reference found lithiated mixtures within 0.09 % of Vegard and
  delithiated ones within 0.73 %, which the uncertainties below add for mixtures.
* Voltage: capacity-weighted mean of the plateaus, V = Σ_{i∈A} x_i V_i / Σ_{i∈A} x_i (each active
  metal gives one electron per unit of its fraction, at its own plateau, as the two plateaus of
  LiFe(y)Mn(1−y)PO4 show).
* Capacity (one Li per active metal): Q = (Σ_{i∈A} x_i) · F / (3.6 · M) in mAh/g, with
  F / 3.6 = 26801.5 mAh/mol and M the molar mass (g/mol) of the lithiated formula.
* Specific energy: V · Q (Wh/kg of active material).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from mechanics.parameters.base import OrthorhombicLattice
from mechanics.units import FARADAY_C_PER_MOL

from .space import INACTIVE_METALS, REDOX_ACTIVE_METALS, Candidate

MAH_PER_MOL = FARADAY_C_PER_MOL / 3.6  # 1 mAh = 3.6 C
#: Relative deviation from Vegard's law added (in quadrature) to mixtures: lithiated, delithiated.
VEGARD_REL_SIGMA = {"lithiated": 0.0009, "delithiated": 0.0073}


def lithiated_formula(metal: str) -> str:
    return f"Li{metal}PO4"


def delithiated_formula(metal: str) -> str:
    """MPO4 for active metals; inactive ones keep their lithium (LiMgPO4)."""
    return lithiated_formula(metal) if metal in INACTIVE_METALS else f"{metal}PO4"


@dataclass(frozen=True)
class MixedLattice:
    """Vegard lattice of a mixture with the 1σ of each edge (Å)."""

    lattice: OrthorhombicLattice
    sigma_A: tuple[float, float, float]


def vegard(
    fractions: Mapping[str, float],
    end_member: Callable[[str], tuple[OrthorhombicLattice, float]],
    state: str,
) -> MixedLattice:
    """Vegard interpolation of the end-member lattices for ``state`` = 'lithiated' | 'delithiated'.

    ``end_member(formula)`` returns (lattice, 1σ per edge in Å). Independent end-member errors add
    in quadrature, weighted by x_i; mixtures of two or more metals add the Vegard deviation
    :data:`VEGARD_REL_SIGMA`.
    """
    formula_of = lithiated_formula if state == "lithiated" else delithiated_formula
    edges = np.zeros(3)
    variance = np.zeros(3)
    for metal, x in fractions.items():
        lattice, sigma = end_member(formula_of(metal))
        edges += x * np.asarray(lattice.edges_A)
        variance += (x * sigma) ** 2
    if len(fractions) > 1:
        variance += (VEGARD_REL_SIGMA[state] * edges) ** 2
    return MixedLattice(OrthorhombicLattice(*map(float, edges)), tuple(map(float, np.sqrt(variance))))


def misfit_sigma(lithiated: MixedLattice, delithiated: MixedLattice) -> tuple[float, float, float]:
    """1σ of ε⁰_k = a_k(li)/a_k(de) − 1 from independent edge errors (first order)."""
    li = np.asarray(lithiated.lattice.edges_A)
    de = np.asarray(delithiated.lattice.edges_A)
    s_li = np.asarray(lithiated.sigma_A)
    s_de = np.asarray(delithiated.sigma_A)
    return tuple(map(float, np.sqrt((s_li / de) ** 2 + (li * s_de / de**2) ** 2)))


def volume_change_sigma(lithiated: MixedLattice, delithiated: MixedLattice) -> float:
    """1σ of ΔV/V = V(li)/V(de) − 1 (relative edge errors add in quadrature)."""
    rel = np.concatenate(
        [np.asarray(m.sigma_A) / np.asarray(m.lattice.edges_A) for m in (lithiated, delithiated)]
    )
    ratio = lithiated.lattice.volume_A3 / delithiated.lattice.volume_A3
    return float(ratio * np.sqrt(np.sum(rel**2)))


def mean_voltage(candidate: Candidate, plateau: Callable[[str], tuple[float, float]]) -> tuple[float, float]:
    """Capacity-weighted mean voltage and its 1σ; ``plateau(metal)`` → (V, σ_V)."""
    active = {m: x for m, x in candidate.metal_fractions if m in REDOX_ACTIVE_METALS}
    total = sum(active.values())
    values = {m: plateau(m) for m in active}
    voltage = sum(x * values[m][0] for m, x in active.items()) / total
    sigma = float(np.sqrt(sum((x * values[m][1]) ** 2 for m, x in active.items()))) / total
    return voltage, sigma


def theoretical_capacity_mAh_g(candidate: Candidate) -> float:
    """Q = (Σ active x_i) · F/3.6 / M(lithiated formula), one Li per active metal, in mAh/g."""
    return candidate.active_fraction * MAH_PER_MOL / float(candidate.composition.weight)


def li_site_density_per_nm3(lattice: OrthorhombicLattice, li_per_cell: int = 4) -> float:
    """Li sites per nm³: 4 per Pnma olivine cell (Z = 4) of volume a·b·c (Å³ → nm³: × 1e-3)."""
    return li_per_cell / (lattice.volume_A3 * 1.0e-3)
