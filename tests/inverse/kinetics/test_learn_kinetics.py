"""``learn-kinetics`` and ``synth-series`` end to end on a tiny series (fast), the fit's pieces against
closed forms (B-splines, the implicit-function gradient of the reservoir solve), bad input, and the
stored model (safe format, rollback of a failed fit)."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
import torch

from inverse.commands import register
from inverse.kinetics import KineticsSettings, learn_kinetics, load_kinetics, synthesize_series
from inverse.kinetics.model import bspline_basis, spline
from inverse.kinetics.series import save_series
from mechanics.errors import InputError

# 8 px particle at one cell per pixel, 7 frames at 5C then 40C: a fit of a few L-BFGS steps takes seconds
TINY = dict(size_px=8, oversample=1, frames=7, c_rates=(5.0, 40.0), drift_px=1.0, seed=2)
QUICK = ["--max-iter", "1", "--lambdas", "10", "--steps-per-interval", "4", "--holdout-every", "3"]


def run(argv):
    parser = argparse.ArgumentParser(prog="chemoscreen")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.fixture(scope="module")
def tiny():
    return synthesize_series(**TINY)


@pytest.fixture
def workdir(tmp_path, monkeypatch, empty_store):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    return tmp_path


def test_bsplines_are_a_partition_of_unity_and_reproduce_cubics():
    # uniform cubic B-splines sum to one and span the cubics: a least-squares fit of x³ − x is exact
    x = torch.linspace(0, 1, 101, dtype=torch.float64)
    basis = bspline_basis(x, 10)
    torch.testing.assert_close(basis.sum(-1), torch.ones_like(x))
    target = x**3 - x
    coef = torch.linalg.lstsq(basis, target[:, None]).solution[:, 0]
    torch.testing.assert_close(spline(x, coef), target, atol=1e-12, rtol=0)


def test_reservoir_gradient_of_the_newton_solve_matches_finite_differences():
    # the CIET reservoir solve iterates without a graph and takes one differentiable step: its gradient
    # is the implicit-function derivative, checked against central differences of the converged ν
    from mechanics.phasefield.reaction import CoupledIonElectron, solve_reservoir

    c = torch.linspace(0.1, 0.9, 12, dtype=torch.float64)[None]
    m = torch.sin(torch.arange(12, dtype=torch.float64))[None]
    k = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)

    def nu_of(rate):
        return solve_reservoir(
            CoupledIonElectron(rate * (1 + c)),
            c,
            m,
            torch.tensor([0.3], dtype=torch.float64),
            1,
            torch.zeros(1, dtype=torch.float64),
            iterations=40,
        )

    (grad,) = torch.autograd.grad(nu_of(k).sum(), k)
    h = 1e-5
    with torch.no_grad():
        fd = (nu_of(k + h) - nu_of(k - h)).sum() / (2 * h)
    assert float(grad) == pytest.approx(float(fd), rel=1e-6)


def test_learn_kinetics_cli_writes_outputs_and_registers_a_loadable_model(tiny, workdir, capsys):
    save_series(tiny, workdir / "s.npz")
    assert run(["learn-kinetics", "s.npz", "--out", "kin", "--rate-law", "auto", *QUICK]) == 0
    out = capsys.readouterr().out
    assert "registered models:/lfp-kinetics/1 (alias champion)" in out
    doc = json.loads((workdir / "kin" / "kinetics.json").read_text())
    assert doc["schema"] == "chemoscreen.kinetics/1"
    assert {s["rate_law"] for s in doc["rate_law"]["scores"]} == {"butler-volmer", "ciet"}
    assert doc["rate_law"]["chosen"] in ("butler-volmer", "ciet")
    assert len(doc["mu_h"]["X"]) == len(doc["mu_h"]["value_eV"]) == len(doc["k0"]["std_A_per_m2"])
    assert all(v > 0 for v in doc["k0"]["value_A_per_m2"]) and all(v >= 0 for v in doc["mu_h"]["std_eV"])
    assert doc["inputs"][0]["path"].endswith("s.npz") and len(doc["inputs"][0]["sha256"]) == 64
    with np.load(workdir / "kin" / "k_map.npz", allow_pickle=False) as maps:
        assert maps["log_k"].shape == tiny.shape == maps["log_k_std"].shape
        inside = np.isfinite(maps["log_k"])
        assert inside.sum() > 0 and np.isnan(maps["log_k"][0, 0])
        assert (maps["log_k_std"][inside] > 0).all()
    assert {"mu_k0.png", "k_map.png", "frames.png", "residuals.png"} <= {
        p.name for p in (workdir / "kin").iterdir()
    }
    # the series carries its cell voltage: μ_h is absolute, −e·OCV against Li/Li⁺, whose mean over the
    # plateau range lies near −3.43 eV (within the 50 mV a one-iteration fit may leave)
    x, mu = np.array(doc["mu_h"]["X"]), np.array(doc["mu_h"]["value_eV"])
    ref = (x >= 0.1) & (x <= 0.9)
    assert doc["mu_h"]["reference"] == "absolute" and doc["fit"]["voltage"]["used"]
    assert doc["fit"]["voltage"]["n_measured"] == 5  # one per interval: 7 frames, the missing one spanned
    assert abs(mu[ref].mean() + 3.43) < 0.05
    model = load_kinetics("models:/lfp-kinetics@champion", tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    assert model.mu_absolute
    np.testing.assert_allclose(model.k0_A_per_m2(x), doc["k0"]["value_A_per_m2"], rtol=1e-9)
    np.testing.assert_allclose(model.mu_h_eV(x), mu, atol=1e-12)

    # the sweep hook: LFP-like candidates (Fe ≥ 75 %) take the learned Ω and k₀, the others keep theirs
    import candidates
    from chemoscreen import store
    from screening.api import _with_kinetics, prepare_items

    items = prepare_items(candidates.olivine_space(metals=("Fe", "Mn"), step=0.25))
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    learned, pinned = _with_kinetics(items, "models:/lfp-kinetics@champion", uri, store.open_store(uri))
    assert pinned == "models:/lfp-kinetics/1"
    assert sum(it.fractions.get("Fe", 0.0) >= 0.75 for it in items) == 2  # LiFePO4 and Fe0.75Mn0.25
    for before, after in zip(items, learned):
        if before.fractions.get("Fe", 0.0) >= 0.75:
            assert after.params.omega_eV == pytest.approx(model.regular_solution_omega_eV())
            assert after.params.exchange_rate_A_m2 == pytest.approx(model.mean_k0_A_per_m2())
        else:
            assert after.params == before.params
    with pytest.raises(InputError, match="--kinetics-model"):
        _with_kinetics(items, "models:/lfp-kinetics/7", uri, store.open_store(uri))


def test_a_failed_fit_registers_nothing(tiny, workdir, monkeypatch):
    from mlflow import MlflowClient

    save_series(tiny, workdir / "s.npz")

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure after the registration")

    # after the run is logged and the version registered, before the outputs move into place
    monkeypatch.setattr("inverse.kinetics.tracking._KineticsCommit._move_in", broken)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"  # absolute: a relative URI reuses an earlier test's engine
    with pytest.raises(RuntimeError):
        run(["learn-kinetics", "s.npz", "--out", "kin", "--rate-law", "butler-volmer", "--tracking-uri", uri,
             *QUICK])
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert client.search_model_versions("name = 'lfp-kinetics'") == []
    assert client.search_registered_models() == []  # the rollback dropped the model it had created
    runs = client.search_runs([client.get_experiment_by_name("chemoscreen-kinetics").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert not (workdir / "kin").exists()


@pytest.mark.parametrize(
    "argv, field",
    [
        (["learn-kinetics", "missing.npz", "--out", "o", "--no-track"], "series"),
        (["learn-kinetics", "s.npz", "--out", "o", "--no-track", "--mu-knots", "6"], "--mu-knots"),
        (["learn-kinetics", "s.npz", "--out", "o", "--no-track", "--lambdas", "0"], "--lambdas"),
        (["synth-series", "--out", "x.txt"], "--out"),
    ],
)
def test_bad_input_exits_2_naming_the_field(tiny, workdir, capsys, argv, field):
    save_series(tiny, workdir / "s.npz")
    assert run(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0]
    assert not (workdir / "o").exists()


def test_a_series_that_violates_the_format_is_refused_naming_the_field(tiny, workdir, capsys):
    from inverse.kinetics.series import series_mapping

    raw = series_mapping(tiny)
    raw["time_s"] = raw["time_s"][::-1].copy()
    np.savez(workdir / "bad.npz", **raw)
    assert run(["learn-kinetics", "bad.npz", "--out", "o", "--no-track"]) == 2
    assert "time_s" in capsys.readouterr().err


def test_settings_are_validated():
    with pytest.raises(InputError, match="rate_law"):
        KineticsSettings(rate_law="marcus")
    with pytest.raises(InputError, match="holdout_every"):
        KineticsSettings(holdout_every=1)


def test_synth_series_cli_stores_the_truth(workdir, capsys):
    k = np.exp(np.linspace(0, 1, 6))[None] * np.ones((6, 1))
    np.save(workdir / "k.npy", k)
    assert run(["synth-series", "--out", "t.h5", "--size", "8", "--oversample", "1", "--frames", "4",
                "--c-rates", "10,-20", "--rate-law", "butler-volmer-activity", "--seed", "1",
                "--k-map", "k.npy"]) == 0
    from inverse.kinetics import load_series

    series = load_series(workdir / "t.h5")
    assert bytes(series.truth["truth_rate_law"]).decode() == "butler-volmer-activity"
    np.testing.assert_allclose(series.c_rate[:3], [10, 10, -20])
    # the user map, resampled onto the particle: k grows along the columns only
    log_k = series.truth["truth_log_k"]
    finite = np.isfinite(log_k)
    block = log_k[np.ix_(finite.any(axis=1), finite.any(axis=0))]
    assert block.shape == (8, 8) and np.all(np.diff(block, axis=1) > 0)
    np.testing.assert_allclose(np.diff(block, axis=0), 0, atol=1e-12)


def test_api_fit_of_one_series_without_laplace(tiny):
    fit = learn_kinetics(
        tiny,
        rate_law="ciet",
        max_iter=1,
        lambdas=(10.0,),
        steps_per_interval=2,
        holdout_every=3,
        laplace=False,
        use_voltage=False,
    )
    assert fit.rate_law == "ciet" and len(fit.scores) == 1
    assert np.isnan(fit.mu_h_std_eV).all() and np.isfinite(fit.mu_h_eV).all()
    # the voltage ignored: μ_h is known up to a constant and reported relative to its mean over [0.1, 0.9]
    assert not fit.mu_absolute and not fit.fit["voltage"]["used"]
    ref = (fit.X >= 0.1) & (fit.X <= 0.9)
    assert abs(fit.mu_h_eV[ref].mean()) < 1e-12


def test_the_learned_model_reproduces_the_reference_laws_it_can_represent():
    # cubic B-splines reproduce linear functions exactly: μ_h of the regular solution (entropy + Ω(1−2X))
    # is representable, so the spline free energy's f' equals RegularSolution's to round-off; and the
    # learned Butler-Volmer with the ideal exchange current as its k₀ spline (least squares on 8
    # functions) gives the reference law's rate to the spline's approximation error
    from inverse.kinetics.model import MU_UNIT_EV, LearnedButlerVolmer, Physics, SplineFreeEnergy
    from mechanics import units
    from mechanics.parameters.lfp import lfp_params
    from mechanics.phasefield.free_energy import RegularSolution
    from mechanics.phasefield.reaction import ButlerVolmer

    p = lfp_params()
    physics = Physics.lfp(298.15, 20.0)
    x = torch.linspace(0.0, 1.0, 201, dtype=torch.float64)
    enthalpy = p.omega_eV * (1 - 2 * x) / MU_UNIT_EV
    a = torch.linalg.lstsq(bspline_basis(x, 10), enthalpy[:, None]).solution[:, 0]
    learned = SplineFreeEnergy(physics, a)
    reference = RegularSolution(p.site_density_per_nm3, physics.kT_aJ, p.omega_eV * units.AJ_PER_EV)
    c = torch.linspace(0.02, 0.98, 97, dtype=torch.float64)
    torch.testing.assert_close(learned.derivative(c), reference.derivative(c), rtol=1e-10, atol=1e-9)

    k0 = p.exchange_rate_A_m2 * torch.sqrt(x.clamp(1e-4, 1 - 1e-4) * (1 - x).clamp(1e-4, 1))
    inner = (x > 0.05) & (x < 0.95)
    b = torch.linalg.lstsq(bspline_basis(x[inner], 8), torch.log(k0[inner])[:, None]).solution[:, 0]
    rate = physics.rate_per_A_m2
    eta = torch.linspace(-3, 3, 97, dtype=torch.float64)
    ours = LearnedButlerVolmer(torch.tensor(rate, dtype=torch.float64), 0.5, "ideal", b, learned)
    theirs = ButlerVolmer(rate * p.exchange_rate_A_m2, 0.5, "ideal")
    cc = torch.linspace(0.1, 0.9, 97, dtype=torch.float64)
    # 8 cubic B-splines approximate ln √(X(1−X)) on [0.1, 0.9] to 2 %
    torch.testing.assert_close(ours.rate(cc, eta), theirs.rate(cc, eta), rtol=0.02, atol=0)
