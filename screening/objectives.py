"""What a candidate is ranked by: objectives with directions and weights, constraints, the voltage window.

One :class:`ObjectiveSpec` drives the ranking (:mod:`screening.ranking`), ``chemoscreen sweep``/``rank``
(``--objectives``, ``--max-voltage``, ``--constraint``) and the search strategies.

Objectives (name → direction; *static* ones are closed forms of the composition, computed exactly by
:func:`candidates.cost.static_objectives`, the others come from the candidate's run):

| name | better | kind | meaning |
|---|---|---|---|
| ``usable_specific_energy_Wh_kg`` | up | static | energy of the plateaus inside the voltage window |
| ``usable_capacity_mAh_g`` | up | static | capacity of the plateaus inside the window |
| ``cost_USD_per_kWh`` | down | static | precursor (raw-material) cost per kWh of usable energy |
| ``supply_risk_hhi`` | down | static | production HHI (pymatgen), mass-fraction weighted |
| ``supply_risk_hhi_reserve`` | down | static | reserves HHI (pymatgen), mass-fraction weighted |
| ``specific_energy_Wh_kg`` | up | descriptor | theoretical energy, every plateau counted |
| ``abs_volume_change_pct`` | down | descriptor | abs(``volume_change_pct``) |
| ``peak_tensile_stress_MPa`` | down | simulated | coherency stress during lithiation |
| ``peak_elastic_energy_MJ_m3`` | down | simulated | stored elastic energy |
| ``safe_window_decades`` | up | simulated | width of the fracture-safe envelope (when computed) |

Default: ``usable_specific_energy_Wh_kg:1, peak_tensile_stress_MPa:1, abs_volume_change_pct:1,
cost_USD_per_kWh:1, supply_risk_hhi:1``. ``rank --weights E,S,V`` is the alias
``usable_specific_energy_Wh_kg:E, peak_tensile_stress_MPa:S, abs_volume_change_pct:V``.

Feasibility: a candidate is infeasible when less than ``min_usable_fraction`` (½) of its theoretical
capacity lies in plateaus at or below ``max_voltage_V`` (default 4.5 V), or when a constraint
``metric OP value`` (OP one of <, <=, >, >=) does not hold (a missing value does not hold either).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from candidates.cost import DEFAULT_MAX_VOLTAGE_V, MIN_USABLE_FRACTION, check_max_voltage, static_objectives
from mechanics.errors import InputError


@dataclass(frozen=True)
class Objective:
    """One objective: the metric ``column`` it reads, its direction (+1 larger is better) and its kind."""

    name: str
    direction: int
    kind: str  # "static" | "descriptor" | "simulated"
    column: str
    absolute: bool = False


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (
    Objective("usable_specific_energy_Wh_kg", +1, "static", "usable_specific_energy_Wh_kg"),
    Objective("usable_capacity_mAh_g", +1, "static", "usable_capacity_mAh_g"),
    Objective("cost_USD_per_kWh", -1, "static", "cost_USD_per_kWh"),
    Objective("supply_risk_hhi", -1, "static", "supply_risk_hhi"),
    Objective("supply_risk_hhi_reserve", -1, "static", "supply_risk_hhi_reserve"),
    Objective("specific_energy_Wh_kg", +1, "descriptor", "specific_energy_Wh_kg"),
    Objective("abs_volume_change_pct", -1, "descriptor", "volume_change_pct", absolute=True),
    Objective("peak_tensile_stress_MPa", -1, "simulated", "peak_tensile_stress_MPa"),
    Objective("peak_elastic_energy_MJ_m3", -1, "simulated", "peak_elastic_energy_MJ_m3"),
    Objective("safe_window_decades", +1, "simulated", "safe_window_decades"),
)}
DEFAULT_OBJECTIVES: tuple[tuple[str, float], ...] = (
    ("usable_specific_energy_Wh_kg", 1.0), ("peak_tensile_stress_MPa", 1.0), ("abs_volume_change_pct", 1.0),
    ("cost_USD_per_kWh", 1.0), ("supply_risk_hhi", 1.0),
)
#: the three objectives ``rank --weights`` sets, in its order
WEIGHTS_ALIAS = ("usable_specific_energy_Wh_kg", "peak_tensile_stress_MPa", "abs_volume_change_pct")
#: metrics computed from the composition by :func:`candidates.cost.static_objectives`
STATIC_METRICS = ("usable_capacity_mAh_g", "usable_specific_energy_Wh_kg", "usable_fraction",
                  "cost_USD_per_kg", "cost_USD_per_kWh", "supply_risk_hhi", "supply_risk_hhi_reserve")
FRACTION_PREFIX = "x_"
#: rounding allowance of the usable fraction (a grid's 0.15 + 0.35 need not sum to 0.5 exactly)
USABLE_TOLERANCE = 1e-9
_OPERATORS = {"<=": np.less_equal, ">=": np.greater_equal, "<": np.less, ">": np.greater}
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(<=|>=|<|>)\s*([-+0-9.eEinfINF]+)\s*$")


@dataclass(frozen=True)
class Constraint:
    """``metric OP value``: a candidate is feasible only where it holds (a missing value does not)."""

    metric: str
    op: str
    value: float

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise InputError("--constraint", "a metric name", self.metric)
        if self.op not in _OPERATORS:
            raise InputError("--constraint", f"an operator among {', '.join(_OPERATORS)}", self.op)
        if not _is_real(self.value) or math.isnan(self.value):
            raise InputError("--constraint", "a number to compare with", self.value)

    def holds(self, values: np.ndarray) -> np.ndarray:
        """Boolean array: where the constraint holds (NaN never holds)."""
        values = np.asarray(values, dtype=float)
        return np.isfinite(values) & _OPERATORS[self.op](np.nan_to_num(values, nan=0.0), self.value)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def parse_constraint(text: str, field: str = "--constraint") -> Constraint:
    """``"peak_tensile_stress_MPa<800"`` → :class:`Constraint` (``InputError`` naming ``field`` otherwise)."""
    match = _CONSTRAINT.match(text) if isinstance(text, str) else None
    if match is None:
        raise InputError(field, "METRIC<VALUE, METRIC<=VALUE, METRIC>VALUE or METRIC>=VALUE", text)
    try:
        value = float(match.group(3))
    except ValueError:
        raise InputError(field, "a number after the operator", text) from None
    if math.isnan(value):
        raise InputError(field, "a number after the operator", text)
    return Constraint(match.group(1), match.group(2), value)


def parse_objectives(text: str, field: str = "--objectives") -> tuple[tuple[str, float], ...]:
    """``"usable_specific_energy_Wh_kg:2,cost_USD_per_kWh"`` → ((name, weight), ...); weight default 1."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(field, "NAME[:WEIGHT],... with names among " + ", ".join(OBJECTIVES), text)
    pairs = []
    for part in text.split(","):
        name, _, weight = part.strip().partition(":")
        try:
            pairs.append((name.strip(), float(weight) if weight.strip() else 1.0))
        except ValueError:
            raise InputError(field, f"a number as the weight of {name.strip()!r}", part) from None
    return tuple(pairs)


