"""The one internal unit system of the mechanics kernels.

Lengths in nm, stresses and energy densities in GPa (1 GPa = 1 aJ/nm³), energies in aJ (1e-18 J),
times in s, temperatures in K. Public fields carry their unit in their name; conversions happen at the
edges through the constants below.
"""

from __future__ import annotations

# energy
J_PER_AJ = 1.0e-18
AJ_PER_EV = 1.602176634e-19 / J_PER_AJ  # 0.1602176634 aJ per eV (exact, SI 2019)
EV_PER_AJ = 1.0 / AJ_PER_EV

# length
M_PER_NM = 1.0e-9
ANGSTROM_PER_NM = 10.0

# Boltzmann constant
K_B_EV_PER_K = 8.617333262e-5  # eV/K (exact, SI 2019)
K_B_AJ_PER_K = K_B_EV_PER_K * AJ_PER_EV

# electrochemistry
FARADAY_C_PER_MOL = 96485.33212  # C/mol (exact, SI 2019)
ELEMENTARY_CHARGE_C = 1.602176634e-19

# gradient energy: 1 J/m = 1e18 aJ / 1e9 nm = 1e9 aJ/nm
AJ_PER_NM_PER_J_PER_M = 1.0e9
# number density: 1 m^-3 = 1e-27 nm^-3
PER_NM3_PER_PER_M3 = 1.0e-27
# energy density: 1 GPa = 1 aJ/nm^3 = 1e9 J/m^3 = 1e3 MJ/m^3
MJ_PER_M3_PER_GPA = 1.0e3
MPA_PER_GPA = 1.0e3


def kT_aJ(temperature_K: float) -> float:
    """Thermal energy k_B T in aJ."""
    return K_B_AJ_PER_K * temperature_K


def kT_eV(temperature_K: float) -> float:
    """Thermal energy k_B T in eV."""
    return K_B_EV_PER_K * temperature_K
