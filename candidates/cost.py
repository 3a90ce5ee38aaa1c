"""Closed-form objectives of a composition: usable capacity in a voltage window, material cost, supply risk.

Everything here follows from the M-site fractions alone (no simulation), exactly.

Redox plateaus. Each redox-active metal i gives one electron per unit of its fraction x_i at its own
plateau V_i (the literature table ``data/literature.json``: Fe²⁺/³⁺ 3.43 V, Mn 4.1, Co 4.8, Ni 5.1 V vs
Li/Li⁺), as the separate plateaus of LiFe(y)Mn(1−y)PO4 show. With an electrolyte stable up to V_max only
the plateaus with V_i ≤ V_max can be cycled:

    Q_usable = Σ_{i∈A, V_i ≤ V_max} x_i · F/3.6 / M        (mAh/g)
    E_usable = Σ_{i∈A, V_i ≤ V_max} x_i V_i · F/3.6 / M    (Wh/kg)
    f_usable = Q_usable / Q                                 (usable fraction of the theoretical capacity)

with M the molar mass of the lithiated formula Li M PO4 (g/mol) and F/3.6 = 26801.5 mAh/mol.

Raw-material cost (``data/precursors.json``: one precursor per element, price, source, period; see
:func:`precursors` for how a cited commodity price becomes a precursor price). One mole
of LiMPO4 needs n_p = ν_e / ν_{e,p} moles of the precursor p of each element e (ν_e atoms of e per
formula unit of LiMPO4, ν_{e,p} per formula unit of p: ½ Li2CO3 per Li, one NH4H2PO4 per P, one metal
sulfate per metal):

    cost_USD_per_kg  = Σ_p n_p M_p c_p / M          (c_p in USD/kg, M_p, M in g/mol)
    cost_USD_per_kWh = cost_USD_per_kg / (E_usable / 1000)

This is the stoichiometric raw-material cost only: no processing, coating, yield loss, energy or margin.
It is undefined (NaN) when no capacity is usable.

Supply risk. pymatgen's Herfindahl–Hirschman indices (``pymatgen.analysis.hhi.HHIModel``, data of
Gaultois et al., Chem. Mater. 25, 2911 (2013), on the 0–10,000 scale) used as they are: the index of the
lithiated compound is the mass-fraction-weighted mean of its elements' indices,
HHI = Σ_e w_e HHI_e with w_e the mass fraction of element e. ``supply_risk_hhi`` is the production
index, ``supply_risk_hhi_reserve`` the reserves index.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

from mechanics.errors import InputError

from . import literature
from .mixing import MAH_PER_MOL
from .space import REDOX_ACTIVE_METALS, validate_fractions

PRICES_SCHEMA = "chemoscreen.precursor_prices/2"
#: Commodity price units understood in ``precursors.json``, as USD per kg of the commodity (``USD/mtu``:
#: a metric ton unit, 10 kg of the contained element, so per kg of contained element).
UNIT_TO_USD_PER_KG = {"USD/kg": 1.0, "USD/t": 1e-3, "USD/lb": 1.0 / 0.45359237, "USD/mtu": 0.1}
#: Default electrolyte stability limit (V vs Li/Li⁺) of common carbonate electrolytes (docs/screening.md).
DEFAULT_MAX_VOLTAGE_V = 4.5
#: A candidate with less than this fraction of its theoretical capacity usable is infeasible.
MIN_USABLE_FRACTION = 0.5
HHI_SOURCE = ("M. W. Gaultois et al., Chem. Mater. 25, 2911 (2013), via pymatgen.analysis.hhi "
              "(mass-fraction-weighted element indices)")


@dataclass(frozen=True)
class Precursor:
    """The precursor that supplies one element.

    Fields: element supplied; formula (pymatgen-parsable, hydrates as ``(H2O)7``); molar_mass_g_mol;
    atoms_per_unit (atoms of ``element`` per formula unit of the precursor); price_USD_per_kg and its
    relative 1σ sigma_rel; kind (``cited`` or ``approximate``, see the data file); period; citation;
    floor_USD_per_kg: for an ``approximate`` price, the cited lower bound (the element priced at its
    content in the mined commodity), else None; floor_citation: its source.
    """

    element: str
    formula: str
    molar_mass_g_mol: float
    atoms_per_unit: float
    price_USD_per_kg: float
    sigma_rel: float
    kind: str
    period: str
    citation: str
    floor_USD_per_kg: float | None = None
    floor_citation: str = ""


@dataclass(frozen=True)
class Plateau:
    """One redox couple of a candidate: metal, voltage (V vs Li/Li⁺) and its M-site fraction."""

    metal: str
    voltage_V: float
    fraction: float


@dataclass(frozen=True)
class StaticObjectives:
    """Closed-form objectives of one composition in a voltage window (see the module docstring).

    Fields (units in names): max_voltage_V (the window used); usable_capacity_mAh_g,
    usable_specific_energy_Wh_kg, usable_fraction (Q_usable / Q); cost_USD_per_kg and cost_USD_per_kWh
    (raw materials only; NaN when nothing is usable); supply_risk_hhi (production) and
    supply_risk_hhi_reserve; above_window: the plateaus above the window.
    """

    max_voltage_V: float
    usable_capacity_mAh_g: float
    usable_specific_energy_Wh_kg: float
    usable_fraction: float
    cost_USD_per_kg: float
    cost_USD_per_kWh: float
    supply_risk_hhi: float
    supply_risk_hhi_reserve: float
    above_window: tuple[Plateau, ...]

    def metrics(self) -> dict[str, float]:
        """The numeric fields by metric name (``above_window`` and the window itself left out)."""
        return {"usable_capacity_mAh_g": self.usable_capacity_mAh_g,
                "usable_specific_energy_Wh_kg": self.usable_specific_energy_Wh_kg,
                "usable_fraction": self.usable_fraction, "cost_USD_per_kg": self.cost_USD_per_kg,
                "cost_USD_per_kWh": self.cost_USD_per_kWh, "supply_risk_hhi": self.supply_risk_hhi,
                "supply_risk_hhi_reserve": self.supply_risk_hhi_reserve}


def _commodity_USD_per_kg_element(commodity: Mapping, element: str) -> float:
    """USD per kg of contained ``element`` from a commodity price row (price, unit, element_fraction)."""
    unit = commodity["unit"]
    if unit not in UNIT_TO_USD_PER_KG:
        raise RuntimeError(f"precursors.json: {element}: unit {unit!r} not in {sorted(UNIT_TO_USD_PER_KG)}")
    per_kg_commodity = float(commodity["price"]) * UNIT_TO_USD_PER_KG[unit]
    return per_kg_commodity / float(commodity.get("element_fraction", 1.0))


@cache
def precursors() -> dict[str, Precursor]:
    """The shipped precursor table by element (cached; read from ``candidates/data/precursors.json``).

    A ``cited`` row is priced from its source's annual average: directly (``basis: precursor``, e.g.
    battery-grade Li2CO3) or by element content (``basis: element_content``: the precursor's mass fraction
    of the element times the commodity price per kg of contained element, e.g. CoSO4·7H2O from cobalt
    cathode). An ``approximate`` row carries a market level of the chemical and a cited ``floor``: the
    element priced at its content in the mined commodity, which leaves out the conversion to the chemical.
    """
    from pymatgen.core import Composition, Element

    text = resources.files("candidates").joinpath("data/precursors.json").read_text(encoding="utf-8")
    table = json.loads(text)
    if table.get("schema") != PRICES_SCHEMA:
        raise RuntimeError(f"precursors.json: schema {table.get('schema')!r} != {PRICES_SCHEMA}")
    out = {}
    for element, row in table["precursors"].items():
        composition = Composition(row["formula"])
        molar_mass = float(composition.weight)
        atoms = float(composition[element])
        mass_fraction = atoms * float(Element(element).atomic_mass) / molar_mass
        if row["kind"] == "cited":
            commodity = row["commodity"]
            if row["basis"] == "precursor":
                price = float(commodity["price"]) * UNIT_TO_USD_PER_KG[commodity["unit"]]
            else:
                price = _commodity_USD_per_kg_element(commodity, element) * mass_fraction
        else:
            price = float(row["price_USD_per_kg"])
        floor, floor_citation = None, ""
        if "floor" in row:
            floor = _commodity_USD_per_kg_element(row["floor"], element) * mass_fraction
            floor_citation = table["references"][row["floor"]["ref"]]
        out[element] = Precursor(
            element=element, formula=row["formula"], molar_mass_g_mol=molar_mass, atoms_per_unit=atoms,
            price_USD_per_kg=price, sigma_rel=float(row["sigma_rel"]), kind=row["kind"], period=row["period"],
            citation=table["references"][row["ref"]], floor_USD_per_kg=floor, floor_citation=floor_citation)
    return out


def _checked(fractions: Mapping[str, float]) -> dict[str, float]:
    return validate_fractions(fractions, "fractions")


def _molar_mass_g_mol(fractions: Mapping[str, float]) -> float:
    from pymatgen.core import Composition

    return float(Composition({"Li": 1.0, **fractions, "P": 1.0, "O": 4.0}).weight)


def redox_plateaus(fractions: Mapping[str, float]) -> tuple[Plateau, ...]:
    """The redox plateaus of a composition, one per active metal, lowest voltage first."""
    fractions = _checked(fractions)
    plateaus = [Plateau(m, float(literature.voltage_entry(m).value), float(x))
                for m, x in fractions.items() if m in REDOX_ACTIVE_METALS]
    return tuple(sorted(plateaus, key=lambda p: (p.voltage_V, p.metal)))


def raw_material_cost_USD_per_kg(fractions: Mapping[str, float],
                                 prices: Mapping[str, Precursor] | None = None) -> float:
    """Stoichiometric precursor cost of one kg of the lithiated olivine (USD/kg), see the module docstring."""
    fractions = _checked(fractions)
    prices = precursors() if prices is None else prices
    atoms = {"Li": 1.0, "P": 1.0, **fractions}  # oxygen comes with the precursors
    missing = sorted(set(atoms) - set(prices))
    if missing:
        expected = f"a precursor price for every element ({', '.join(sorted(atoms))})"
        raise InputError("prices", expected, missing)
    grams_cost = sum(count / p.atoms_per_unit * p.molar_mass_g_mol * p.price_USD_per_kg
                     for p, count in ((prices[e], n) for e, n in atoms.items()))
    return grams_cost / _molar_mass_g_mol(fractions)


def supply_risk_hhi(fractions: Mapping[str, float]) -> tuple[float, float]:
    """(production, reserves) HHI of the lithiated compound from ``pymatgen.analysis.hhi`` as it is."""
    from pymatgen.analysis.hhi import HHIModel
    from pymatgen.core import Composition

    fractions = _checked(fractions)
    production, reserve = HHIModel().get_hhi(Composition({"Li": 1.0, **fractions, "P": 1.0, "O": 4.0}))
    if production is None:
        raise InputError("fractions", "elements listed in pymatgen's HHI table", fractions)
    return float(production), float(reserve)


def check_max_voltage(value: object, field: str = "--max-voltage") -> float:
    """A finite voltage in (0, 10] V, else ``InputError`` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 10.0:
        raise InputError(field, "an upper voltage limit in V vs Li/Li+, in (0, 10]", value)
    return float(value)