def weights_alias(text_or_weights, field: str = "--weights") -> tuple[tuple[str, float], ...]:
    """``rank --weights E,S,V``: the three original objectives with these weights."""
    try:
        values = (tuple(float(w) for w in text_or_weights.split(",")) if isinstance(text_or_weights, str)
                  else tuple(float(w) for w in text_or_weights))
    except (TypeError, ValueError):
        raise InputError(field, "three comma-separated numbers", text_or_weights) from None
    if len(values) != len(WEIGHTS_ALIAS):
        raise InputError(field, "three comma-separated numbers (energy, stress, |volume change|)",
                         text_or_weights)
    return tuple(zip(WEIGHTS_ALIAS, values))


@dataclass(frozen=True)
class ObjectiveSpec:
    """Objectives with weights, the voltage window and constraints (see the module docstring).

    Fields:
      objectives: ((name, weight), ...), names from :data:`OBJECTIVES`, weights ≥ 0 with a positive sum;
        every objective enters the Pareto front, the weights only the score.
      max_voltage_V: electrolyte stability limit applied to each redox plateau (V vs Li/Li⁺).
      constraints: :class:`Constraint` objects.
      min_usable_fraction: least usable fraction of the theoretical capacity of a feasible candidate.
      top_k: k of ``p_top_k``, the fraction of draws in which a candidate is among the k best by score.
    """

    objectives: tuple[tuple[str, float], ...] = DEFAULT_OBJECTIVES
    max_voltage_V: float = DEFAULT_MAX_VOLTAGE_V
    constraints: tuple[Constraint, ...] = ()
    min_usable_fraction: float = MIN_USABLE_FRACTION
    top_k: int = 5

    def __post_init__(self) -> None:
        pairs = self.objectives
        if not isinstance(pairs, tuple) or not pairs or not all(
                isinstance(p, tuple) and len(p) == 2 for p in pairs):
            raise InputError("--objectives", "one or more (name, weight) pairs", pairs)
        names = [p[0] for p in pairs]
        unknown = [n for n in names if n not in OBJECTIVES]
        if unknown:
            raise InputError("--objectives", f"objective names among {', '.join(OBJECTIVES)}", unknown)
        if len(set(names)) != len(names):
            raise InputError("--objectives", "each objective once", names)
        weights = [p[1] for p in pairs]
        if not all(_is_real(w) and math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
            raise InputError("--objectives", "finite weights >= 0 with a positive sum", weights)
        check_max_voltage(self.max_voltage_V)
        if not isinstance(self.constraints, tuple) or not all(isinstance(c, Constraint)
                                                               for c in self.constraints):
            raise InputError("--constraint", "a tuple of screening.objectives.Constraint", self.constraints)
        if not _is_real(self.min_usable_fraction) or not 0.0 <= self.min_usable_fraction <= 1.0:
            raise InputError("min_usable_fraction", "a fraction in [0, 1]", self.min_usable_fraction)
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, numbers.Integral) or self.top_k < 1:
            raise InputError("--top-k", "a positive integer", self.top_k)

    @classmethod
    def from_text(cls, objectives: str | None = None, max_voltage_V: float | None = None,
                  constraints: Iterable[str] = (), weights: str | None = None,
                  top_k: int | None = None) -> ObjectiveSpec:
        """The spec of the command-line options (``--objectives``, ``--max-voltage``, ``--constraint``,
        ``--weights``); None keeps the default. ``weights`` and ``objectives`` exclude each other."""
        if objectives is not None and weights is not None:
            raise InputError("--weights", "either --weights or --objectives, not both", weights)
        pairs = (parse_objectives(objectives) if objectives is not None
                 else weights_alias(weights) if weights is not None else DEFAULT_OBJECTIVES)
        return cls(objectives=pairs,
                   max_voltage_V=DEFAULT_MAX_VOLTAGE_V if max_voltage_V is None else max_voltage_V,
                   constraints=tuple(parse_constraint(c) for c in constraints or ()),
                   top_k=5 if top_k is None else top_k)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.objectives)

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple(float(w) for _, w in self.objectives)

    def describe(self) -> str:
        """One line for tags and logs: objectives with weights, the window, the constraints."""
        text = ",".join(f"{n}:{w:g}" for n, w in self.objectives) + f"; max_voltage_V={self.max_voltage_V:g}"
        return text + "".join(f"; {c}" for c in self.constraints)


