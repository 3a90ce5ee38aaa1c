"""``chemoscreen synth`` and ``chemoscreen calibrate`` (ARCHITECTURE §4.1); ``register`` adds them (and the
kinetics commands ``synth-series`` and ``learn-kinetics`` of :mod:`inverse.kinetics.commands`) to the
``chemoscreen`` parser. The options of the image set and of the fit are derived from
:class:`inverse.SynthSettings` and :class:`inverse.CalibrationSettings` (:mod:`chemoscreen.options`).
Handlers return the exit code: 0 success, 2 bad input (the message names the field), 1 other failure
(raised to the entry point)."""

from __future__ import annotations

import sys
import time

from chemoscreen import store
from chemoscreen.options import add_options, settings_from_args
from inverse.settings import CalibrationSettings, SynthSettings
from mechanics.errors import InputError

# fields set from Python only (no option): tables and objects, and knobs of the method's internals
SYNTH_PYTHON_ONLY = ("bow_ac", "strain_offset", "boundary_width_nm", "declared_noise_factor", "material",
                     "stiffness_ratio")
CALIBRATION_PYTHON_ONLY = ("n_robust", "fit_dislocations", "min_support_px", "plane", "material", "seed")


def register(subparsers) -> None:
    """Add ``synth`` and ``calibrate`` to an argparse subparsers object."""
    synth = subparsers.add_parser("synth", help="write a synthetic correlative image set with known truth")
    synth.add_argument("--out", required=True, help="image-set file (.npz, .h5 or .tif + .json sidecar)")
    add_options(synth.add_argument_group("image set (inverse.SynthSettings)"), SynthSettings,
                exclude=SYNTH_PYTHON_ONLY)
    synth.set_defaults(handler=cmd_synth)

    cal = subparsers.add_parser("calibrate", help="learn the eigenstrain law ε⁰(X) from image sets")
    cal.add_argument("images", nargs="+", metavar="IMAGES", help="image-set files; one law is shared")
    cal.add_argument("--out", required=True, help="output directory (written atomically)")
    cal.add_argument("--register", default=store.MODEL_NAME, metavar="NAME",
                     help=f"registered model name (default {store.MODEL_NAME})")
    cal.add_argument("--no-promote", dest="promote", action="store_false",
                     help=f"do not point alias {store.ALIAS} at the new version")
    cal.add_argument("--tracking-uri", default=None,
                     help="MLflow store (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    cal.add_argument("--experiment", default=store.CALIBRATION_EXPERIMENT, help="MLflow experiment")
    cal.add_argument("--no-track", dest="track", action="store_false",
                     help="write the outputs only; no MLflow run or model version")
    add_options(cal.add_argument_group("fit (inverse.CalibrationSettings)"), CalibrationSettings,
                exclude=CALIBRATION_PYTHON_ONLY)
    cal.set_defaults(handler=cmd_calibrate)

    from inverse.kinetics.commands import register as register_kinetics

    register_kinetics(subparsers)


def _fail(command: str, exc: InputError) -> int:
    print(f"chemoscreen {command}: error: {exc}", file=sys.stderr)
    return 2


def cmd_synth(args) -> int:
    from inverse.images import check_image_path, save_images
    from inverse.synth import synthesize

    try:
        settings = settings_from_args(SynthSettings, args)
        check_image_path(args.out, field="--out")  # before any work
        images = synthesize(settings)
        path = save_images(images, args.out, field="--out")
    except InputError as exc:
        return _fail("synth", exc)
    print(f"wrote {path} ({images.shape[0]}x{images.shape[1]} px, {int(images.mask.sum())} particle pixels, "
          f"law {settings.law}, truth under truth_*)")
    return 0


def cmd_calibrate(args) -> int:
    from tqdm.auto import tqdm

    from inverse.calibrate import calibrate
    from inverse.images import load_images
    from inverse.tracking import log_calibration, prepare_outputs

    start = time.perf_counter()
    try:
        settings = settings_from_args(CalibrationSettings, args)
        sets = [load_images(p) for p in tqdm(args.images, desc="load images", unit="file", disable=None)]
        # every output and the store are checked (and the output reserved) before the fit
        with prepare_outputs(args.out, tracking_uri=args.tracking_uri, register=args.register,
                             promote=args.promote, experiment=args.experiment, track=args.track) as outputs:
            cal = calibrate(sets, settings, progress=True)
            cal = log_calibration(cal, outputs=outputs)
    except InputError as exc:
        return _fail("calibrate", exc)
    v, fit = cal.vegard, cal.fit
    print(f"ε⁰ Vegard slopes: a {v.slope_a * 100:.3f} ± {v.slope_a_std * 100:.3f} %, "
          f"c {v.slope_c * 100:.3f} ± {v.slope_c_std * 100:.3f} %; max deviation from Vegard "
          f"{v.max_deviation * 100:.3f} %")
    print(f"fit: rmse {fit.rmse_strain:.3g}, chi2_reduced {fit.chi2_reduced:.3g}, "
          f"{fit.n_pixels} pixels, λ {fit.smoothness_lambda:.3g} (GCV), "
          f"{fit.n_hotspots} hot spots; solves: {fit.solver} on {fit.device}; outline: {fit.rim}")
    for i, r in enumerate(cal.registration):
        print(f"particle {i}: composition registered by shift (dy, dx) = "
              f"({r['shift_px'][0]:.2f}, {r['shift_px'][1]:.2f}) px")
    for w in cal.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if cal.mlflow.get("model_uri"):
        print(f"registered {cal.mlflow['model_uri']}" + (f" (alias {store.ALIAS})" if args.promote else ""))
    print(f"wrote {args.out}/calibration.json, residual.npz, PNGs in {time.perf_counter() - start:.1f} s")
    return 0
