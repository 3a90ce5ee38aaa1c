"""The shipped literature table of olivine end members (``candidates/data/literature.json``).

Every number has a reference key, an uncertainty and a kind (measured, approximate, computed,
estimate); :func:`load_table` reads the file once per call site (callers cache what they need).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from mechanics.errors import InputError
from mechanics.parameters.base import OrthorhombicLattice

TABLE_SCHEMA = "chemoscreen.olivine_literature/1"
VOIGT_KEYS = (("C11", "C12", "C13"), ("C12", "C22", "C23"), ("C13", "C23", "C33"))


@dataclass(frozen=True)
class LatticeEntry:
    """Cell edges of one end member with their 1σ uncertainty (Å) and source."""

    formula: str
    lattice: OrthorhombicLattice
    sigma_A: float
    kind: str
    citation: str
    note: str = ""


@dataclass(frozen=True)
class ScalarEntry:
    """One literature scalar with its 1σ uncertainty (same unit) and source."""

    value: float
    sigma: float
    kind: str
    citation: str
    note: str = ""


@cache
def load_table() -> dict[str, Any]:
    """The parsed literature table (cached; treat as read-only)."""
    text = resources.files("candidates").joinpath("data/literature.json").read_text(encoding="utf-8")
    table = json.loads(text)
    if table.get("schema") != TABLE_SCHEMA:
        raise RuntimeError(f"literature.json: schema {table.get('schema')!r} != {TABLE_SCHEMA}")
    return table


def citation(key: str) -> str:
    return load_table()["references"][key]


def lattice_entry(formula: str) -> LatticeEntry:
    """Literature lattice of ``LiFePO4``, ``FePO4``, … (``InputError`` naming ``formula`` if absent)."""
    lattices = load_table()["lattices_A"]
    if formula not in lattices:
        raise InputError("formula", f"an end member in the literature table ({', '.join(lattices)})", formula)
    row = lattices[formula]
    if row["a"] is None:
        raise InputError("formula", f"an end member with a literature lattice; {formula} has none", formula)
    return LatticeEntry(
        formula=formula,
        lattice=OrthorhombicLattice(a_A=row["a"], b_A=row["b"], c_A=row["c"]),
        sigma_A=float(row["sigma"]),
        kind=row["kind"],
        citation=citation(row["ref"]),
        note=row.get("note", ""),
    )


def voltage_entry(metal: str) -> ScalarEntry:
    row = load_table()["voltage_V"][metal]
    return ScalarEntry(row["value"], row["sigma"], row["kind"], citation(row["ref"]), row.get("note", ""))


def stiffness_entry(formula: str = "LiFePO4") -> tuple[np.ndarray, float, str]:
    """6×6 Voigt stiffness (GPa, order 11, 22, 33, 23, 13, 12), relative 1σ, citation."""
    row = load_table()["stiffness_GPa"][formula]
    voigt = np.zeros((6, 6))
    voigt[:3, :3] = [[row[k] for k in keys] for keys in VOIGT_KEYS]
    voigt[3, 3], voigt[4, 4], voigt[5, 5] = row["C44"], row["C55"], row["C66"]
    return voigt, float(row["sigma_rel"]), citation(row["ref"])


def thermodynamic_entry(name: str) -> ScalarEntry:
    row = load_table()["thermodynamics"][name]
    return ScalarEntry(row["value"], row.get("sigma_rel", 0.0) * row["value"], row["kind"],
                       citation(row["ref"]), row.get("note", ""))


def wyckoff_sites(formula: str = "LiFePO4") -> tuple[list[dict[str, Any]], str, str]:
    """Published Wyckoff sites (species 'M' = the transition metal), citation, note."""
    row = load_table()["wyckoff_positions"][formula]
    return row["sites"], citation(row["ref"]), row["note"]