def fraction_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith(FRACTION_PREFIX)]


def _fractions(row: Mapping[str, object], columns: Sequence[str]) -> dict[str, float]:
    out = {}
    for column in columns:
        value = pd.to_numeric(row[column], errors="coerce")
        if pd.notna(value) and float(value) > 0:
            out[column[len(FRACTION_PREFIX):]] = float(value)
    return out


def evaluate(table: pd.DataFrame, spec: ObjectiveSpec) -> pd.DataFrame:
    """A copy of ``table`` with the static metrics, ``abs_volume_change_pct``, ``feasible`` and
    ``infeasible_reason`` ('' when feasible).

    ``table`` needs the composition as ``x_<metal>`` columns (the child runs' params), which the static
    metrics and the voltage window are computed from, and the columns of the spec's other objectives
    and constraints.

    Raises:
        InputError: (``runs``) no composition columns; (``--objectives``/``--constraint``) a metric
            that no row has.
    """
    columns = fraction_columns(table)
    if not columns:
        raise InputError("runs", "the composition as x_<metal> columns (params of the child runs)",
                         sorted(table.columns))
    out = table.copy()
    static = {name: np.full(len(out), np.nan) for name in STATIC_METRICS}
    reasons = [[] for _ in range(len(out))]
    for i, row in enumerate(out.to_dict("records")):
        fractions = _fractions(row, columns)
        if not fractions:
            reasons[i].append("no composition")
            continue
        result = static_objectives(fractions, spec.max_voltage_V)
        for name, value in result.metrics().items():
            static[name][i] = value
        if result.usable_fraction < spec.min_usable_fraction - USABLE_TOLERANCE:
            above = ", ".join(f"{p.metal} {p.voltage_V:g} V" for p in result.above_window)
            reasons[i].append(f"plateaus above {spec.max_voltage_V:g} V ({above}): "
                              f"{100 * result.usable_fraction:.0f}% of capacity usable "
                              f"< {100 * spec.min_usable_fraction:.0f}%")
    for name, values in static.items():
        out[name] = values
    if "volume_change_pct" in out.columns:
        out["abs_volume_change_pct"] = pd.to_numeric(out["volume_change_pct"], errors="coerce").abs()
    for name in spec.names:
        if OBJECTIVES[name].column not in out.columns:
            raise InputError("--objectives", f"objectives the runs have; no run has {name!r}", name)
    for constraint in spec.constraints:
        if constraint.metric not in out.columns:
            known = sorted(c for c in out.columns if pd.api.types.is_numeric_dtype(out[c]))
            raise InputError("--constraint", f"a metric of the runs ({', '.join(known)})", constraint.metric)
        values = pd.to_numeric(out[constraint.metric], errors="coerce").to_numpy(dtype=float)
        for i in np.flatnonzero(~constraint.holds(values)):
            shown = "missing" if not np.isfinite(values[i]) else f"{values[i]:.4g}"
            reasons[i].append(f"{constraint.metric}={shown} violates {constraint}")
    out["feasible"] = [not r for r in reasons]
    out["infeasible_reason"] = ["; ".join(r) for r in reasons]
    return out


def objective_matrix(table: pd.DataFrame, spec: ObjectiveSpec) -> np.ndarray:
    """(n, k) objectives of an :func:`evaluate`-d table, oriented so that larger is better (NaN: missing)."""
    columns = []
    for name in spec.names:
        objective = OBJECTIVES[name]
        values = pd.to_numeric(table[objective.column], errors="coerce").to_numpy(dtype=float)
        columns.append(objective.direction * (np.abs(values) if objective.absolute else values))
    return np.stack(columns, axis=1)
