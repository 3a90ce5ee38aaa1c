"""``chemoscreen demo``: the whole pipeline on embedded defaults, everything under one output directory.

1. synthesize a correlative image set of an LFP platelet with a known (bowed) eigenstrain law;
2. calibrate the law from it, log the calibration run and register ``lfp-chemomech`` (alias champion);
3. generate the Fe/Mn/Co/Ni olivine candidates at step 0.25 (35 compositions);
4. sweep them with the registered law on a local Ray, one MLflow run per candidate
   (:func:`screening.api.sweep`, the path of ``chemoscreen sweep``);
5. rank them (score and Pareto front), write the table, the Pareto plot and the HTML report, print the
   link to the ranking in the MLflow UI;
6. the charging envelope of the top 3 candidates at one size (:func:`screening.charging_envelope`, the
   path of ``chemoscreen envelope``): safe C-rate window per direction and the two charging protocols.

Sizes are chosen so the whole demo takes a few minutes on 2 CPU cores; the science is the same as with
the defaults, only coarser (see ``DEMO_SETTINGS``).
"""

from __future__ import annotations

import time
from pathlib import Path

from chemoscreen import store

METALS = ("Fe", "Mn", "Co", "Ni")
STEP = 0.25
# 32² cells per platelet, 6 stress observations, 3 snapshots: the protocol of the defaults on a coarser grid
DEMO_SETTINGS = {"grid_points": 32, "observations": 6, "snapshots": 3, "soc_step_max": 0.04}
DEMO_SYNTH = {"size_px": 64, "seed": 0, "law": "bowed"}
# the probe PSFs the synthetic images are made with (synthesize's defaults) are modelled in the fit
DEMO_CALIBRATION = {"n_bootstrap": 8, "n_knots": 9, "strain_psf_nm": 10.0, "composition_psf_nm": 10.0}


# step 6: the envelope on the periodic pre-screen fidelity, a coarse grid (16², the interface λ = L/8 over
# 2 cells, the flaw a₀ = 0.2·L over 3.2 cells), charge only, 2 seeds and a short rate scan, to keep it
# to minutes on 2 cores; the envelope's own defaults (free platelet, 32², 8 seeds) are in docs/envelope.md
DEMO_ENVELOPE_SIZE_NM = 100.0
DEMO_ENVELOPE = {"c_rates": (5.0, 50.0, 200.0), "sizes_nm": (DEMO_ENVELOPE_SIZE_NM,), "seeds": 2,
                 "soc_windows": 5, "target_min": 10.0, "bisections": 0, "flaw_fraction": 0.2,
                 "interface_fraction": 0.125, "directions": ("charge",)}
DEMO_ENVELOPE_SETTINGS = {"grid_points": 16, "fidelity": "periodic", "observations": 10,
                          "soc_step_max": 0.05, "composition_tol": 0.05}
TOP = 3
STEPS = 6


def _step(number: int, text: str) -> float:
    print(f"[{number}/{STEPS}] {text}", flush=True)
    return time.perf_counter()


def _done(start: float, detail: str = "") -> None:
    print(f"      done in {time.perf_counter() - start:.1f} s{'; ' + detail if detail else ''}", flush=True)


def calibrate_and_register(out: Path, tracking_uri: str) -> str:
    """Steps 1–2: write the synthetic image set, calibrate, log and register; returns the pinned model URI."""
    import inverse
    from inverse.tracking import log_calibration, prepare_outputs

    start = _step(1, "synthesize a correlative LFP image set (bowed law, noise, dislocations)")
    images = inverse.synthesize(inverse.SynthSettings(**DEMO_SYNTH))
    images_path = inverse.save_images(images, out / "lfp_synthetic.npz")
    _done(start, str(images_path))

    start = _step(2, f"calibrate the eigenstrain law and register it as {store.MODEL_NAME}@{store.ALIAS}")
    calibration_dir = out / "calibration"
    # the outputs and the store are checked and reserved before the fit, as `chemoscreen calibrate` does
    with prepare_outputs(calibration_dir, tracking_uri=tracking_uri, register=store.MODEL_NAME) as outputs:
        settings = inverse.CalibrationSettings(**DEMO_CALIBRATION)
        calibration = inverse.calibrate(images, settings, progress=True)
        calibration = log_calibration(calibration, outputs=outputs, inputs=[images_path])
    model_uri = calibration.mlflow["model_uri"] if isinstance(calibration.mlflow, dict) else None
    _done(start, f"{calibration_dir / 'calibration.json'}; model {model_uri}")
    return model_uri or store.DEFAULT_MODEL_URI


