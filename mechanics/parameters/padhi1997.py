"""Lattice parameters of LiFePO4 and FePO4 (heterosite).

Source: A. K. Padhi, K. S. Nanjundaswamy, J. B. Goodenough, "Phospho-olivines as positive-electrode
materials for rechargeable lithium batteries", J. Electrochem. Soc. 144, 1188 (1997), Table I
(orthorhombic Pnma, a > b > c, Å). Misfit from these (a, b, c): +5.20 %, +3.76 %, −2.01 %;
ΔV/V(FePO4) = +7.0 %.
"""

from __future__ import annotations

from mechanics.parameters.base import OrthorhombicLattice

LIFEPO4 = OrthorhombicLattice(a_A=10.332, b_A=6.010, c_A=4.692)  # Padhi et al. (1997)
FEPO4 = OrthorhombicLattice(a_A=9.821, b_A=5.792, c_A=4.788)  # Padhi et al. (1997)
CITATION = "Padhi, Nanjundaswamy, Goodenough, J. Electrochem. Soc. 144, 1188 (1997)"


def lithiated() -> OrthorhombicLattice:
    """LiFePO4 cell edges (Å)."""
    return LIFEPO4


def delithiated() -> OrthorhombicLattice:
    """FePO4 (heterosite) cell edges (Å)."""
    return FEPO4
