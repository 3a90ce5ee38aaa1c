"""The charging envelope: root search on synthetic margins with known roots, the fixed-time protocol
against constant current, a limit of the physics (zero misfit), bad input and resume."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from mechanics.errors import InputError
from screening.envelope import (
    EnvelopeSettings,
    critical_size,
    fixed_time_schedule,
    is_regularised,
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


def test_closed_form_critical_size_against_a_hand_value():
    """L_c = (K_Ic/(s σ_d Y))²/(π f) with LiFePO4's estimated K_Ic = 0.40166797 MPa·m^½ (its Griffith
    value from mechanics/parameters/fracture_toughness.py), Y = 1.12, f = 0.1, s = 1.5, σ_d = 500 MPa:
    (0.40166797/840)² m / (0.1 π) = 727.823 nm by hand; σ_c there is s σ_d = 750 MPa (the inverse)."""
    from mechanics.fracture import critical_size_nm, critical_stress_MPa

    k_ic = 0.40166797121703823
    size = critical_size_nm(k_ic, 500.0, flaw_fraction=0.1, safety_factor=1.5, geometry_factor=1.12)
    assert size == pytest.approx(727.823, abs=5e-4)  # the hand value's last digit
    assert critical_stress_MPa(k_ic, 0.1 * size, 1.12) == pytest.approx(750.0, rel=1e-12)
    with pytest.raises(InputError, match="driving_stress_MPa"):
        critical_size_nm(k_ic, -10.0)


def test_critical_size_uses_the_closed_form_between_regularised_sizes():
    """Margins linear in log size cross at 120 nm; where both sizes around the crossing carry a closed
    form (regularised range) it wins (here 130 nm, unlike the interpolation), otherwise interpolation."""
    sizes = [50.0, 100.0, 200.0]
    margins = [math.log(120.0 / s) for s in sizes]
    assert critical_size(sizes, margins, [None, 130.0, 130.0]) == (130.0, "")
    assert critical_size(sizes, margins, [None, None, 130.0])[0] == pytest.approx(120.0, rel=1e-9)
    assert critical_size(sizes, margins, None)[0] == pytest.approx(120.0, rel=1e-9)


def test_regularised_range_starts_where_the_raised_interface_passes_the_materials():
    """LiFePO4's λ = 1.4 nm is L/16 at L = 16 × 1.4 ≈ 22.4 nm: regularised above, not below."""
    from mechanics.parameters.lfp import lfp_params

    p = lfp_params()
    assert is_regularised(p, 23.0, 1 / 16) and is_regularised(p, 3000.0, 1 / 16)
    assert not is_regularised(p, 22.0, 1 / 16) and not is_regularised(p, 10.0, 1 / 16)


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
    (dict(interface_fraction=0.2), "interface_fraction"),
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


# --- physics limits through the whole envelope (periodic pre-screen fidelity, tiny grid, one seed) -------

TINY_ENV = dict(c_rates=(1.0, 200.0), sizes_nm=(50.0, 200.0), seeds=1, bisections=0, soc_windows=2,
                target_min=10.0, directions=("charge",), flaw_fraction=0.2,
                interface_fraction=0.125)  # 16²: the flaw spans 3.2 cells, the interface 2


def _scaled_misfit(item, factor, name, omega_factor=1.0):
    """A variant of ``item`` with its misfit (and optionally Ω) scaled."""
    from mechanics.parameters.base import OrthorhombicLattice

    p = item.params
    de = p.delithiated.edges_A
    lattice = OrthorhombicLattice(*[d * (1 + factor * m) for d, m in zip(de, p.misfit)])
    params = dataclasses.replace(p, name=name, lithiated=lattice, omega_eV=omega_factor * p.omega_eV)
    return dataclasses.replace(item, composition_id=name, formula=name, params=params)


def _tiny_settings():
    from mechanics.screen import ScreeningSettings

    settings = ScreeningSettings(grid_points=16, fidelity="periodic", soc_step_max=0.1, composition_tol=0.05,
                                 observations=2)
    return settings, EnvelopeSettings(**TINY_ENV)


