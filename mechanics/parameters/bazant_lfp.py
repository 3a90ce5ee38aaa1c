"""Thermodynamic and kinetic constants of LixFePO4 used by the Bazant group (and MPET defaults).

Sources (values as tabulated in ``shared/reference/lfp.md``):
- Ω, κ: D. A. Cogswell's fit in P. Bai, D. A. Cogswell, M. Z. Bazant, "Suppression of phase separation
  in LiFePO4 nanoparticles during battery discharge", Nano Lett. 11, 4890 (2011).
- B (mean-field coherency strain coefficient): D. A. Cogswell, M. Z. Bazant, "Coherency strain and the
  kinetics of phase separation in LiFePO4 nanoparticles", ACS Nano 6, 2215 (2012); it equals the
  minimum over normals of Khachaturyan's B(n) for their misfit (0.05, 0.028, −0.025) and stiffness.
- k0, α: Bai et al. (2011) / MPET defaults. λ: D. Fraggedakis et al., "Theory of coupled ion-electron
  transfer kinetics", Electrochim. Acta 367, 137432 (2021).
- ρ_s: 4 Li per LiFePO4 unit cell of 291.4 Å³.
"""

from __future__ import annotations

from dataclasses import dataclass

from mechanics.units import AJ_PER_NM_PER_J_PER_M, EV_PER_AJ, J_PER_AJ, PER_NM3_PER_PER_M3

CITATIONS = (
    "Bai, Cogswell, Bazant, Nano Lett. 11, 4890 (2011)",
    "Cogswell & Bazant, ACS Nano 6, 2215 (2012)",
    "Fraggedakis et al., Electrochim. Acta 367, 137432 (2021)",
)


@dataclass(frozen=True)
class BazantLFP:
    """Constants of the Bazant-group LixFePO4 model (units in the names)."""

    omega_J: float = 1.856e-20  # Bai et al. (2011): 4.51 kT at 298 K
    kappa_J_per_m: float = 5.0148e-10  # Bai et al. (2011), isotropic
    coherency_B_GPa: float = 0.1916  # Cogswell & Bazant (2012)
    site_density_per_m3: float = 1.3793e28  # 4 Li / 291.4 Å^3
    exchange_rate_A_m2: float = 0.16  # Bai et al. (2011) / MPET default
    charge_transfer_alpha: float = 0.5  # Bai et al. (2011)
    reorganization_energy_kT: float = 8.3  # Fraggedakis et al. (2021)
    misfit_cogswell: tuple[float, float, float] = (0.05, 0.028, -0.025)  # Cogswell & Bazant (2012)

    @property
    def omega_eV(self) -> float:
        return self.omega_J / J_PER_AJ * EV_PER_AJ

    @property
    def kappa_aJ_per_nm(self) -> float:
        return self.kappa_J_per_m * AJ_PER_NM_PER_J_PER_M

    @property
    def site_density_per_nm3(self) -> float:
        return self.site_density_per_m3 * PER_NM3_PER_PER_M3


def bazant_lfp() -> BazantLFP:
    return BazantLFP()
