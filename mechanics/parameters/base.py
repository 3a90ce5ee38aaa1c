"""Frozen parameter records shared by the simulator, the candidate generator and the screening.

Crystal frame: orthorhombic Pnma olivine, axes (a, b, c) = (x, y, z). Voigt order
(11, 22, 33, 23, 13, 12), i.e. index 4 = bc shear (C44), 5 = ac shear (C55), 6 = ab shear (C66).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mechanics.errors import InputError


@dataclass(frozen=True)
class OrthorhombicLattice:
    """Orthorhombic cell edges in Å along a, b, c."""

    a_A: float
    b_A: float
    c_A: float

    def __post_init__(self) -> None:
        for name in ("a_A", "b_A", "c_A"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise InputError(name, "a positive finite length in Å", value)

    @property
    def edges_A(self) -> tuple[float, float, float]:
        return (self.a_A, self.b_A, self.c_A)

    @property
    def volume_A3(self) -> float:
        return self.a_A * self.b_A * self.c_A


def misfit_from_lattices(
    lithiated: OrthorhombicLattice, delithiated: OrthorhombicLattice
) -> tuple[float, float, float]:
    """ε⁰_ii(1) = (a_i(LiMPO4) − a_i(MPO4)) / a_i(MPO4), the architecture's convention."""
    return tuple(
        (li - de) / de for li, de in zip(lithiated.edges_A, delithiated.edges_A, strict=True)
    )  # type: ignore[return-value]


@dataclass(frozen=True)
class MaterialParams:
    """Everything the phase-field simulator needs to know about one olivine cathode.

    Fields (units in the names):
      name: label, e.g. the reduced formula of the lithiated end, ``LiFePO4``.
      lithiated, delithiated: cell edges of LiMPO4 and MPO4 (Å).
      misfit: ε⁰_ii(1) along (a, b, c), dimensionless, measured from the delithiated lattice.
      stiffness_voigt_GPa: 6×6 Voigt stiffness in the crystal frame (GPa), taken as composition
        independent by the spectral screening model.
      omega_eV: regular-solution interaction per Li site (eV).
      kappa_aJ_per_nm: gradient-energy coefficient along (a, b, c) (aJ/nm = 1e-9 J/m), in
        F = ∫ ½ κ_i (∂_i c)² dV.
      site_density_per_nm3: Li sites per nm³.
      voltage_V: open-circuit plateau vs Li/Li⁺ (V).
      capacity_mAh_g: theoretical capacity, one Li per formula unit (mAh/g).
      specific_energy_Wh_kg: voltage × capacity (Wh/kg of active material).
      exchange_rate_A_m2: Butler-Volmer exchange current density k0 (A/m²).
      charge_transfer_alpha: Butler-Volmer symmetry factor.
      reorganization_energy_kT: CIET reorganisation energy λ in units of k_B T.
      temperature_K: temperature (K).
      citations: where each number came from.

    Every number is required: the values come from the cited modules of :mod:`mechanics.parameters`
    (e.g. :func:`mechanics.parameters.lfp.lfp_params`; kinetics in
    :mod:`mechanics.parameters.bazant_lfp`, temperature in :mod:`mechanics.parameters.conditions`).
    """

    name: str
    lithiated: OrthorhombicLattice
    delithiated: OrthorhombicLattice
    stiffness_voigt_GPa: tuple[tuple[float, ...], ...]
    omega_eV: float
    kappa_aJ_per_nm: tuple[float, float, float]
    site_density_per_nm3: float
    voltage_V: float
    capacity_mAh_g: float
    exchange_rate_A_m2: float
    charge_transfer_alpha: float
    reorganization_energy_kT: float
    temperature_K: float
    citations: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        voigt = np.asarray(self.stiffness_voigt_GPa, dtype=float)
        if voigt.shape != (6, 6):
            raise InputError("stiffness_voigt_GPa", "a 6x6 Voigt matrix in GPa", voigt.shape)
        if not np.allclose(voigt, voigt.T):
            raise InputError("stiffness_voigt_GPa", "a symmetric matrix")
        if np.linalg.eigvalsh(voigt).min() <= 0:
            raise InputError("stiffness_voigt_GPa", "a positive definite matrix")
        if self.site_density_per_nm3 <= 0:
            raise InputError("site_density_per_nm3", "a number > 0", self.site_density_per_nm3)
        if len(self.kappa_aJ_per_nm) != 3 or min(self.kappa_aJ_per_nm) <= 0:
            raise InputError("kappa_aJ_per_nm", "three positive numbers (a, b, c) in aJ/nm",
                             self.kappa_aJ_per_nm)

    @property
    def misfit(self) -> tuple[float, float, float]:
        return misfit_from_lattices(self.lithiated, self.delithiated)

    @property
    def volume_change(self) -> float:
        """(V(LiMPO4) − V(MPO4)) / V(MPO4), dimensionless."""
        return self.lithiated.volume_A3 / self.delithiated.volume_A3 - 1.0

    @property
    def specific_energy_Wh_kg(self) -> float:
        return self.voltage_V * self.capacity_mAh_g

    def misfit_tensor(self) -> np.ndarray:
        """ε⁰(1) as a 3×3 diagonal tensor in the crystal frame."""
        return np.diag(np.asarray(self.misfit, dtype=float))

    def stiffness_voigt(self) -> np.ndarray:
        return np.asarray(self.stiffness_voigt_GPa, dtype=float)