@pytest.fixture(scope="module")
def tiny_envelope(tmp_path_factory):
    """LiFePO4 and the same with zero misfit, through the envelope (twice: resume)."""
    from screening.envelope import charging_envelope

    lfp = _lfp_item()
    items = [lfp, _scaled_misfit(lfp, 0.0, "zero")]
    out = tmp_path_factory.mktemp("envelope")
    settings, env = _tiny_settings()
    first = charging_envelope(items, "vegard", settings=settings, envelope=env, out=out)
    again = charging_envelope(items, "vegard", settings=settings, envelope=env, out=out)
    return first, again, out


def test_zero_misfit_never_fractures(tiny_envelope):
    """No misfit, no coherency stress: the driving stress is zero to round-off at every rate and size,
    nothing fractures and the lower end of the window is open."""
    result, _, _ = tiny_envelope
    zero = result.table[result.table["formula"] == "zero"]
    assert (zero["driving_stress_MPa"].abs() < 1e-6).all()
    assert not zero["fractured"].any()
    row = result.summary[result.summary["formula"] == "zero"].iloc[0]
    assert math.isnan(row.min_safe_C_rate) and "lower end open" in row.note


def test_protocol_is_never_worse_than_constant_current_and_takes_exactly_T(tiny_envelope, tmp_path):
    result, _, out = tiny_envelope
    charge = result.summary[(result.summary["direction"] == "charge") & (result.summary["formula"] != "zero")]
    assert len(charge) == 2
    for row in charge.itertuples():
        assert row.protocol_peak_stress_MPa <= row.constant_peak_stress_MPa
        assert row.protocol_time_min == pytest.approx(TINY_ENV["target_min"], rel=1e-9)
        frame = pd.read_csv(out / f"protocol_{row.candidate_id}_{row.size_nm:g}.csv")
        assert list(frame.columns) == ["soc_start", "soc_end", "c_rate"]
        hours = ((frame["soc_start"] - frame["soc_end"]) / frame["c_rate"]).sum()
        assert hours * 60 == pytest.approx(TINY_ENV["target_min"], rel=1e-6)


def test_files_follow_the_contract_and_a_rerun_simulates_nothing(tiny_envelope):
    from screening.envelope import ENVELOPE_COLUMNS, SUMMARY_COLUMNS

    first, again, out = tiny_envelope
    assert first.simulated > 0 and again.simulated == 0
    table = pd.read_csv(out / "envelope.csv")
    summary = pd.read_csv(out / "envelope_summary.csv")
    assert list(table.columns) == ENVELOPE_COLUMNS and list(summary.columns) == SUMMARY_COLUMNS
    assert len(table) == 2 * 2 * 2 and len(summary) == 2 * 2
    assert summary["k_ic_source"].str.startswith("estimated").all()
    pd.testing.assert_frame_equal(first.summary, again.summary)
    assert all(p.exists() for p in first.files) and any(p.suffix == ".png" for p in first.files)


def test_sweep_metric_names_and_safe_window_decades():
    """Metrics are <name>_<direction>_<size>nm with NaN left out; safe_window_decades caps open ends at
    the scanned range and is 0 when no rate is safe."""
    from screening.envelope import SUMMARY_COLUMNS, sweep_metrics
    from screening.ranking import safe_window_decades

    assert safe_window_decades(0.5, 50.0, 0.05, 200.0) == pytest.approx(2.0)
    assert safe_window_decades(math.nan, 20.0, 0.05, 200.0) == pytest.approx(math.log10(20 / 0.05))
    assert safe_window_decades(math.nan, math.nan, 0.05, 200.0, any_safe=False) == 0.0
    row = dict.fromkeys(SUMMARY_COLUMNS, math.nan)
    row.update(candidate_id="c1", formula="LiFePO4", size_nm=100.0, k_ic_source="estimated", note="")
    charge = {**row, "direction": "charge", "min_safe_C_rate": 0.5, "max_safe_C_rate": 50.0,
              "fastest_time_min": 3.0}
    discharge = {**row, "direction": "discharge", "min_safe_C_rate": 0.2,
                 "note": "upper end open: safe at the fastest scanned rate 200C"}
    metrics = sweep_metrics(pd.DataFrame([charge, discharge]), "c1", 100.0, (0.05, 200.0))
    assert metrics == {"min_safe_C_rate_charge_100nm": 0.5, "max_safe_C_rate_charge_100nm": 50.0,
                       "fastest_time_min_charge_100nm": 3.0, "min_safe_C_rate_discharge_100nm": 0.2,
                       "safe_window_decades": pytest.approx(2.0)}


