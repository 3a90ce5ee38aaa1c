"""Fracture toughness K_Ic of the olivine end members, with where each number comes from.

No direct K_Ic measurement of an olivine phosphate was found (``shared/reference/fracture-kinetics.md``),
so every olivine value here is **estimated** by Griffith's energy balance,
K_Ic = √(2 E γ / (1 − ν²)) (:func:`mechanics.fracture.griffith_k_ic_MPa_sqrt_m`), with the candidate's own
isotropic (Hill) stiffness and a surface energy γ:

- LiFePO4: γ from the first-principles (GGA+U) facet energies of Wang, Zhou, Meng & Ceder, Phys. Rev.
  B 76, 165435 (2007), which span roughly 0.4–1.2 J/m² over the low-index facets (approximate, as read
  from that paper; the central value 0.6 J/m² is a low-energy facet, where cracks run).
- LiMnPO4, LiCoPO4, LiNiPO4, LiMgPO4: no surface energy found here; **assumed equal to LiFePO4's**
  (same olivine framework and P–O bonding) with the same range. This is an assumption, flagged.

Mixtures LiM1_xM2_(1−x)PO4: γ is the metal-fraction-weighted mean of the end members' γ (a linear rule,
stated, not measured) and E, ν are the mixture's own (the candidate's stiffness).

For scale only (a spinel, not an olivine): measured K_Ic of LiMn2O4 particles 0.24 MPa·m^½ (pillar
splitting) and 0.81 MPa·m^½ (crack-opening displacement), Mughal et al., Materials 10, 403 (2017).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mechanics.errors import InputError
from mechanics.fracture import griffith_k_ic_MPa_sqrt_m, isotropic_moduli
from mechanics.parameters.base import MaterialParams

WANG2007 = ("Wang, Zhou, Meng & Ceder, Phys. Rev. B 76, 165435 (2007), GGA+U surface energies "
            "(approximate)")
MUGHAL2017 = "Mughal et al., Materials 10, 403 (2017), LiMn2O4 micro-pillar / COD (spinel, for scale)"


@dataclass(frozen=True)
class SurfaceEnergy:
    """Surface energy of one end member LiMPO4 (J/m²), its range and source; ``estimated`` is True when
    the value is assumed rather than computed or measured for this compound."""

    metal: str
    surface_energy_J_m2: float
    low_J_m2: float
    high_J_m2: float
    source: str
    estimated: bool


@dataclass(frozen=True)
class FractureToughness:
    """K_Ic of one candidate (MPa·m^½) with its range (from the γ range), how it was obtained and
    whether it is an estimate (always True for olivines today)."""

    k_ic_MPa_sqrt_m: float
    low_MPa_sqrt_m: float
    high_MPa_sqrt_m: float
    source: str
    estimated: bool


SURFACE_ENERGIES: dict[str, SurfaceEnergy] = {
    "Fe": SurfaceEnergy("Fe", 0.6, 0.4, 1.2, WANG2007, estimated=False),
    **{m: SurfaceEnergy(m, 0.6, 0.4, 1.2, f"assumed equal to LiFePO4's ({WANG2007})", estimated=True)
       for m in ("Mn", "Co", "Ni", "Mg")},
}

# measured K_Ic of olivines (MPa·m^½) by metal: none found; a measured value would be used before Griffith
MEASURED_K_IC: dict[str, tuple[float, float, float, str]] = {}


def fracture_toughness(params: MaterialParams, fractions: Mapping[str, float]) -> FractureToughness:
    """K_Ic of a candidate from its metal fractions and its own stiffness (module docstring for the rules).

    Args:
        params: the candidate's :class:`MaterialParams` (its stiffness gives E and ν).
        fractions: metal-site fractions, e.g. ``{"Fe": 0.5, "Mn": 0.5}`` (summing to 1).

    Returns:
        :class:`FractureToughness` with its range and source; ``estimated`` is True (Griffith estimate).

    Raises:
        InputError: (field ``k_ic``) a metal with neither a measured K_Ic nor a surface energy, or
            fractions that do not sum to 1.
    """
    fracs = {str(m): float(x) for m, x in dict(fractions).items() if float(x) != 0.0}
    if not fracs or abs(sum(fracs.values()) - 1.0) > 1e-6 or min(fracs.values()) < 0:
        raise InputError("k_ic", "metal fractions ≥ 0 summing to 1 to look up K_Ic", fractions)
    if len(fracs) == 1 and next(iter(fracs)) in MEASURED_K_IC:
        k, low, high, source = MEASURED_K_IC[next(iter(fracs))]
        return FractureToughness(k, low, high, source, estimated=False)
    unknown = sorted(set(fracs) - set(SURFACE_ENERGIES))
    if unknown:
        raise InputError("k_ic", f"metals with a measured K_Ic or a surface energy "
                         f"({', '.join(sorted(SURFACE_ENERGIES))}) to estimate it", unknown)
    E, nu = isotropic_moduli(params.stiffness_voigt())
    gamma = sum(x * SURFACE_ENERGIES[m].surface_energy_J_m2 for m, x in fracs.items())
    low = sum(x * SURFACE_ENERGIES[m].low_J_m2 for m, x in fracs.items())
    high = sum(x * SURFACE_ENERGIES[m].high_J_m2 for m, x in fracs.items())
    assumed = any(SURFACE_ENERGIES[m].estimated for m in fracs)
    source = (f"estimated: Griffith sqrt(2E*gamma/(1-nu^2)), E={E:.0f} GPa, nu={nu:.2f}, "
              f"gamma={gamma:.2f} J/m2 ({'assumed from LiFePO4' if assumed else WANG2007})")
    return FractureToughness(
        k_ic_MPa_sqrt_m=griffith_k_ic_MPa_sqrt_m(E, nu, gamma),
        low_MPa_sqrt_m=griffith_k_ic_MPa_sqrt_m(E, nu, low),
        high_MPa_sqrt_m=griffith_k_ic_MPa_sqrt_m(E, nu, high),
        source=source,
        estimated=True,
    )


__all__ = ["MEASURED_K_IC", "SURFACE_ENERGIES", "FractureToughness", "SurfaceEnergy", "fracture_toughness"]
