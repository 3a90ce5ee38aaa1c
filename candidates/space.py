"""Olivine composition spaces: which LiMPO4 solid solutions to screen, validated, with stable ids.

A candidate is a fraction vector over the octahedral M site of LiMPO4 (Pnma olivine). Redox-active
metals (Fe, Mn, Co, Ni) carry the capacity; inactive dopants (Mg) sit on the M site at small
fractions and keep their 2+ state and their lithium on charge. Every M-site substitution here is
isovalent (2+), so the lithiated formula Li M PO4 is charge-neutral by construction; an element whose
usual oxidation state is not 2+ (Al³⁺, Ti⁴⁺, Nb⁵⁺ …) would need vacancies or interstitials that the
virtual-crystal model does not describe and is refused as a charge imbalance.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymatgen.core import Composition, Element

from mechanics.errors import InputError

#: M-site metals whose 2+/3+ couple is active in the olivine voltage window, with literature data.
REDOX_ACTIVE_METALS: tuple[str, ...] = ("Fe", "Mn", "Co", "Ni")
#: M-site metals that form olivine LiMPO4 but stay 2+ on charge (no capacity).
INACTIVE_METALS: tuple[str, ...] = ("Mg",)
OLIVINE_METALS: tuple[str, ...] = REDOX_ACTIVE_METALS + INACTIVE_METALS
#: Largest total M-site fraction of inactive dopants. Dilute-dopant limit of the model: an inactive
#: cation keeps its lithium on charge (one Li per inactive M stays in the lattice), so at 20 % it has
#: already cost a fifth of the capacity, and the virtual-crystal rule that gives the dopant its
#: LiMgPO4 lattice in both states is an approximation meant for dilute doping.
MAX_INACTIVE_FRACTION = 0.2
#: Tolerance on Σ fractions = 1 and on step·n = 1.
FRACTION_TOLERANCE = 1e-6
#: Decimals kept when a composition is hashed into its id (fractions closer than 5e-7 share an id).
ID_DECIMALS = 6
ID_LENGTH = 12
M_SITE_CHARGE = 2


def _canonical_fractions(fractions: Mapping[str, float]) -> str:
    """Sorted ``El=0.500000`` pairs, zero fractions left out: the text an id is hashed from."""
    items = sorted((el, round(float(x), ID_DECIMALS)) for el, x in fractions.items())
    return ";".join(f"{el}={x:.{ID_DECIMALS}f}" for el, x in items if x != 0.0)


def _amount(x: float) -> str:
    """A subscript: nothing for 1, else the shortest decimal that round-trips to 6 places (0.25, 0.333333)."""
    x = round(float(x), ID_DECIMALS)
    return "" if x == 1.0 else f"{x:.{ID_DECIMALS}f}".rstrip("0").rstrip(".")


def chemist_formula(composition: Mapping[str, float] | str) -> str:
    """An olivine formula as a chemist writes it: ``LiCo0.75Ni0.25PO4`` rather than pymatgen's
    ``Li1Co0.75Ni0.25P1O4``.

    Li first, then the M-site metals in alphabetical order (the order of ``Candidate.metal_fractions``),
    then P and O; a subscript of 1 is left out. Meant for people (tables, run names, plots); machines
    keep reading the pymatgen reduced formula (:attr:`Candidate.formula`).

    Args:
        composition: M-site fractions (``{"Co": 0.75, "Ni": 0.25}``), or a formula pymatgen parses
            (``"Li1Co0.75Ni0.25P1O4"``, ``"LiFePO4"``), for a composition already written as text.

    Returns:
        The formula; a text that is not a LiMPO4 olivine formula is returned as it came.
    """
    if isinstance(composition, str):
        try:
            amounts = Composition(composition).get_el_amt_dict()
        except Exception:  # pymatgen raises several kinds for text that is no formula
            return composition
        li, p, o = amounts.pop("Li", 0.0), amounts.pop("P", 0.0), amounts.pop("O", 0.0)
        if not amounts or p <= 0 or not np.isclose(o, 4.0 * p) or li <= 0:
            return composition
        # a formula written per unit of something else (Li2M2P2O8) is brought back to one P
        metals = {el: x / p for el, x in amounts.items()}
        prefix = "Li" + _amount(li / p)
    else:
        metals = {el: float(x) for el, x in composition.items() if float(x) != 0.0}
        prefix = "Li"
    return prefix + "".join(el + _amount(x) for el, x in sorted(metals.items())) + "PO4"


def composition_id(fractions: Mapping[str, float]) -> str:
    """Stable short hex id of an M-site composition (sha256 of its canonical text, first 12 digits).

    Independent of dict order, process and platform; fractions are rounded to 6 decimals first. It
    identifies the composition only (``Candidate.id``, the ``composition_id`` column and tag); the
    simulation key of a sweep is :func:`screening.ids.candidate_id`.

    Args:
        fractions: M-site fraction per metal.

    Returns:
        12 lower-case hex digits.
    """
    digest = hashlib.sha256(_canonical_fractions(fractions).encode("ascii")).hexdigest()
    return digest[:ID_LENGTH]


@dataclass(frozen=True)
class Candidate:
    """One olivine cathode composition Li(M1_x1 M2_x2 …)PO4.

    Fields:
      id: stable short hash (hex) of the M-site composition, see :func:`composition_id`.
      metal_fractions: ((metal, fraction), …) sorted by metal, zero fractions left out, Σ = 1.
      history: provenance records (JSON-ready dicts), oldest first, in the spirit of pymatgen's
        ``TransformedStructure.history``; not part of equality or the hash.
    """

    id: str
    metal_fractions: tuple[tuple[str, float], ...]
    history: tuple[Mapping[str, Any], ...] = field(default_factory=tuple, compare=False)

    @classmethod
    def from_fractions(cls, fractions: Mapping[str, float], record: Mapping[str, Any]) -> Candidate:
        """Build a candidate from already validated fractions and one provenance record."""
        pairs = tuple(sorted((el, float(x)) for el, x in fractions.items() if x != 0.0))
        return cls(id=composition_id(dict(pairs)), metal_fractions=pairs,
                   history=(dict(record),))

    @property
    def fractions(self) -> dict[str, float]:
        """M-site fraction per metal (Σ = 1); a fresh dict each call."""
        return dict(self.metal_fractions)

    def fraction(self, metal: str) -> float:
        return dict(self.metal_fractions).get(metal, 0.0)

    @property
    def active_fraction(self) -> float:
        """Σ of redox-active fractions: Li per formula unit that can be cycled."""
        return sum(x for el, x in self.metal_fractions if el in REDOX_ACTIVE_METALS)

    @property
    def composition(self) -> Composition:
        """pymatgen Composition of the lithiated formula, e.g. Li1 Fe0.5 Mn0.5 P1 O4."""
        return Composition({"Li": 1.0, **self.fractions, "P": 1.0, "O": 4.0})

    @property
    def formula(self) -> str:
        """pymatgen reduced formula of the lithiated compound (``LiFePO4``, ``Li1Mn0.5Fe0.5P1O4``)."""
        return self.composition.reduced_formula

    @property
    def display_formula(self) -> str:
        """The formula as a chemist writes it (``LiCo0.75Ni0.25PO4``), for tables, tags and plots.

        :attr:`formula` stays the machine-read key; see :func:`chemist_formula`.
        """
        return chemist_formula(self.fractions)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: id, formula, fractions and history."""
        return {"id": self.id, "formula": self.formula, "fractions": self.fractions,
                "history": [dict(record) for record in self.history]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Candidate:
        """Inverse of :meth:`to_dict`; the fractions are validated again and must reproduce the id."""
        fractions = validate_fractions(data.get("fractions"), "fractions")
        candidate = cls(composition_id(fractions), tuple(sorted(fractions.items())),
                        tuple(dict(record) for record in data.get("history", ())))
        if "id" in data and data["id"] != candidate.id:
            raise InputError("id", f"the id of the fractions ({candidate.id})", data["id"])
        return candidate

    def __repr__(self) -> str:
        return f"Candidate(id={self.id!r}, formula={self.formula!r})"


# ---------------------------------------------------------------------------------------------------
# validation


def _check_metal(symbol: object, field_name: str) -> str:
    if not isinstance(symbol, str) or not Element.is_valid_symbol(symbol):
        raise InputError(field_name, f"an element symbol among {', '.join(OLIVINE_METALS)}", symbol)
    element = Element(symbol)
    if symbol in OLIVINE_METALS:
        return symbol
    if not element.is_metal:
        raise InputError(field_name, f"a metal for the olivine M site ({', '.join(OLIVINE_METALS)})", symbol)
    if M_SITE_CHARGE not in element.common_oxidation_states:
        states = ", ".join(f"{s:+d}" for s in element.common_oxidation_states) or "none"
        raise InputError(
            field_name,
            f"a charge-balanced composition: the olivine M site takes 2+ cations, {symbol} is usually "
            f"{states}, which would need vacancies the virtual-crystal model does not describe; "
            f"supported: {', '.join(OLIVINE_METALS)}",
            symbol,
        )
    raise InputError(
        field_name,
        f"an olivine M-site metal with literature data ({', '.join(OLIVINE_METALS)}); "
        f"{symbol} has no LiMPO4 olivine entry in the table",
        symbol,
    )


def _check_number(value: object, field_name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(field_name, "a real number", value)
    number = float(value)
    if not math.isfinite(number):
        raise InputError(field_name, "a finite number", value)
    return number


def validate_fractions(fractions: object, field_name: str = "fractions") -> dict[str, float]:
    """Check one M-site composition and return it with Σ = 1 exactly (renormalised within tolerance).

    Errors (``InputError`` naming ``field_name`` or ``field_name.<metal>``): not a mapping, empty,
    unknown / non-metal / non-olivine / aliovalent element, non-numeric, negative, Σ ≠ 1, no
    redox-active metal, inactive dopants above :data:`MAX_INACTIVE_FRACTION`.
    """
    if not isinstance(fractions, Mapping):
        raise InputError(field_name, "a mapping metal -> M-site fraction, e.g. {'Fe': 0.5, 'Mn': 0.5}",
                         fractions)
    if not fractions:
        raise InputError(field_name, "at least one metal", fractions)
    checked: dict[str, float] = {}
    for symbol, value in fractions.items():
        metal = _check_metal(symbol, f"{field_name}.{symbol}")
        number = _check_number(value, f"{field_name}.{symbol}")
        if number < 0:
            raise InputError(f"{field_name}.{symbol}", "a fraction >= 0", value)
        checked[metal] = checked.get(metal, 0.0) + number
    total = sum(checked.values())
    if abs(total - 1.0) > FRACTION_TOLERANCE:
        raise InputError(field_name, f"M-site fractions summing to 1 (within {FRACTION_TOLERANCE:g})",
                         f"sum {total:.9g} of {dict(fractions)}")
    checked = {el: x / total for el, x in checked.items() if x > 0.0}
    active = sum(x for el, x in checked.items() if el in REDOX_ACTIVE_METALS)
    if active <= 0.0:
        raise InputError(
            field_name,
            f"at least one redox-active metal ({', '.join(REDOX_ACTIVE_METALS)}); "
            f"{', '.join(INACTIVE_METALS)} stay 2+ and give no capacity",
            dict(fractions),
        )
    inactive = 1.0 - active
    if inactive > MAX_INACTIVE_FRACTION + FRACTION_TOLERANCE:
        raise InputError(
            field_name,
            f"inactive dopants ({', '.join(INACTIVE_METALS)}) at most {MAX_INACTIVE_FRACTION:g} of the "
            "M site in total (dilute-dopant model)",
            f"{inactive:.6g}",
        )
    return checked


def _check_step(step: object) -> int:
    value = _check_number(step, "step")
    if not 0.0 < value <= 1.0:
        raise InputError("step", "a grid step in (0, 1] that divides 1, e.g. 0.25 or 0.1", step)
    intervals = round(1.0 / value)
    if abs(intervals * value - 1.0) > FRACTION_TOLERANCE:
        raise InputError("step", "a grid step that divides 1 (1/step an integer), e.g. 0.25 or 0.1", step)
    return intervals


def _check_metals(metals: object) -> tuple[str, ...]:
    if isinstance(metals, str):
        metals = [m.strip() for m in metals.split(",") if m.strip()]
    if not isinstance(metals, Iterable):
        raise InputError("metals", "a sequence of metal symbols, e.g. ('Fe', 'Mn')", metals)
    checked: list[str] = []
    for symbol in metals:
        metal = _check_metal(symbol, "metals")
        if metal in INACTIVE_METALS:
            raise InputError(
                "metals",
                f"redox-active metals ({', '.join(REDOX_ACTIVE_METALS)}); pass inactive ones such as "
                f"{metal} through dopants={{'{metal}': (0.05,)}}",
                symbol,
            )
        if metal in checked:
            raise InputError("metals", "each metal once", list(metals))
        checked.append(metal)
    if not checked:
        raise InputError("metals", "at least one redox-active metal", metals)
    return tuple(checked)


def _check_dopants(dopants: object) -> dict[str, tuple[float, ...]]:
    if dopants is None:
        return {}
    if not isinstance(dopants, Mapping):
        raise InputError("dopants", "a mapping dopant -> M-site level(s), e.g. {'Mg': (0.0, 0.05)}",
                         dopants)
    checked: dict[str, tuple[float, ...]] = {}
    for symbol, levels in dopants.items():
        metal = _check_metal(symbol, f"dopants.{symbol}")
        if metal not in INACTIVE_METALS:
            raise InputError(f"dopants.{symbol}",
                             f"an inactive dopant ({', '.join(INACTIVE_METALS)}); redox-active metals go "
                             "in metals=", symbol)
        values = levels if isinstance(levels, Sequence) and not isinstance(levels, str) else (levels,)
        if not values:
            raise InputError(f"dopants.{symbol}", "at least one level", levels)
        numbers = []
        for level in values:
            number = _check_number(level, f"dopants.{symbol}")
            if not 0.0 <= number <= MAX_INACTIVE_FRACTION + FRACTION_TOLERANCE:
                raise InputError(f"dopants.{symbol}", f"levels in [0, {MAX_INACTIVE_FRACTION:g}]", level)
            numbers.append(number)
        checked[metal] = tuple(dict.fromkeys(numbers))
    return checked


# ---------------------------------------------------------------------------------------------------
# spaces


def simplex_grid(n_components: int, intervals: int) -> list[tuple[int, ...]]:
    """All integer vectors k ≥ 0 of length ``n_components`` with Σk = ``intervals`` (lexicographic)."""
    if n_components == 1:
        return [(intervals,)]
    points = []
    for first in range(intervals, -1, -1):
        for rest in simplex_grid(n_components - 1, intervals - first):
            points.append((first, *rest))
    return points


def olivine_space(
    metals: Sequence[str] | str = REDOX_ACTIVE_METALS,
    step: float = 0.25,
    dopants: Mapping[str, float | Sequence[float]] | None = None,
    *,
    max_components: int | None = None,
) -> list[Candidate]:
    """Every composition on the simplex grid of redox-active M-site fractions, times dopant levels.

    Args:
      metals: redox-active metals spanning the simplex (``("Fe", "Mn")`` or ``"Fe,Mn"``).
      step: grid step of the fractions; must divide 1 (0.5, 0.25, 0.2, 0.1 …). The grid has
        C(n + k − 1, k − 1) points for k metals and n = 1/step.
      dopants: inactive dopants and their M-site levels, e.g. ``{"Mg": (0.0, 0.05)}``; every grid
        point is combined with every level combination and the active fractions are scaled by
        (1 − Σ dopant levels). Total dopant fraction ≤ :data:`MAX_INACTIVE_FRACTION`.
      max_components: keep only candidates with at most this many metals (dopants included).

    Returns candidates in a deterministic order (grid order, then dopant levels).
    """
    metal_list = _check_metals(metals)
    intervals = _check_step(step)
    dopant_levels = _check_dopants(dopants)
    if max_components is not None and (
        isinstance(max_components, bool) or not isinstance(max_components, int) or max_components < 1
    ):
        raise InputError("max_components", "a positive integer or None", max_components)
    record = {
        "@module": __name__,
        "generator": "olivine_space",
        "parameters": {"metals": list(metal_list), "step": float(step),
                       "dopants": {k: list(v) for k, v in dopant_levels.items()} or None,
                       "max_components": max_components},
    }
    dopant_names = sorted(dopant_levels)
    candidates: list[Candidate] = []
    seen: set[str] = set()
    for point in simplex_grid(len(metal_list), intervals):
        for levels in itertools.product(*(dopant_levels[d] for d in dopant_names)):
            doped = sum(levels)
            if doped > MAX_INACTIVE_FRACTION + FRACTION_TOLERANCE:
                raise InputError("dopants", f"total dopant fraction at most {MAX_INACTIVE_FRACTION:g}",
                                 dict(zip(dopant_names, levels)))
            fractions = {m: k / intervals * (1.0 - doped) for m, k in zip(metal_list, point) if k}
            fractions.update({d: y for d, y in zip(dopant_names, levels) if y > 0})
            if max_components is not None and len(fractions) > max_components:
                continue
            candidate = Candidate.from_fractions(validate_fractions(fractions), record)
            if candidate.id not in seen:
                seen.add(candidate.id)
                candidates.append(candidate)
    return candidates


def explicit_space(
    compositions: Iterable[Mapping[str, float]], *, name: str = "explicit_space"
) -> list[Candidate]:
    """Candidates from user-given M-site fractions, e.g. ``[{"Fe": 0.5, "Mn": 0.5}, {"Fe": 1.0}]``.

    Each entry is validated like :func:`validate_fractions` (errors name ``compositions[i]``);
    duplicates (same id) are kept once, in first-seen order. ``name`` is recorded in the history.
    """
    if isinstance(compositions, Mapping) or not isinstance(compositions, Iterable):
        raise InputError("compositions", "a list of mappings metal -> fraction", compositions)
    candidates: list[Candidate] = []
    seen: set[str] = set()
    for index, fractions in enumerate(compositions):
        checked = validate_fractions(fractions, f"compositions[{index}]")
        record = {"@module": __name__, "generator": name, "parameters": {"fractions": dict(checked)}}
        candidate = Candidate.from_fractions(checked, record)
        if candidate.id not in seen:
            seen.add(candidate.id)
            candidates.append(candidate)
    if not candidates:
        raise InputError("compositions", "at least one composition", list(compositions))
    return candidates


def custom_space(
    generator: Iterable[Mapping[str, float]], *, name: str = "custom_space", **parameters: Any
) -> list[Candidate]:
    """A user-defined space: any iterable of M-site fraction mappings, recorded with ``name`` and
    ``parameters`` in each candidate's history (e.g. a random sample, a line through the simplex)."""
    candidates = explicit_space(generator, name=name)
    return [
        Candidate(c.id, c.metal_fractions,
                  ({**c.history[0], "parameters": {**parameters, "fractions": c.fractions}},))
        for c in candidates
    ]