@pytest.mark.slow
def test_sweep_envelope_logs_window_metrics_and_artifacts_on_the_candidate_run(tmp_path, monkeypatch):
    """``sweep --envelope`` path: a one-candidate sweep on a local Ray and SQLite, then the envelope at the
    sweep's particle size logged on the candidate's child run (metrics and envelope/ artifacts)."""
    import candidates
    import screening
    from chemoscreen import store
    from screening.envelope import log_sweep_envelope

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings, env = _tiny_settings()
    settings = dataclasses.replace(settings, particle_size_nm=50.0, snapshots=1)
    space = candidates.olivine_space(metals=("Fe",), step=1.0)
    options = screening.SweepOptions(tracking_uri=uri, num_cpus=2, artifacts=False, progress=False)
    outcome = screening.sweep(space, "vegard", settings, options=options)
    out = log_sweep_envelope(outcome, space, "vegard", settings, envelope=env, out=tmp_path / "env")
    client = store.open_store(outcome.tracking_uri)
    run_id = outcome.table["run_id"].iloc[0]
    metrics = client.get_run(run_id).data.metrics
    assert "safe_window_decades" in metrics and metrics["safe_window_decades"] > 0
    assert any(k.endswith("_charge_50nm") for k in metrics), sorted(metrics)
    artifacts = [a.path for a in client.list_artifacts(run_id, "envelope")]
    assert any(a.endswith(".png") for a in artifacts) and (out / "envelope_summary.csv").exists()


def test_interface_length_is_raised_to_a_fraction_of_the_size():
    """λ = √(κ/(ρ_s Ω)) becomes f_λ·L where the material's is thinner (LiFePO4: 1.4 nm < 200/16 nm) and
    stays where it is wider (5 nm/16 = 0.31 nm < 1.4 nm)."""
    from mechanics import units
    from mechanics.parameters.lfp import lfp_params
    from screening.envelope import model_parameters

    p = lfp_params()
    energy = p.site_density_per_nm3 * p.omega_eV * units.AJ_PER_EV
    raised = model_parameters(p, 200.0, 1 / 16)
    assert [math.sqrt(k / energy) for k in raised.kappa_aJ_per_nm] == pytest.approx([12.5] * 3, rel=1e-12)
    assert model_parameters(p, 5.0, 1 / 16) is p and math.sqrt(p.kappa_aJ_per_nm[0] / energy) > 5 / 16


def test_sizes_share_one_scale_free_simulation(tiny_envelope):
    """Both sizes run with λ = L/8 on 16 cells, the same problem on the grid: equal driving stress, and
    σ_c ∝ 1/√a₀ halves from 50 to 200 nm (a₀ = f·L)."""
    result, _, _ = tiny_envelope
    lfp = result.table[result.table["formula"] == "LiFePO4"]
    small, large = (lfp[lfp["size_nm"] == L].sort_values("c_rate") for L in (50.0, 200.0))
    np.testing.assert_array_equal(small["driving_stress_MPa"].to_numpy(),
                                  large["driving_stress_MPa"].to_numpy())
    ratio = small["critical_stress_MPa"].to_numpy() / large["critical_stress_MPa"].to_numpy()
    np.testing.assert_allclose(ratio, 2.0, rtol=1e-12)
