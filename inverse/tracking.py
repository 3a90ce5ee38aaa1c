"""The edge of the calibration: write its outputs atomically, log an MLflow run, register the law.

``log_calibration`` builds ``OUT/`` in a temporary sibling directory (``calibration.json``,
``residual.npz``, PNGs), logs a run in experiment ``chemoscreen-calibration`` (params, metrics, the
directory as artifacts), logs the law in chemoscreen's safe model format (:mod:`chemoscreen.models`:
JSON and numeric arrays, never pickle) as a new version of the registered model (``lfp-chemomech``),
points alias ``champion`` at it unless ``promote=False``, and only then renames the directory into
place. Any failure deletes the new model version, marks the run FAILED and removes the temporary
directory: nothing half-written remains.

Default store: ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` with
artifacts in ``mlartifacts/`` beside the database file (``./mlartifacts`` for the default). The names
and the store helpers are :mod:`chemoscreen.store`'s.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from chemoscreen.store import (
    ALIAS,
    CALIBRATION_EXPERIMENT,
    MODEL_NAME,
    ensure_experiment,
    open_store,
    probe_tracking_uri,
    resolve_tracking_uri,
)
from inverse.images import file_sha256
from mechanics.errors import InputError


def write_outputs(cal, directory: Path, truth: dict | None = None) -> list[Path]:
    """calibration.json, residual.npz and the PNGs into an existing ``directory``."""
    from inverse.plots import plot_law, plot_maps

    written = [directory / "calibration.json", directory / "residual.npz", directory / "law.png"]
    written[0].write_text(cal.to_json())
    with open(written[1], "wb") as fh:
        np.savez_compressed(fh, **cal.residual_arrays())
    plot_law(cal, written[2], truth)
    for i, maps in enumerate(cal.residual):
        written.append(plot_maps(maps, directory / f"maps_p{i}.png", title=f"particle {i}"))
    return written


def _metrics(cal) -> dict:
    fit, ident = cal.fit, cal.identifiability
    out = cal.vegard.as_dict()
    out.update({"rmse_strain": float(fit.rmse_strain), "chi2_reduced": float(fit.chi2_reduced),
                "lambda": float(fit.smoothness_lambda), "dof": float(fit.dof),
                "n_pixels": float(fit.n_pixels), "downweighted_fraction": float(fit.downweighted_fraction),
                "n_hotspots": float(fit.n_hotspots)})
    out.update({f"time_{k}": float(v) for k, v in fit.timings_s.items()})
    if fit.pcg_solves is not None:
        out.update({"pcg_solves": float(fit.pcg_solves), "pcg_iterations": float(fit.pcg_iterations)})
    out["condition_number"] = float(ident.condition_number)
    out["n_unconstrained_knots"] = float(np.sum(~ident.constrained))
    for i, r in enumerate(cal.registration):
        out[f"p{i}_shift_dy_px"], out[f"p{i}_shift_dx_px"] = map(float, r["shift_px"])
    return out


def _params(cal) -> dict:
    settings, fit = cal.settings, cal.fit
    return {"n_knots": len(cal.knots_X), "monotone": settings.monotone, "plane": settings.plane,
            "lambda_rule": fit.lambda_rule, "n_particles": fit.n_particles,
            "law_class": type(cal.law).__name__, "solver": fit.solver, "device": fit.device,
            "strain_psf_nm": settings.strain_psf_nm, "composition_psf_nm": settings.composition_psf_nm,
            "rim": fit.rim}


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move ``tmp`` to ``out_dir``; an existing ``out_dir`` is swapped out first and removed after."""
    old = None
    if out_dir.exists():
        if not out_dir.is_dir():
            raise InputError("--out", "a directory path (a file of that name exists)", str(out_dir))
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
        os.replace(out_dir, old / "previous")
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old / "previous", out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def log_calibration(cal, *, out_dir, tracking_uri: str | None = None, register: str | None = MODEL_NAME,
                    promote: bool = True, inputs=None, experiment: str = CALIBRATION_EXPERIMENT,
                    track: bool = True, truth: dict | None = None):
    """Write ``out_dir`` atomically and (``track``) log the run and register the law; returns the
    calibration with its ``mlflow`` section filled (``run_id``, ``model_uri = models:/NAME/VERSION``).

    ``inputs``: paths of the image files (their sha256 go into calibration.json); default the sources
    recorded when the sets were loaded. ``register=None`` logs the run without a model version.
    """
    from dataclasses import replace

    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if inputs is not None:
        cal = replace(cal, inputs=[{"path": str(p), "sha256": file_sha256(Path(p))} for p in inputs])
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    client = run_id = version = None
    try:
        write_outputs(cal, tmp, truth)
        if track:
            uri = resolve_tracking_uri(tracking_uri)
            probe_tracking_uri(uri)
            client = open_store(uri)
            exp_id = ensure_experiment(client, experiment, uri)
            cal, run_id, version = _log_run(client, uri, exp_id, cal, tmp, register, promote)
            (tmp / "calibration.json").write_text(cal.to_json())
            client.log_artifact(run_id, str(tmp / "calibration.json"))
            client.set_terminated(run_id, "FINISHED")
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if client is not None and version is not None:
            client.delete_model_version(register, version)
        if client is not None and run_id is not None:
            client.set_terminated(run_id, "FAILED")
        raise
    return cal


def _log_run(client, uri: str, exp_id: str, cal, tmp: Path, register: str | None, promote: bool):
    from mlflow.entities import Metric, Param

    run = client.create_run(exp_id, run_name="calibration", tags={"chemoscreen.kind": "calibration"})
    run_id = run.info.run_id
    version = None
    try:
        import time

        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in _metrics(cal).items()],
                         params=[Param(k, str(v)) for k, v in _params(cal).items()])
        client.log_artifacts(run_id, str(tmp))
        if register:
            from chemoscreen.models import log_model

            version = log_model(client, run_id, cal.law.to("cpu"), artifact_path="law", register=register,
                                samples=cal.law_samples,
                                metadata={"axes": ["a", "b", "c"], "unit": "strain (1)",
                                          "X": "Li site fraction"})
            if promote:
                client.set_registered_model_alias(register, ALIAS, version)
        model_uri = f"models:/{register}/{version}" if version else None
        return cal.with_mlflow(run_id, model_uri), run_id, version
    except BaseException:
        if version is not None:
            client.delete_model_version(register, version)
        client.set_terminated(run_id, "FAILED")
        raise


def load_law(model_uri: str, *, tracking_uri: str | None = None, allow_pickle: bool = False):
    """The law module of a registered model (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ...);
    evaluates ε⁰(X) → (..., 3) for a tensor X without the training data.

    Read with :func:`chemoscreen.models.load_model`: JSON and numeric arrays only, nothing unpickled.
    ``allow_pickle`` also loads versions an older chemoscreen stored with pickle (runs their code).
    """
    from chemoscreen.models import load_model

    return load_model(model_uri, tracking_uri=tracking_uri, allow_pickle=allow_pickle).model
