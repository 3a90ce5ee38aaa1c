"""The reference LixFePO4 record used across chemoscreen, composed from the per-source modules.

- lattices: Padhi et al. (1997) → misfit (+5.20 %, +3.76 %, −2.01 %) along (a, b, c);
- stiffness: Maxisch & Ceder (2006), the LiFePO4 row (DFT GGA+U), taken composition independent;
- Ω, κ (isotropic), ρ_s, k0, α: Bai, Cogswell & Bazant (2011); λ: Fraggedakis et al. (2021);
- temperature 298.15 K (IUPAC standard temperature, :mod:`mechanics.parameters.conditions`);
- voltage 3.43 V (middle of the 3.42–3.45 V plateau vs Li/Li⁺, lfp.md);
- capacity F/(3.6 M) = 26801.4 / 157.757 = 169.89 mAh/g, M(LiFePO4) = 157.757 g/mol.
"""

from __future__ import annotations

from mechanics.parameters import bazant_lfp, conditions, maxisch_ceder2006, padhi1997
from mechanics.parameters.base import MaterialParams
from mechanics.units import FARADAY_C_PER_MOL

MOLAR_MASS_LIFEPO4_G_MOL = 157.757  # Li 6.94 + Fe 55.845 + P 30.974 + 4 O 15.999 (IUPAC)
VOLTAGE_LFP_V = 3.43  # plateau 3.42-3.45 V vs Li/Li+ (lfp.md)


def capacity_mAh_g(molar_mass_g_mol: float, li_per_formula: float = 1.0) -> float:
    """Theoretical capacity F n / (3.6 M) in mAh/g (1 mAh = 3.6 C)."""
    return FARADAY_C_PER_MOL * li_per_formula / 3.6 / molar_mass_g_mol


def lfp_params() -> MaterialParams:
    """LixFePO4 reference parameters (module docstring for the sources)."""
    b = bazant_lfp.bazant_lfp()
    kappa = b.kappa_aJ_per_nm
    return MaterialParams(
        name="LiFePO4",
        lithiated=padhi1997.LIFEPO4,
        delithiated=padhi1997.FEPO4,
        stiffness_voigt_GPa=maxisch_ceder2006.LIFEPO4.voigt_tuple(),
        omega_eV=b.omega_eV,
        kappa_aJ_per_nm=(kappa, kappa, kappa),
        site_density_per_nm3=b.site_density_per_nm3,
        voltage_V=VOLTAGE_LFP_V,
        capacity_mAh_g=capacity_mAh_g(MOLAR_MASS_LIFEPO4_G_MOL),
        exchange_rate_A_m2=b.exchange_rate_A_m2,
        charge_transfer_alpha=b.charge_transfer_alpha,
        reorganization_energy_kT=b.reorganization_energy_kT,
        temperature_K=conditions.STANDARD_TEMPERATURE_K,
        citations=(padhi1997.CITATION, maxisch_ceder2006.CITATION, *bazant_lfp.CITATIONS,
                   "voltage 3.43 V: plateau 3.42-3.45 V vs Li/Li+ (lfp.md)"),
    )