def run_demo(out: str | Path = "demo-output", *, num_cpus: int | None = None) -> int:
    """Run the five steps; everything is written under ``out``.

    Args:
        out: the output folder (``--out``): the SQLite store, artifacts, calibration, ranking, plots.
        num_cpus: CPUs of the local Ray (``--num-cpus``; None: all).

    Returns:
        The process exit code.

    Raises:
        InputError: ``out`` is a file, under a file or not writable, or ``num_cpus`` is not a positive
            integer (before any work).
    """
    import candidates
    from mechanics.screen import ScreeningSettings
    from screening.api import sweep
    from screening.cli import check_output
    from screening.driver import SweepOptions
    from screening.envelope import EnvelopeSettings, charging_envelope, print_envelope
    from screening.plots import pareto_png
    from screening.present import DEFAULT_UI_URL, print_table, ranking_url, sweep_view_key, ui_hint
    from screening.report import fetch_report

    begin = time.perf_counter()
    out = check_output(Path(out).resolve(), "--out", folder=True)
    uri = f"sqlite:///{out / 'mlflow.db'}"
    # built first, so a bad option fails before the calibration's minutes
    options = SweepOptions(tracking_uri=uri, num_cpus=num_cpus, progress=True,
                           space=f"olivine metals={','.join(METALS)} step={STEP} source=literature")
    settings = ScreeningSettings(**DEMO_SETTINGS)
    out.mkdir(parents=True, exist_ok=True)
    # create the store and both experiments (artifacts in OUT/mlartifacts) before anything else writes
    client = store.open_store(uri)
    for name in (store.CALIBRATION_EXPERIMENT, store.SCREENING_EXPERIMENT):
        store.ensure_experiment(client, name, uri)

    model_uri = calibrate_and_register(out, uri)

    start = _step(3, f"generate olivine candidates: metals {','.join(METALS)}, step {STEP}")
    space = candidates.olivine_space(metals=METALS, step=STEP)
    _done(start, f"{len(space)} candidates")

    start = _step(4, f"sweep {len(space)} candidates on a local Ray (model {model_uri})")
    outcome = sweep(space, law=model_uri, settings=settings, options=options)
    _done(start, f"{outcome.simulated} simulated, {outcome.skipped} already finished, "
                 f"{outcome.failed} failed")

    start = _step(5, "rank: feasibility (4.5 V window), score and Pareto front "
                    "(usable energy up; stress, |ΔV|, cost and supply risk down)")
    table = outcome.table
    candidates.write_table(table, out / "ranking.csv")
    if table["pareto_rank"].notna().any():
        pareto_png(table, out / "ranking_pareto.png")
    # the sweep logged its report on the parent run (or warned why not); a copy goes next to the ranking
    try:
        report = fetch_report(store.open_store(uri), outcome.parent_run_id, out / "report.html")
    except Exception as exc:  # the ranking above is written; the report can be made later
        report = f"not written ({type(exc).__name__}); run `chemoscreen report --tracking-uri {uri}`"
    _done(start, f"{out / 'ranking.csv'}, {out / 'ranking_pareto.png'}, {report}")

    print()
    print_table(table, top=15)

    top = [f for f in table.loc[table["pareto_rank"].notna(), "formula"].head(TOP)]
    start = _step(6, f"charging envelope of the top {len(top)} at {DEMO_ENVELOPE_SIZE_NM:g} nm: safe "
                     "C-rate window and charging protocols")
    envelope = charging_envelope([c for c in space if c.formula in top], model_uri,
                                 settings=ScreeningSettings(**DEMO_ENVELOPE_SETTINGS),
                                 envelope=EnvelopeSettings(**DEMO_ENVELOPE), out=out / "envelope",
                                 tracking_uri=uri, progress=True)
    _done(start, f"{envelope.simulated} simulations; {out / 'envelope'}")
    print_envelope(envelope)
    print(f"\nWhole demo: {time.perf_counter() - begin:.0f} s. Everything is in {out}")
    print(f"Open the report: {report}")
    print(f"Open the MLflow UI:\n  {ui_hint(uri)}")
    link = ranking_url(DEFAULT_UI_URL, outcome.experiment_id, outcome.parent_run_id,
                       sweep_view_key(outcome.sweep_id))
    print(f"  then the ranking: {link}")
    return 0
