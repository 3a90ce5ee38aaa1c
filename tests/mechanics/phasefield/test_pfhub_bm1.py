"""PFHub benchmark 1 through the benchmark script's own code path (short run)."""

import csv
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "pfhub_bm1.py"


def _load():
    spec = importlib.util.spec_from_file_location("pfhub_bm1", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bm1a_short_run_writes_the_contract_csv(tmp_path):
    """F(0) of the periodic spectral discretisation is 319.2 (the spec's value for codes that see the
    non-periodic initial condition's seam; tolerance 0.05 for the quadrature), and F decreases
    monotonically (spinodal decomposition dissipates)."""
    bm1 = _load()
    # dc-tol 0.01 keeps the default run short; the contract (files, columns, F(0)) does not depend on it
    assert bm1.main(["--case", "a", "--t-end", "100", "--dc-tol", "0.01", "--out", str(tmp_path)]) == 0
    with open(tmp_path / "free_energy_1a.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0].keys()) == ["time", "free_energy"]
    times = [float(r["time"]) for r in rows]
    energy = [float(r["free_energy"]) for r in rows]
    assert times[0] == 0.0 and times[-1] == pytest.approx(100.0)
    assert times == sorted(times)
    assert energy[0] == pytest.approx(319.2, abs=0.05)
    assert all(b < a for a, b in zip(energy, energy[1:]))
    assert energy[-1] < 0.5 * energy[0]  # the spinodal has developed by t = 100


def test_bm1b_initial_energy_is_the_exact_integral():
    """With no-flux walls (cosine transform) there is no seam: F(0) is the integral over [0, 200]²,
    319.04 (spec), within 0.05."""
    bm1 = _load()
    from mechanics.phasefield.cahn_hilliard import total_free_energy

    c0 = bm1.initial_condition(200)[None]
    f_b = float(total_free_energy(bm1.model("b"), c0)[0])
    f_a = float(total_free_energy(bm1.model("a"), c0)[0])
    assert f_b == pytest.approx(319.04, abs=0.05)
    assert f_a == pytest.approx(319.2, abs=0.05)
