"""Per-candidate chemo-mechanical parameters and static descriptors, behind one ``source`` switch.

``properties(candidate, source="literature" | "chgnet")`` returns a frozen :class:`CandidateProperties`
whose ``params`` (:class:`mechanics.parameters.base.MaterialParams`) is what the simulator takes.

Sources:
  literature: end-member lattices, voltages, stiffness, Ω and κ from ``data/literature.json``.
  chgnet: end-member lattices relaxed with CHGNet (``candidates.chgnet_source``); everything else
    from the literature table (CHGNet elastic constants are far too soft to use as absolute values).

Rules for quantities with no composition-resolved data (all stated in ``notes`` as well):
  * stiffness: the LiFePO4 DFT tensor of Maxisch & Ceder (2006) for every candidate (the spectral
    screening model takes one homogeneous stiffness); its uncertainty is raised to 30 % for
    candidates that are not pure Fe.
  * Ω and κ: the LixFePO4 values of Bai, Cogswell & Bazant (2011) for every candidate, isotropic κ;
    uncertainty 50 % for candidates that are not pure Fe (no measured values for the others).
  * Li site density: 4 Li per lithiated Pnma cell of the candidate (Vegard lattice).
  * lattices, voltage, capacity: ``candidates.mixing``.

Static descriptors:
  * volume change ΔV/V = V(LiMPO4)/V(MPO4) − 1.
  * Khachaturyan B_min = min over unit normals n of B(n) for the eigenstrain ε⁰(1) and the stiffness
    (``mechanics.coherency.minimum_B``), with the minimising normal n* (habit-plane normal; B(n) is
    even in every component for an orthorhombic crystal, so components are reported ≥ 0).
  * coherent spinodal. Regular solution per Li site, f(c) = Ω c(1 − c) + kT[c ln c + (1 − c) ln(1 − c)];
    a coherent composition wave of normal n adds B(n) per volume to f''. The most unstable point is
    c = 1/2, where f'' = 4kT − 2Ω per site, so the coherent spinodal is suppressed (no composition
    fluctuation grows, for any n) when the margin
        Δ = 4 k_B T − 2Ω + B_min / ρ_s  > 0.
    Also reported: the coherent critical temperature T_c = (2Ω − B_min/ρ_s) / (4 k_B) (0 if negative).
    Symbols: k_B Boltzmann constant, T temperature, Ω regular-solution parameter per site,
    ρ_s Li sites per volume, B_min in energy per volume (GPa = aJ/nm³). Reference: Cogswell &
    Bazant, ACS Nano 6, 2215 (2012).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from mechanics.errors import InputError
from mechanics.parameters import bazant_lfp, conditions
from mechanics.parameters.base import MaterialParams, OrthorhombicLattice, misfit_from_lattices
from mechanics.units import AJ_PER_NM_PER_J_PER_M, EV_PER_AJ, J_PER_AJ, K_B_EV_PER_K, kT_eV

from . import literature
from .mixing import (
    MixedLattice,
    delithiated_formula,
    li_site_density_per_nm3,
    lithiated_formula,
    mean_voltage,
    misfit_sigma,
    theoretical_capacity_mAh_g,
    vegard,
    volume_change_sigma,
)
from .space import REDOX_ACTIVE_METALS, Candidate

SOURCES = ("literature", "chgnet")
#: Relative 1σ of CHGNet end-member edges used for propagation: the systematic ~1.5 % expansion
#: cancels in misfits; 0.5 % per edge reproduces the ≤ 0.7-point misfit error seen for LiFePO4.
CHGNET_EDGE_REL_SIGMA = 0.005
FOREIGN_STIFFNESS_REL_SIGMA = 0.30
FOREIGN_THERMO_REL_SIGMA = 0.50


@dataclass(frozen=True)
class CandidateProperties:
    """Everything known about one candidate before simulation.

    Fields (units in names; dimensionless strains as fractions, not %):
      composition_id, formula, source: identity (:func:`candidates.composition_id`, the candidate's
        ``.id``) and the property source used.
      fractions: M-site fraction per metal.
      params: MaterialParams handed to the simulator.
      misfit: ε⁰_ii(1) along (a, b, c), from the delithiated lattice.
      volume_change: V(LiMPO4)/V(MPO4) − 1.
      coherency_B_min_GPa: min_n B(n); habit_normal: minimising unit normal (a, b, c components).
      coherent_spinodal_margin_eV: Δ = 4kT − 2Ω + B_min/ρ_s per site; spinodal_suppressed: Δ > 0.
      coherent_critical_temperature_K: (2Ω − B_min/ρ_s)/(4 k_B), ≥ 0.
      voltage_V, capacity_mAh_g, specific_energy_Wh_kg: electrochemistry (capacity-weighted voltage).
      citations: sources of every number; uncertainties: 1σ by quantity name (same unit as the field,
        misfit_* and volume_change as fractions, *_rel relative); notes: rules and caveats applied.
    """

    composition_id: str
    formula: str
    source: str
    fractions: Mapping[str, float]
    params: MaterialParams
    misfit: tuple[float, float, float]
    volume_change: float
    coherency_B_min_GPa: float
    habit_normal: tuple[float, float, float]
    coherent_spinodal_margin_eV: float
    spinodal_suppressed: bool
    coherent_critical_temperature_K: float
    voltage_V: float
    capacity_mAh_g: float
    specific_energy_Wh_kg: float
    citations: tuple[str, ...]
    uncertainties: Mapping[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------------
# end-member lattice providers


def _literature_lattice(formula: str) -> tuple[OrthorhombicLattice, float]:
    entry = literature.lattice_entry(formula)
    return entry.lattice, entry.sigma_A


def _chgnet_lattice_provider(
    cache_dir: str | os.PathLike | None,
) -> Callable[[str], tuple[OrthorhombicLattice, float]]:
    from .chgnet_source import relax_end_member

    def provider(formula: str) -> tuple[OrthorhombicLattice, float]:
        lithiated = formula.startswith("Li")
        metal = formula[2:-3] if lithiated else formula[:-3]
        result = relax_end_member(metal, "lithiated" if lithiated else "delithiated", cache_dir=cache_dir)
        return result.lattice, CHGNET_EDGE_REL_SIGMA * float(np.mean(result.lattice.edges_A))

    return provider


def lattice_provider(source: str = "literature", cache_dir: str | os.PathLike | None = None
                     ) -> Callable[[str], tuple[OrthorhombicLattice, float]]:
    """The end-member lattices of ``source``: ``provider(formula) -> (lattice, 1σ per edge in Å)``, as
    :func:`properties` mixes them (``candidates.mixing.vegard``)."""
    _check_source(source)
    return _literature_lattice if source == "literature" else _chgnet_lattice_provider(cache_dir)


# ---------------------------------------------------------------------------------------------------
# descriptors


def coherency_minimum(
    stiffness_voigt_GPa: np.ndarray,
    misfit: tuple[float, float, float],
    misfit_std: tuple[float, float, float] = (0.0, 0.0, 0.0),
    stiffness_rel_std: float = 0.0,
) -> tuple[float, tuple[float, float, float], float]:
    """Khachaturyan B_min (GPa), habit normal and the 1σ of B_min, via ``mechanics.coherency.minimum_B``.

    The orthorhombic stiffness and a diagonal misfit make B(n) even in each component of n (mmm
    mirrors), so the normal is reported with non-negative components. 1σ: first-order propagation,
    central differences of B_min at misfit ± σ per axis (one batched call) and B ∝ C for a uniform
    stiffness scale: σ_B² = Σ_k ((B(ε + σ_k) − B(ε − σ_k))/2)² + (B σ_C,rel)².
    """
    import torch

    from mechanics.coherency import minimum_B
    from mechanics.stiffness import Stiffness

    C = Stiffness.from_voigt(torch.as_tensor(stiffness_voigt_GPa, dtype=torch.float64))
    diagonals = [np.asarray(misfit, dtype=float)]
    for axis in range(3):
        for sign in (1.0, -1.0):
            shifted = np.array(misfit, dtype=float)
            shifted[axis] += sign * misfit_std[axis]
            diagonals.append(shifted)
    eps = torch.diag_embed(torch.as_tensor(np.stack(diagonals), dtype=torch.float64))  # (7, 3, 3)
    B, normals = minimum_B(C, eps)
    B = B.detach().cpu().numpy()
    n = np.abs(normals[0].detach().cpu().numpy().astype(float))
    n = n / np.linalg.norm(n)
    n[n < 1e-6] = 0.0  # below the resolution of minimum_B's refined normal (~1e-7)
    sigma = float(np.sqrt(np.sum(((B[1::2] - B[2::2]) / 2) ** 2) + (B[0] * stiffness_rel_std) ** 2))
    return float(B[0]), (float(n[0]), float(n[1]), float(n[2])), sigma


def coherent_spinodal(omega_eV: float, B_min_GPa: float, site_density_per_nm3: float,
                      temperature_K: float) -> tuple[float, float]:
    """(Δ in eV per site, coherent critical temperature in K); Δ = 4kT − 2Ω + B_min/ρ_s."""
    elastic_eV = B_min_GPa / site_density_per_nm3 * EV_PER_AJ  # GPa/nm⁻³ = aJ per site
    margin = 4.0 * kT_eV(temperature_K) - 2.0 * omega_eV + elastic_eV
    critical = max(0.0, (2.0 * omega_eV - elastic_eV) / (4.0 * K_B_EV_PER_K))
    return margin, critical


# ---------------------------------------------------------------------------------------------------
# the interface


def _check_source(source: object) -> str:
    if source not in SOURCES:
        raise InputError("source", f"one of {', '.join(repr(s) for s in SOURCES)}", source)
    return source  # type: ignore[return-value]


def properties(
    candidate: Candidate,
    source: str = "literature",
    *,
    temperature_K: float = conditions.STANDARD_TEMPERATURE_K,
    cache_dir: str | os.PathLike | None = None,
) -> CandidateProperties:
    """Parameters and descriptors of ``candidate`` from ``source`` ('literature' or 'chgnet').

    ``cache_dir`` (chgnet only) overrides where relaxations are cached (default
    ``$CHEMOSCREEN_CACHE/chgnet`` or ``~/.cache/chemoscreen/chgnet``). ``temperature_K`` sets the
    temperature of the spinodal criterion and of ``params``.
    """
    if not isinstance(candidate, Candidate):
        raise InputError("candidate", "a candidates.Candidate (from olivine_space or explicit_space)",
                         candidate)
    _check_source(source)
    if isinstance(temperature_K, bool) or not isinstance(temperature_K, (int, float)) or temperature_K <= 0:
        raise InputError("temperature_K", "a positive temperature in K", temperature_K)
    metals = candidate.fractions
    pure_fe = metals == {"Fe": 1.0}
    notes: list[str] = []
    citations: list[str] = []

    provider = lattice_provider(source, cache_dir)
    lithiated: MixedLattice = vegard(metals, provider, "lithiated")
    delithiated: MixedLattice = vegard(metals, provider, "delithiated")
    if source == "literature":
        for metal in metals:
            for formula in dict.fromkeys((lithiated_formula(metal), delithiated_formula(metal))):
                entry = literature.lattice_entry(formula)
                citations.append(entry.citation)
                if entry.kind == "estimate":
                    notes.append(f"{formula} lattice is an estimate: {entry.note}")
    else:
        citations.append(literature.citation("deng2023"))
        notes.append("lattices: CHGNet 0.3.0 relaxations (about 1-1.5 % larger than experiment; misfits "
                     "within ~1 point per axis for Fe and Mn)")
        if "Co" in metals:
            notes.append("CHGNet shrinks a by 5-6 % on delithiating LiCoPO4 against ~1 % measured: "
                         "do not trust Co misfits from this source")
    if len(metals) > 1:
        citations.append(literature.citation("yamada_kudo_liu2001"))
        notes.append("lattices: Vegard interpolation of end members (virtual crystal)")
    if 1.0 - candidate.active_fraction > 0:
        notes.append("inactive dopants keep their 2+ state, their lithium and their LiMPO4 lattice on charge")

    misfit = tuple(float(x) for x in misfit_from_lattices(lithiated.lattice, delithiated.lattice))
    misfit_std = misfit_sigma(lithiated, delithiated)

    voltage, voltage_std = mean_voltage(candidate, lambda m: (literature.voltage_entry(m).value,
                                                              literature.voltage_entry(m).sigma))
    citations.extend(literature.voltage_entry(m).citation for m in metals if m in REDOX_ACTIVE_METALS)
    capacity = theoretical_capacity_mAh_g(candidate)

    stiffness, stiffness_rel, stiffness_citation = literature.stiffness_entry("LiFePO4")
    citations.append(stiffness_citation)
    omega = literature.thermodynamic_entry("omega_J_per_site")
    kappa = literature.thermodynamic_entry("kappa_J_per_m")
    citations.append(omega.citation)
    omega_eV = omega.value / J_PER_AJ * EV_PER_AJ
    kappa_aJ_per_nm = kappa.value * AJ_PER_NM_PER_J_PER_M
    omega_rel, kappa_rel = omega.sigma / omega.value, kappa.sigma / kappa.value
    if not pure_fe:
        stiffness_rel = FOREIGN_STIFFNESS_REL_SIGMA
        omega_rel = kappa_rel = FOREIGN_THERMO_REL_SIGMA
        notes.append("stiffness, omega and kappa: LiFePO4 values used (no composition-resolved data)")

    site_density = li_site_density_per_nm3(lithiated.lattice)
    kinetics = bazant_lfp.bazant_lfp()  # LiFePO4 rate constants for every candidate (no composition data)
    params = MaterialParams(
        name=candidate.formula,
        lithiated=lithiated.lattice,
        delithiated=delithiated.lattice,
        stiffness_voigt_GPa=tuple(tuple(float(v) for v in row) for row in stiffness),
        omega_eV=omega_eV,
        kappa_aJ_per_nm=(kappa_aJ_per_nm,) * 3,
        site_density_per_nm3=site_density,
        voltage_V=voltage,
        capacity_mAh_g=capacity,
        exchange_rate_A_m2=kinetics.exchange_rate_A_m2,
        charge_transfer_alpha=kinetics.charge_transfer_alpha,
        reorganization_energy_kT=kinetics.reorganization_energy_kT,
        temperature_K=float(temperature_K),
        citations=tuple(dict.fromkeys(citations)),
    )
    B_min, normal, B_min_std = coherency_minimum(stiffness, misfit, misfit_std, stiffness_rel)
    margin, critical = coherent_spinodal(omega_eV, B_min, site_density, temperature_K)
    uncertainties = {
        "lattice_lithiated_A": float(max(lithiated.sigma_A)),
        "lattice_delithiated_A": float(max(delithiated.sigma_A)),
        "misfit_a": misfit_std[0], "misfit_b": misfit_std[1], "misfit_c": misfit_std[2],
        "volume_change": volume_change_sigma(lithiated, delithiated),
        "voltage_V": voltage_std,
        "stiffness_rel": stiffness_rel,
        "coherency_B_min_GPa": B_min_std,
        "omega_eV": omega_rel * omega_eV,
        "kappa_aJ_per_nm": kappa_rel * kappa_aJ_per_nm,
    }
    return CandidateProperties(
        composition_id=candidate.id,
        formula=candidate.formula,
        source=source,
        fractions=dict(metals),
        params=params,
        misfit=misfit,  # type: ignore[arg-type]
        volume_change=params.volume_change,
        coherency_B_min_GPa=B_min,
        habit_normal=normal,
        coherent_spinodal_margin_eV=margin,
        spinodal_suppressed=bool(margin > 0),
        coherent_critical_temperature_K=critical,
        voltage_V=voltage,
        capacity_mAh_g=capacity,
        specific_energy_Wh_kg=voltage * capacity,
        citations=params.citations,
        uncertainties=uncertainties,
        notes=tuple(dict.fromkeys(notes)),
    )
