"""The charging envelope: root search on synthetic margins with known roots, the fixed-time protocol
against constant current, limits of the physics (zero misfit, doubled misfit), bad input and resume."""

import dataclasses
import math

import numpy as np
import pytest

from mechanics.errors import InputError
from screening.envelope import (
    EnvelopeSettings,
    critical_size,
    fixed_time_schedule,
    safe_windows,
    window_from_margins,
)

RATES = [0.05, 0.2, 1.0, 5.0, 20.0, 50.0, 200.0]


def _evaluator(functions, calls):
    def evaluate(pairs):
        calls.append(len(pairs))
        return [functions[k](r) for k, r in pairs]

    return evaluate


def test_root_search_brackets_known_roots_and_open_ends():
    """Margins linear in log rate with roots at 0.7C and 80C: the bracketing search returns them exactly
    (the final interpolation is exact for a log-linear margin); one bisection of every bracket costs one
    batched call; open ends and an everywhere-unsafe margin are NaN with a note."""
    lo_root, hi_root = 0.7, 80.0

    def window(r):  # safe between the roots: the lower of the two log-linear margins
        return min(math.log(r / lo_root), math.log(hi_root / r))

    functions = {
        "both": window,
        "open_low": lambda r: math.log(hi_root / r),
        "open_high": lambda r: math.log(r / lo_root),
        "never": lambda r: -1.0,
    }
    calls = []
    out = safe_windows(_evaluator(functions, calls), list(functions), RATES, bisections=3)
    assert out["both"][0] == pytest.approx(lo_root, rel=1e-9)
    assert out["both"][1] == pytest.approx(hi_root, rel=1e-9)
    assert out["both"][2] == ""
    assert math.isnan(out["open_low"][0]) and "lower end open" in out["open_low"][2]
    assert out["open_low"][1] == pytest.approx(hi_root, rel=1e-9)
    assert math.isnan(out["open_high"][1]) and "upper end open" in out["open_high"][2]
    assert all(math.isnan(v) for v in out["never"][:2]) and "no scanned rate" in out["never"][2]
    assert calls == [len(functions) * len(RATES), 4, 4, 4]  # the grid, then 2 + 1 + 1 brackets per bisection


def test_root_search_on_a_curved_margin_converges_with_bisection():
    """A margin curved in log rate (root at 3C): the interpolated bound's error shrinks with bisections
    (each halves the bracket in log rate)."""
    f = {"k": lambda r: 1.0 - math.exp(-(math.log(r / 3.0))) if r > 0 else -1}
    errors = [abs(math.log(safe_windows(_evaluator(f, []), ["k"], RATES, bisections=b)["k"][0] / 3.0))
              for b in (0, 2, 5)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01


def test_widest_run_and_critical_size():
    assert window_from_margins(RATES, [-1, 1, -1, 1, 1, 1, -1]) == (3, 5)
    assert window_from_margins(RATES, [-1] * 7) is None
    # margin linear in log size with its root at 120 nm
    sizes = [50.0, 100.0, 200.0]
    margins = [math.log(120.0 / s) for s in sizes]
    value, note = critical_size(sizes, margins)
    assert value == pytest.approx(120.0, rel=1e-9) and note == ""
    assert math.isnan(critical_size(sizes, [1, 1, 1])[0])
    assert math.isnan(critical_size(sizes, [-1, -1, -1])[0])


def test_fixed_time_schedule_hits_the_time_and_never_loses_to_constant_current():
    """Predicted stress of the chosen schedule ≤ that of constant current of the same total time, the
    total time is exactly T, and when the middle windows are stressed at slow rates (two-phase) and
    gentle at fast ones, they are the ones run fast."""
    rates = [0.2, 1.0, 5.0, 50.0]
    k = 10
    two_phase = {3, 4, 5, 6}
    table = [[(1500.0 / (1 + r / 5.0)) if w in two_phase else 50.0 + 10 * r for w in range(k)]
             for r in rates]
    span, hours = 0.96, 1.0
    schedule, predicted = fixed_time_schedule(rates, table, span, hours)
    assert sum(span / k / r for r in schedule) == pytest.approx(hours, rel=1e-12)
    cc_pred = max(float(np.interp(math.log(span / hours), np.log(rates), [row[w] for row in table]))
                  for w in range(k))
    assert predicted <= cc_pred
    fast = {w for w, r in enumerate(schedule) if r > span / hours}
    assert fast and fast <= two_phase


@pytest.mark.parametrize("bad, field", [
    (dict(c_rates=()), "--c-rates"), (dict(c_rates=(1.0, -2.0)), "--c-rates"),
    (dict(sizes_nm=(1.0,)), "--sizes"),
    (dict(target_min=0.0), "--target-min"), (dict(safety_factor=0.9), "--safety-factor"),
    (dict(seeds=0), "--seeds"), (dict(max_overpotential_mV=-1.0), "--max-overpotential-mV"),
])
def test_bad_settings_name_the_flag(bad, field):
    with pytest.raises(InputError, match=field):
        EnvelopeSettings(**bad)


def test_defaults_are_the_issues():
    env = EnvelopeSettings()
    assert env.c_rates == (0.05, 0.2, 1.0, 5.0, 20.0, 50.0, 200.0) and env.sizes_nm == (50.0, 100.0, 200.0)
    assert env.seeds >= 4 and env.safety_factor == 1.5 and env.target_min == 60.0 and env.soc_windows == 10
    assert dataclasses.replace(env, c_rates=[5, 1]).c_rates == (1.0, 5.0)


def _lfp_item(fractions=None):
    from mechanics.parameters.lfp import lfp_params
    from screening.driver import SweepItem

    return SweepItem(composition_id="lfp", formula="LiFePO4", fractions=fractions or {"Fe": 1.0},
                     params=lfp_params(), descriptors={}, source="literature")


@pytest.mark.parametrize("argv, field", [
    (["--c-rates", "1,-5"], "--c-rates"),
    (["--c-rates", ""], "--c-rates"),
    (["--sizes", "2"], "--sizes"),
    (["--target-min", "0"], "--target-min"),
    (["--safety-factor", "0.8"], "--safety-factor"),
    (["--c-rate", "2"], "--c-rate"),
    (["--particle-size-nm", "80"], "--particle-size-nm"),
    (["--grid-points", "12"], "--grid-points"),
])
def test_cli_bad_input_exits_2_naming_the_flag_and_writes_nothing(tmp_path, capsys, argv, field):
    from screening.cli import main

    out = tmp_path / "env"
    code = main(["envelope", "--metals", "Fe", "--step", "1", "--law", "vegard", "--out", str(out), *argv])
    assert code == 2
    assert field in capsys.readouterr().err
    assert not out.exists()


def test_a_toughness_that_cannot_be_estimated_is_refused_before_any_file(tmp_path):
    from screening.envelope import charging_envelope

    out = tmp_path / "env"
    with pytest.raises(InputError, match="k_ic"):
        charging_envelope([_lfp_item({"Fe": 0.5, "V": 0.5})], "vegard", out=out)
    assert not out.exists()