def static_objectives(fractions: Mapping[str, float], max_voltage_V: float = DEFAULT_MAX_VOLTAGE_V,
                      prices: Mapping[str, Precursor] | None = None) -> StaticObjectives:
    """Usable capacity and energy below ``max_voltage_V``, raw-material cost and supply risk (exact).

    Args:
        fractions: M-site fraction per metal (validated like :func:`candidates.validate_fractions`).
        max_voltage_V: electrolyte stability limit; plateaus above it do not count.
        prices: precursor table by element (default: the shipped :func:`precursors`).

    Returns:
        The :class:`StaticObjectives`.

    Raises:
        InputError: bad fractions (field ``fractions``), bad window (``--max-voltage``), a missing price.
    """
    max_voltage_V = check_max_voltage(max_voltage_V)
    fractions = _checked(fractions)
    molar_mass = _molar_mass_g_mol(fractions)
    plateaus = redox_plateaus(fractions)
    usable = [p for p in plateaus if p.voltage_V <= max_voltage_V]
    total = sum(p.fraction for p in plateaus)
    capacity = sum(p.fraction for p in usable) * MAH_PER_MOL / molar_mass
    energy = sum(p.fraction * p.voltage_V for p in usable) * MAH_PER_MOL / molar_mass
    per_kg = raw_material_cost_USD_per_kg(fractions, prices)
    production, reserve = supply_risk_hhi(fractions)
    return StaticObjectives(
        max_voltage_V=max_voltage_V,
        usable_capacity_mAh_g=capacity,
        usable_specific_energy_Wh_kg=energy,
        usable_fraction=sum(p.fraction for p in usable) / total,
        cost_USD_per_kg=per_kg,
        cost_USD_per_kWh=per_kg / (energy / 1000.0) if energy > 0 else math.nan,
        supply_risk_hhi=production,
        supply_risk_hhi_reserve=reserve,
        above_window=tuple(p for p in plateaus if p.voltage_V > max_voltage_V),
    )
