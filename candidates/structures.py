"""pymatgen structures of olivine end members, virtual crystals and small ordered supercells.

End members are built in the Pnma (No. 62) standard setting from the published Wyckoff positions of
LiFePO4 (Streltsov et al. 1993, see ``literature.json``) on each compound's own lattice. For the other
metals and for the delithiated MPO4 we have no primary coordinates in the table, so the LiFePO4
fractional coordinates are reused on the compound's own lattice (Li removed for MPO4) and the
structure's ``properties["provenance"]`` says so; heterosite FePO4 differs from them by a few 0.01 in
fractional coordinates (Andersson et al. 2000). A relaxation (``candidates.chgnet_source``) starts
from these positions and corrects them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pymatgen.core import Lattice, Structure

from mechanics.errors import InputError
from mechanics.parameters.base import OrthorhombicLattice

from . import literature
from .mixing import vegard
from .space import INACTIVE_METALS, OLIVINE_METALS, REDOX_ACTIVE_METALS, Candidate

if TYPE_CHECKING:
    from pymatgen.alchemy.materials import TransformedStructure

SPACE_GROUP = "Pnma"
SPACE_GROUP_NUMBER = 62
#: Largest number of mixed (partially occupied) sites handed to the ordering enumeration; pymatgen's
#: OrderDisorderedStructureTransformation took up to 1.7 s at 16 and did not finish at 32 here.
MAX_MIXED_SITES = 16
STATES = ("lithiated", "delithiated")


def _check_state(state: str) -> str:
    if state not in STATES:
        raise InputError("state", "'lithiated' or 'delithiated'", state)
    return state


def _pnma(lattice: OrthorhombicLattice, m_species: Any, li_species: Any | None,
          oxidation: Mapping[str, float] | None = None) -> Structure:
    sites, _, _ = literature.wyckoff_sites("LiFePO4")
    species, coords = [], []
    for site in sites:
        if site["species"] == "Li":
            if li_species is None:
                continue
            species.append(li_species)
        elif site["species"] == "M":
            species.append(m_species)
        else:
            species.append(site["species"])
        coords.append(site["xyz"])
    structure = Structure.from_spacegroup(
        SPACE_GROUP, Lattice.orthorhombic(*lattice.edges_A), species, coords, tol=1e-3
    )
    if oxidation is not None:
        structure.add_oxidation_state_by_element(dict(oxidation))
    return structure


def _provenance(kind: str, lattice_source: str, **extra: Any) -> dict[str, Any]:
    _, positions_citation, note = literature.wyckoff_sites("LiFePO4")
    return {
        "@module": __name__,
        "kind": kind,
        "space_group": f"{SPACE_GROUP} ({SPACE_GROUP_NUMBER})",
        "positions": positions_citation,
        "positions_note": note,
        "lattice": lattice_source,
        **extra,
    }


def end_member_structure(metal: str, state: str = "lithiated",
                         lattice: OrthorhombicLattice | None = None) -> Structure:
    """LiMPO4 (28 atoms) or MPO4 (24 atoms) conventional Pnma cell.

    ``lattice`` defaults to the literature lattice of the compound. Positions: LiFePO4 (Streltsov et
    al. 1993) for every compound (see the module docstring). ``InputError`` for metals without
    olivine data and for MgPO4, which does not exist (Mg stays 2+ and keeps its lithium).
    """
    _check_state(state)
    if metal not in OLIVINE_METALS:
        raise InputError("metal", f"one of {', '.join(OLIVINE_METALS)}", metal)
    if state == "delithiated" and metal in INACTIVE_METALS:
        raise InputError("metal", f"a redox-active metal for the delithiated state "
                                  f"({', '.join(REDOX_ACTIVE_METALS)}); {metal} stays 2+", metal)
    formula = f"Li{metal}PO4" if state == "lithiated" else f"{metal}PO4"
    if lattice is None:
        entry = literature.lattice_entry(formula)
        lattice, lattice_source = entry.lattice, f"{entry.kind}: {entry.citation}"
    else:
        lattice_source = "given by the caller"
    structure = _pnma(lattice, metal, "Li" if state == "lithiated" else None)
    reused = "" if formula == "LiFePO4" else f"LiFePO4 fractional coordinates reused for {formula}"
    structure.properties["provenance"] = _provenance(
        "end_member", lattice_source, formula=formula, state=state, approximation=reused
    )
    return structure


def virtual_crystal(candidate: Candidate, state: str = "lithiated",
                    end_member_lattice: Callable[[str], tuple[OrthorhombicLattice, float]] | None = None,
                    ) -> Structure:
    """Disordered Pnma cell of the candidate: M site shared by its metals (partial occupancies), lattice
    from Vegard's law (:func:`candidates.mixing.vegard`). In the delithiated state the Li site keeps the
    inactive fraction (inactive dopants keep their lithium)."""
    _check_state(state)
    if end_member_lattice is None:
        def end_member_lattice(formula: str) -> tuple[OrthorhombicLattice, float]:
            entry = literature.lattice_entry(formula)
            return entry.lattice, entry.sigma_A
    mixed = vegard(candidate.fractions, end_member_lattice, state)
    inactive = 1.0 - candidate.active_fraction
    li = "Li" if state == "lithiated" else ({"Li": inactive} if inactive > 0 else None)
    structure = _pnma(mixed.lattice, dict(candidate.metal_fractions), li)
    structure.properties["provenance"] = _provenance(
        "virtual_crystal", "Vegard interpolation of end-member lattices",
        composition_id=candidate.id, state=state, fractions=candidate.fractions,
    )
    return structure


def _oxidation_states(candidate: Candidate, state: str) -> dict[str, float]:
    charged = state == "delithiated"
    states = {"Li": 1, "P": 5, "O": -2}
    states.update({m: (3 if charged and m in REDOX_ACTIVE_METALS else 2) for m in candidate.fractions})
    return states


def _supercell_repeats(candidate: Candidate, state: str, max_mixed_sites: int) -> int:
    """Smallest n (cell repeated n times along c) whose 4n M sites hold integer counts of each metal."""
    inactive = 1.0 - candidate.active_fraction
    for repeats in range(1, max_mixed_sites // 4 + 1):
        sites = 4 * repeats
        counts = [x * sites for x in candidate.fractions.values()]
        if state == "delithiated" and inactive > 0:
            counts.append(inactive * sites)
        if all(abs(c - round(c)) < 1e-6 for c in counts):
            return repeats
    raise InputError(
        "candidate",
        f"fractions representable on at most {max_mixed_sites} M sites (multiples of 1/{max_mixed_sites} "
        "or coarser) for an ordered supercell; use the virtual crystal otherwise",
        candidate.fractions,
    )


def ordered_supercell(candidate: Candidate, state: str = "lithiated",
                      max_mixed_sites: int = MAX_MIXED_SITES) -> TransformedStructure:
    """An ordered supercell of the candidate, with pymatgen provenance.

    The disordered virtual crystal (oxidation states: Li⁺, P⁵⁺, O²⁻, M²⁺, or M³⁺ for active metals
    when delithiated) is repeated along c until each metal count is an integer (at most
    ``max_mixed_sites`` M sites), then ordered with ``OrderDisorderedStructureTransformation``. All
    M-site cations carry the same charge, so every ordering has the same Ewald energy: the returned
    one is the first of a degenerate set, not a ground state. The history holds the candidate's own
    records, the virtual crystal, the supercell and the ordering transformations.
    """
    # pymatgen's transformation stack costs ~1.5 s to import: load it only when ordering is asked for
    from pymatgen.alchemy.materials import TransformedStructure
    from pymatgen.transformations.standard_transformations import (
        OrderDisorderedStructureTransformation,
        SupercellTransformation,
    )

    _check_state(state)
    if isinstance(max_mixed_sites, bool) or not isinstance(max_mixed_sites, int) or max_mixed_sites < 4:
        raise InputError("max_mixed_sites", "an integer >= 4", max_mixed_sites)
    repeats = _supercell_repeats(candidate, state, max_mixed_sites)
    disordered = virtual_crystal(candidate, state)
    provenance = disordered.properties.pop("provenance")
    disordered.add_oxidation_state_by_element(_oxidation_states(candidate, state))
    history = [dict(record) for record in candidate.history] + [provenance]
    transformed = TransformedStructure(disordered, history=history)
    transformed.append_transformation(SupercellTransformation.from_scaling_factors(1, 1, repeats))
    if not transformed.final_structure.is_ordered:
        transformed.append_transformation(OrderDisorderedStructureTransformation())
    return transformed
