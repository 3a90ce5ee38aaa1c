"""The edge of ``learn-kinetics``: outputs (``k_map.npz``, ``kinetics.json``, plots), the MLflow run and the
``lfp-kinetics`` model version, with the calibration's guarantees (:mod:`inverse.tracking`): outputs and
store checked and reserved before the fit (:func:`inverse.tracking.prepare_outputs`), everything written
to a staging folder, any failure rolls back (no version registered, the alias where it was, the previous
``OUT`` back, the run FAILED)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from inverse.kinetics.fit import MU_REFERENCE_RANGE, KineticsFit
from inverse.kinetics.law import KineticsModel
from inverse.tracking import HOST_TAG, KIND_TAG, PID_TAG, _Commit

KINETICS_EXPERIMENT = "chemoscreen-kinetics"
KINETICS_MODEL_NAME = "lfp-kinetics"


def stored_model(fit: KineticsFit) -> KineticsModel:
    """The fit's μ_h and k₀ as a :class:`KineticsModel` (μ_h shifted to mean 0 over X in [0.1, 0.9])."""
    from inverse.kinetics.model import MU_UNIT_EV

    mu = np.asarray(fit.coefficients["mu"], float) * MU_UNIT_EV
    model = KineticsModel(
        mu,
        np.asarray(fit.coefficients["k0"], float),
        float(fit.coefficients["kT_eV"]),
        fit.rate_law,
        fit.mu_absolute,
    )
    x = np.linspace(*MU_REFERENCE_RANGE, 801)
    if not fit.mu_absolute:  # the B-splines sum to one: a constant shift of every coefficient shifts μ_h
        model = KineticsModel(
            mu - model.mu_h_eV(x).mean(), model.k0_coefficients, model.kT_eV, model.rate_law
        )
    return model


def write_outputs(fit: KineticsFit, directory: Path) -> list[Path]:
    """``kinetics.json``, ``k_map.npz`` and the PNGs into an existing ``directory``."""
    from inverse.kinetics.plots import plot_frames, plot_k_map, plot_laws, plot_residuals

    directory = Path(directory)
    (directory / "kinetics.json").write_text(fit.to_json())
    arrays = {}
    for i, (lk, sd) in enumerate(zip(fit.log_k, fit.log_k_std)):
        suffix = "" if len(fit.log_k) == 1 else f"_{i}"
        arrays[f"log_k{suffix}"], arrays[f"log_k_std{suffix}"] = lk, sd
    with open(directory / "k_map.npz", "wb") as fh:
        np.savez_compressed(fh, **arrays)
    written = [directory / "kinetics.json", directory / "k_map.npz"]
    written.append(plot_laws(fit, directory / "mu_k0.png"))
    written.append(plot_k_map(fit, directory / "k_map.png"))
    written.append(plot_frames(fit, directory / "frames.png"))
    written.append(plot_residuals(fit, directory / "residuals.png"))
    return written


def _metrics(fit: KineticsFit) -> dict:
    out = {
        k: float(fit.fit[k])
        for k in (
            "heldout_rms",
            "train_rms",
            "sigma_X",
            "heldout_rms_over_sigma",
            "n_intervals",
            "n_heldout",
            "n_pixels",
        )
    }
    out["smoothness_lambda"] = float(fit.smoothness_lambda)
    for s in fit.scores:
        out[f"heldout_loglik_{s.rate_law}"] = float(s.heldout_loglik)
    out.update({f"time_{k}": float(v) for k, v in fit.fit["timings_s"].items()})
    return out


def _params(fit: KineticsFit) -> dict:
    s = fit.settings
    return {
        "rate_law": fit.rate_law,
        "rate_law_option": s.rate_law,
        "steps_per_interval": s.steps_per_interval,
        "mu_knots": s.mu_knots,
        "k0_knots": s.k0_knots,
        "lambdas": ",".join(f"{v:g}" for v in s.lambdas),
        "holdout_every": s.holdout_every,
        "n_series": fit.fit["n_series"],
    }


class _KineticsCommit(_Commit):
    """The calibration's commit and rollback, with the kinetics outputs and model."""

    def run(self, fit, truth=None):
        out = self.out
        try:
            write_outputs(fit, out.staging)
            if out.track:
                fit = self._log(fit)
            self._move_in()
            if out.track and self.version is not None and out.promote:
                self._promote()
            if out.track:
                self.client.set_terminated(self.run_id, "FINISHED")
        except BaseException:
            self._undo()
            raise
        out.committed = True
        if self.aside is not None:
            import shutil

            shutil.rmtree(self.aside, ignore_errors=True)
        return fit

    def _log(self, fit):
        import time

        from mlflow.entities import Metric, Param
        from mlflow.exceptions import MlflowException

        from chemoscreen.io import host_name
        from chemoscreen.models import log_model
        from inverse.kinetics.law import register

        out, client = self.out, self.client
        tags = {KIND_TAG: "kinetics", HOST_TAG: host_name(), PID_TAG: str(os.getpid())}
        self.run_id = client.create_run(out.experiment_id, run_name="learn-kinetics", tags=tags).info.run_id
        now = int(time.time() * 1000)
        client.log_batch(
            self.run_id,
            metrics=[Metric(k, v, now, 0) for k, v in _metrics(fit).items()],
            params=[Param(k, str(v)) for k, v in _params(fit).items()],
        )
        client.log_artifacts(self.run_id, str(out.staging))
        if out.register is not None:
            register()
            try:
                client.get_registered_model(out.register)
            except MlflowException:
                self.created_model = True
            self.version = log_model(
                client,
                self.run_id,
                stored_model(fit),
                artifact_path="kinetics",
                register=out.register,
                metadata={
                    "mu_h": "eV, relative to its mean over X in [0.1, 0.9]",
                    "k0": "A/m^2",
                    "X": "Li site fraction",
                },
            )
        fit.mlflow = {
            "run_id": self.run_id,
            "model_uri": f"models:/{out.register}/{self.version}" if self.version else None,
        }
        (out.staging / "kinetics.json").write_text(fit.to_json())
        client.log_artifact(self.run_id, str(out.staging / "kinetics.json"))
        return fit


def log_kinetics(fit: KineticsFit, outputs) -> KineticsFit:
    """Write the outputs reserved by :func:`inverse.tracking.prepare_outputs` and (when tracking) log the
    run and register the model; returns the fit with ``mlflow`` filled. Any failure rolls back."""
    from mechanics.errors import InputError

    if outputs.committed or not outputs.staging.is_dir():
        raise InputError(
            "outputs", "outputs reserved by prepare_outputs and not used yet", str(outputs.out_dir)
        )
    return _KineticsCommit(outputs).run(fit)
