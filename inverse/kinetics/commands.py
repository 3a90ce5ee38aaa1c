"""``chemoscreen synth-series`` and ``chemoscreen learn-kinetics``; :func:`register` adds them to the
``chemoscreen`` parser (called from :mod:`inverse.commands`). Flags are derived from
:class:`~inverse.kinetics.SeriesSynthSettings` and :class:`~inverse.kinetics.KineticsSettings`. Handlers
return the exit code: 0 success, 2 bad input (the message names the field), 1 other failure."""

from __future__ import annotations

import argparse
import sys
import time

from chemoscreen.options import add_options, option_dest, settings_from_args
from inverse.kinetics.fit import KineticsSettings
from inverse.kinetics.synth import SeriesSynthSettings
from mechanics.errors import InputError

SYNTH_PYTHON_ONLY = ("k_map", "dtype")


def register(subparsers) -> None:
    """Add ``synth-series`` and ``learn-kinetics`` to an argparse subparsers object."""
    from inverse.kinetics.tracking import KINETICS_EXPERIMENT, KINETICS_MODEL_NAME

    synth = subparsers.add_parser(
        "synth-series",
        help="write a synthetic operando image series with known kinetics (truth under truth_*)",
    )
    synth.add_argument("--out", required=True, help="series file (.npz or .h5)")
    synth.add_argument(
        "--k-map",
        default="pattern",
        metavar="pattern|FILE",
        help="the rate prefactor k(r): 'pattern' (a coating-like field) or a .npy (h, w) array "
        "of k(r)/mean (default: pattern)",
    )
    add_options(
        synth.add_argument_group("series (inverse.kinetics.SeriesSynthSettings)"),
        SeriesSynthSettings,
        exclude=SYNTH_PYTHON_ONLY,
    )
    synth.set_defaults(handler=cmd_synth_series)

    learn = subparsers.add_parser(
        "learn-kinetics", help="learn μ_h(X), k₀(X), k(r) and the rate law from image series"
    )
    learn.add_argument("series", nargs="+", metavar="SERIES", help="image series files; one μ_h/k₀ is shared")
    learn.add_argument("--out", required=True, help="output directory (written atomically)")
    learn.add_argument(
        "--register",
        default=KINETICS_MODEL_NAME,
        metavar="NAME",
        help=f"registered model name (default {KINETICS_MODEL_NAME})",
    )
    learn.add_argument(
        "--no-promote",
        dest="promote",
        action="store_false",
        help="do not point alias champion at the new version",
    )
    learn.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    learn.add_argument("--experiment", default=KINETICS_EXPERIMENT, help="MLflow experiment")
    learn.add_argument(
        "--no-track",
        dest="track",
        action="store_false",
        help="write the outputs only; no MLflow run or model version",
    )
    add_options(learn.add_argument_group("fit (inverse.kinetics.KineticsSettings)"), KineticsSettings)
    # latent states were opt-in before they became the default: the old flag still parses
    learn.add_argument("--latent-states", dest=option_dest(KineticsSettings, "latent_states"),
                       action="store_const", const=True, help=argparse.SUPPRESS)
    learn.set_defaults(handler=cmd_learn_kinetics)


def _fail(command: str, exc: InputError) -> int:
    print(f"chemoscreen {command}: error: {exc}", file=sys.stderr)
    return 2


def _k_map(text: str):
    import numpy as np

    if text == "pattern":
        return None
    from pathlib import Path

    path = Path(text)
    if path.suffix.lower() != ".npy" or not path.is_file():
        raise InputError("--k-map", "'pattern' or an existing .npy file", text)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError("--k-map", "a readable numeric .npy (h, w) array", f"{text}: {exc}") from None


def cmd_synth_series(args) -> int:
    from pathlib import Path

    from inverse.kinetics.series import save_series
    from inverse.kinetics.synth import synthesize_series

    try:
        out = Path(args.out)
        if out.suffix.lower() not in (".npz", ".h5", ".hdf5"):
            raise InputError("--out", "a path ending in .npz, .h5 or .hdf5", args.out)
        settings = settings_from_args(SeriesSynthSettings, args, k_map=_k_map(args.k_map))
        series = synthesize_series(settings)
        save_series(series, out)
    except InputError as exc:
        return _fail("synth-series", exc)
    print(
        f"wrote {out} ({series.n_frames} frames of {series.shape[0]}x{series.shape[1]} px, "
        f"{int(series.mask.sum())} particle pixels, rate law {settings.rate_law}, c-rates "
        f"{','.join(f'{c:g}' for c in settings.c_rates)}, truth under truth_*)"
    )
    return 0


def cmd_learn_kinetics(args) -> int:
    from inverse.kinetics.fit import learn_kinetics
    from inverse.kinetics.series import load_series
    from inverse.kinetics.tracking import log_kinetics
    from inverse.tracking import prepare_outputs

    start = time.perf_counter()
    try:
        settings = settings_from_args(KineticsSettings, args)
        sets = [load_series(p) for p in args.series]
        with prepare_outputs(
            args.out,
            tracking_uri=args.tracking_uri,
            register=args.register,
            promote=args.promote,
            experiment=args.experiment,
            track=args.track,
        ) as outputs:
            fit = learn_kinetics(sets, settings, progress=print)
            fit = log_kinetics(fit, outputs)
    except InputError as exc:
        return _fail("learn-kinetics", exc)
    for s in fit.scores:
        print(
            f"{s.rate_law}: held-out log-likelihood {s.heldout_loglik:.1f}, held-out rms {s.heldout_rms:.4f} "
            f"(λ {s.smoothness_lambda:g})"
        )
    print(
        f"rate law: {fit.rate_law}; held-out rms {fit.fit['heldout_rms']:.4f} = "
        f"{fit.fit['heldout_rms_over_sigma']:.2f} σ_X"
    )
    if fit.mlflow.get("model_uri"):
        print(f"registered {fit.mlflow['model_uri']}" + (" (alias champion)" if args.promote else ""))
    print(f"wrote {args.out}/kinetics.json, k_map.npz, PNGs in {time.perf_counter() - start:.1f} s")
    return 0
