"""The objective/constraint specification: parsing, validation, feasibility from the voltage window."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mechanics.errors import InputError
from screening.objectives import (
    DEFAULT_OBJECTIVES,
    Constraint,
    ObjectiveSpec,
    evaluate,
    objective_matrix,
    parse_constraint,
    parse_objectives,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("peak_tensile_stress_MPa<800", Constraint("peak_tensile_stress_MPa", "<", 800.0)),
    (" cost_USD_per_kWh <= 25.5 ", Constraint("cost_USD_per_kWh", "<=", 25.5)),
    ("usable_capacity_mAh_g>1e2", Constraint("usable_capacity_mAh_g", ">", 100.0)),
    ("volume_change_pct>=-7", Constraint("volume_change_pct", ">=", -7.0)),
])
def test_constraint_parsing(text, expected):
    assert parse_constraint(text) == expected


@pytest.mark.parametrize("text", ["stress", "stress<", "<800", "stress=800", "stress<abc", "stress<nan",
                                  "a<1<2", ""])
def test_bad_constraint_names_the_flag(text):
    with pytest.raises(InputError, match="--constraint"):
        parse_constraint(text)
    with pytest.raises(InputError, match="--constraint"):
        ObjectiveSpec.from_text(constraints=[text])


def test_constraint_holds_never_on_missing_values():
    c = Constraint("m", "<", 1.0)
    assert c.holds(np.array([0.5, 1.0, 2.0, np.nan])).tolist() == [True, False, False, False]
    assert Constraint("m", "<=", 1.0).holds(np.array([1.0])).tolist() == [True]


def test_objectives_parsing_and_weights_alias():
    assert parse_objectives("cost_USD_per_kWh:2, supply_risk_hhi") == (("cost_USD_per_kWh", 2.0),
                                                                       ("supply_risk_hhi", 1.0))
    assert ObjectiveSpec.from_text().objectives == DEFAULT_OBJECTIVES
    alias = ObjectiveSpec.from_text(weights="2,1,0")
    assert alias.objectives == (("usable_specific_energy_Wh_kg", 2.0), ("peak_tensile_stress_MPa", 1.0),
                                ("abs_volume_change_pct", 0.0))


@pytest.mark.parametrize(("kwargs", "flag"), [
    ({"objectives": "nonsense:1"}, "--objectives"),
    ({"objectives": "cost_USD_per_kWh:x"}, "--objectives"),
    ({"objectives": "cost_USD_per_kWh:-1"}, "--objectives"),
    ({"objectives": "cost_USD_per_kWh:0"}, "--objectives"),
    ({"objectives": "cost_USD_per_kWh,cost_USD_per_kWh"}, "--objectives"),
    ({"objectives": ""}, "--objectives"),
    ({"weights": "1,1"}, "--weights"),
    ({"weights": "1,a,1"}, "--weights"),
    ({"weights": "1,1,1", "objectives": "cost_USD_per_kWh"}, "--weights"),
    ({"max_voltage_V": 0.0}, "--max-voltage"),
    ({"max_voltage_V": float("nan")}, "--max-voltage"),
])
def test_bad_spec_names_the_flag(kwargs, flag):
    with pytest.raises(InputError, match=flag):
        ObjectiveSpec.from_text(**kwargs)


def _table():
    # LiFePO4, LiCoPO4, LiNiPO4, Fe0.5Co0.5 (exactly half usable at 4.5 V), Fe0.25Ni0.75
    return pd.DataFrame({
        "x_Fe": [1.0, 0.0, 0.0, 0.5, 0.25], "x_Co": [0.0, 1.0, 0.0, 0.5, 0.0],
        "x_Ni": [0.0, 0.0, 1.0, 0.0, 0.75],
        "peak_tensile_stress_MPa": [500.0, 900.0, 100.0, 700.0, np.nan],
        "volume_change_pct": [6.8, 2.0, 5.0, 4.4, 5.4],
    })


def test_voltage_window_decides_feasibility_per_plateau():
    out = evaluate(_table(), ObjectiveSpec())
    assert out["feasible"].tolist() == [True, False, False, True, False]
    assert "Co 4.8 V" in out.loc[1, "infeasible_reason"]
    assert "0% of capacity usable" in out.loc[1, "infeasible_reason"]
    assert "Ni 5.1 V" in out.loc[4, "infeasible_reason"]
    assert out.loc[0, "infeasible_reason"] == ""
    wide = evaluate(_table(), ObjectiveSpec(max_voltage_V=5.2))
    assert wide["feasible"].all()
    assert (wide["usable_fraction"] == 1.0).all()


def test_constraints_work_like_the_window():
    spec = ObjectiveSpec(max_voltage_V=5.2, constraints=(parse_constraint("peak_tensile_stress_MPa<800"),))
    out = evaluate(_table(), spec)
    assert out["feasible"].tolist() == [True, False, True, True, False]
    expected = "peak_tensile_stress_MPa=900 violates peak_tensile_stress_MPa<800"
    assert out.loc[1, "infeasible_reason"] == expected
    assert "missing" in out.loc[4, "infeasible_reason"]


def test_unknown_metrics_name_the_flag():
    with pytest.raises(InputError, match="--constraint"):
        evaluate(_table(), ObjectiveSpec(constraints=(Constraint("no_such_metric", "<", 1.0),)))
    with pytest.raises(InputError, match="--objectives"):
        evaluate(_table(), ObjectiveSpec(objectives=(("safe_window_decades", 1.0),)))
    with pytest.raises(InputError, match="x_<metal>"):
        evaluate(_table().drop(columns=["x_Fe", "x_Co", "x_Ni"]), ObjectiveSpec())


def test_objective_matrix_orients_larger_is_better():
    spec = ObjectiveSpec(objectives=(("usable_specific_energy_Wh_kg", 1.0), ("abs_volume_change_pct", 1.0),
                                     ("cost_USD_per_kWh", 1.0)))
    out = evaluate(_table().assign(volume_change_pct=[-6.8, 2.0, 5.0, 4.4, 5.4]), spec)
    matrix = objective_matrix(out, spec)
    np.testing.assert_allclose(matrix[:, 0], out["usable_specific_energy_Wh_kg"])
    np.testing.assert_allclose(matrix[:, 1], [-6.8, -2.0, -5.0, -4.4, -5.4])
    np.testing.assert_allclose(matrix[:, 2], -out["cost_USD_per_kWh"])


@pytest.mark.parametrize("argv", [
    ["rank", "--constraint", "peak_tensile_stress_MPa=800"],
    ["rank", "--objectives", "bogus:1"],
    ["rank", "--weights", "1,1,1", "--objectives", "cost_USD_per_kWh"],
    ["sweep", "--law", "vegard", "--max-voltage", "-1"],
    ["sweep", "--law", "vegard", "--constraint", "stress<"],
])
def test_cli_refuses_a_bad_spec_with_exit_2_before_any_work(tmp_path, capsys, argv):
    from screening.cli import main

    db = tmp_path / "mlflow.db"
    assert main([*argv, "--tracking-uri", f"sqlite:///{db}"]) == 2
    flag = next(a for a in argv if a.startswith("--") and a not in ("--law",))
    assert flag in capsys.readouterr().err
    assert not db.exists()
