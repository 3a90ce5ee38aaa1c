"""The edge of ``learn-kinetics``: outputs (``k_map.npz``, ``kinetics.json``, plots), the MLflow run and the
``lfp-kinetics`` model version, with the calibration's guarantees (:mod:`inverse.tracking`): outputs and
store checked and reserved before the fit (:func:`inverse.tracking.prepare_outputs`), everything written
to a staging folder, any failure rolls back (no version registered, the alias where it was, the previous
``OUT`` back, the run FAILED)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inverse.kinetics.fit import MU_REFERENCE_RANGE, KineticsFit
from inverse.kinetics.law import KineticsModel
from inverse.tracking import _Commit

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
    volts = fit.fit.get("voltage", {})
    for key in ("zero_potential_V", "zero_potential_std_mV", "heldout_rms_mV"):
        if volts.get(key) is not None and np.isfinite(volts[key]):
            out[f"voltage_{key}"] = float(volts[key])
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
        "voltage_used": bool(fit.fit.get("voltage", {}).get("used", False)),
        "voltage_sigma_mV": s.voltage_sigma_mV,
    }


class _KineticsCommit(_Commit):
    """The calibration's commit and rollback, with the kinetics outputs and model."""

    kind = "kinetics"
    run_name = "learn-kinetics"

    def _write(self, fit, truth) -> None:
        write_outputs(fit, self.out.staging)

    def _log(self, fit):
        from inverse.kinetics.law import register

        self._open_run(_metrics(fit), _params(fit))
        model_uri = None
        if self.out.register is not None:
            register()
            model_uri = self._register(
                stored_model(fit),
                "kinetics",
                metadata={
                    "mu_h": ("eV against Li/Li+ (-e OCV)" if fit.mu_absolute
                             else "eV, relative to its mean over X in [0.1, 0.9]"),
                    "k0": "A/m^2",
                    "X": "Li site fraction",
                },
            )
        fit.mlflow = {"run_id": self.run_id, "model_uri": model_uri}
        self._log_json("kinetics.json", fit.to_json())
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
