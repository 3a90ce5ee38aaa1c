"""``chemoscreen synth`` and ``chemoscreen calibrate`` (ARCHITECTURE §4.1); ``register`` adds them to the
``chemoscreen`` parser. Handlers return the exit code: 0 success, 2 bad input (the message names the
field), 1 other failure (raised to the entry point)."""

from __future__ import annotations

import argparse
import sys
import time

from chemoscreen import store
from mechanics.errors import InputError


def _pair(text: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected DY,DX in nm, got {text!r}") from None
    return a, b


def register(subparsers) -> None:
    """Add ``synth`` and ``calibrate`` to an argparse subparsers object."""
    synth = subparsers.add_parser("synth", help="write a synthetic correlative image set with known truth")
    synth.add_argument("--out", required=True, help="image-set file (.npz, .h5 or .tif + .json sidecar)")
    synth.add_argument("--law", default="vegard",
                       help="true law: vegard, bowed, or a JSON/CSV table X,a,c (default vegard)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--size", type=int, default=96, help="image size in pixels (default 96)")
    synth.add_argument("--pixel-size-nm", type=float, default=20.0, help="strain pixel pitch (default 20)")
    synth.add_argument("--oversample", type=int, default=2,
                       help="fine sub-pixels per image pixel for the forward model (default 2)")
    synth.add_argument("--shape", default="ellipse", choices=("ellipse", "disc", "hexagon"))
    synth.add_argument("--angle", type=float, default=25.0, help="crystal_angle_deg (default 25)")
    synth.add_argument("--composition-sigma", type=float, default=0.03, help="noise of X (default 0.03)")
    synth.add_argument("--strain-sigma", type=float, default=5e-4, help="strain noise (default 5e-4)")
    synth.add_argument("--composition-psf-nm", type=float, default=10.0, help="Gaussian PSF σ of X (nm)")
    synth.add_argument("--strain-psf-nm", type=float, default=10.0, help="Gaussian PSF σ of strain (nm)")
    synth.add_argument("--registration-offset-nm", type=_pair, default=(14.0, -9.0), metavar="DY,DX",
                       help="offset of the composition field of view (default 14,-9)")
    synth.add_argument("--composition-pixel-size-nm", type=float, default=None,
                       help="put the composition map on its own grid with this pitch")
    synth.add_argument("--strain-reference", default="unknown", choices=("unknown", "LiMPO4", "MPO4"))
    synth.add_argument("--dislocations", type=int, default=3, help="edge dislocations on phase boundaries")
    synth.add_argument("--burgers-nm", type=float, default=1.0, help="Burgers vector length (nm)")
    synth.add_argument("--no-coverage", dest="coverage", action="store_false",
                       help="do not write the pixel coverage map (the mask's staircase is then the outline)")
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
    cal.add_argument("--n-knots", type=int, default=11, help="knots of the law on [0, 1] (default 11)")
    cal.add_argument("--monotone", action="store_true", help="monotone law per axis")
    cal.add_argument("--errors-in-variables", default="nlm", choices=("nlm", "tv", "posterior", "none"),
                     help="treatment of composition noise (default nlm: non-local-means denoising)")
    cal.add_argument("--bootstrap", type=int, default=64, help="block-bootstrap replicates (default 64)")
    cal.add_argument("--joint", type=int, default=2,
                     help="rounds of joint composition/law estimation (default 2; 0: denoised X only)")
    cal.add_argument("--strain-psf-nm", type=float, default=None, metavar="SIGMA",
                     help="Gaussian σ (nm) of the strain probe, modelled in the fit (default: none)")
    cal.add_argument("--composition-psf-nm", type=float, default=None, metavar="SIGMA",
                     help="Gaussian σ (nm) of the composition probe, modelled in the fit (default: none)")
    cal.add_argument("--device", default="auto",
                     help="where the platelet solves run: auto (a CUDA GPU if present), cpu, cuda, cuda:N")
    cal.add_argument("--solver", default="auto", choices=("auto", "lu", "pcg"),
                     help="platelet solver: sparse LU (CPU) or matrix-free PCG (any device); auto picks")
    cal.add_argument("--ignore-coverage", dest="use_coverage", action="store_false",
                     help="model the outline as the mask's pixel staircase even when the set has coverage")
    cal.set_defaults(handler=cmd_calibrate)


def _fail(command: str, exc: InputError) -> int:
    print(f"chemoscreen {command}: error: {exc}", file=sys.stderr)
    return 2


def cmd_synth(args) -> int:
    from inverse.images import save_images
    from inverse.synth import synthesize

    try:
        images = synthesize(
            size_px=args.size, pixel_size_nm=args.pixel_size_nm, oversample=args.oversample, shape=args.shape,
            law=args.law, crystal_angle_deg=args.angle, seed=args.seed,
            composition_sigma=args.composition_sigma, strain_sigma=args.strain_sigma,
            composition_psf_nm=args.composition_psf_nm, strain_psf_nm=args.strain_psf_nm,
            registration_offset_nm=args.registration_offset_nm, strain_reference=args.strain_reference,
            n_dislocations=args.dislocations, burgers_nm=args.burgers_nm,
            composition_pixel_size_nm=args.composition_pixel_size_nm, coverage=args.coverage,
        )
        path = save_images(images, args.out)
    except InputError as exc:
        return _fail("synth", exc)
    print(f"wrote {path} ({images.shape[0]}x{images.shape[1]} px, {int(images.mask.sum())} particle pixels, "
          f"law {args.law}, truth under truth_*)")
    return 0


def cmd_calibrate(args) -> int:
    from tqdm.auto import tqdm

    from inverse.calibrate import calibrate
    from inverse.images import load_images
    from inverse.tracking import log_calibration

    start = time.perf_counter()
    try:
        sets = [load_images(p) for p in tqdm(args.images, desc="load images", unit="file")]
        cal = calibrate(sets, n_knots=args.n_knots, monotone=args.monotone,
                        errors_in_variables=args.errors_in_variables,
                        n_bootstrap=args.bootstrap, n_joint=args.joint, progress=True,
                        device=args.device, solver=args.solver, strain_psf_nm=args.strain_psf_nm,
                        composition_psf_nm=args.composition_psf_nm, use_coverage=args.use_coverage)
        cal = log_calibration(cal, out_dir=args.out, tracking_uri=args.tracking_uri,
                              register=args.register, promote=args.promote, experiment=args.experiment,
                              track=args.track)
    except InputError as exc:
        return _fail("calibrate", exc)
    v = cal.vegard
    print(f"ε⁰ Vegard slopes: a {v['slope_a'] * 100:.3f} ± {v['slope_a_std'] * 100:.3f} %, "
          f"c {v['slope_c'] * 100:.3f} ± {v['slope_c_std'] * 100:.3f} %; max deviation from Vegard "
          f"{v['max_deviation'] * 100:.3f} %")
    print(f"fit: rmse {cal.fit['rmse_strain']:.3g}, chi2_reduced {cal.fit['chi2_reduced']:.3g}, "
          f"{cal.fit['n_pixels']} pixels, λ {cal.fit['lambda']:.3g} (GCV), "
          f"{cal.fit['n_hotspots']} hot spots; solves: {cal.fit['solver']} on {cal.fit['device']}; "
          f"outline: {cal.fit['rim']}")
    for i, r in enumerate(cal.registration):
        print(f"particle {i}: composition registered by shift (dy, dx) = "
              f"({r['shift_px'][0]:.2f}, {r['shift_px'][1]:.2f}) px")
    for w in cal.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if cal.mlflow.get("model_uri"):
        print(f"registered {cal.mlflow['model_uri']}" + (f" (alias {store.ALIAS})" if args.promote else ""))
    print(f"wrote {args.out}/calibration.json, residual.npz, PNGs in {time.perf_counter() - start:.1f} s")
    return 0
