"""The ``chemoscreen`` command line (ARCHITECTURE.md §4.1).

Exit codes: 0 success, 2 bad input or usage (the message names the field), 1 any other failure.
Bad inputs (metals, step, tracking URI, Ray address, model) are checked before any simulation starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import traceback
import typing
from collections.abc import Sequence

from mechanics.errors import InputError
from screening import tracking

SUMMARY_COLUMNS = ("rank", "formula", "score", "pareto_rank", "specific_energy_Wh_kg",
                   "peak_tensile_stress_MPa", "volume_change_pct", "particle_peak_tensile_stress_MPa",
                   "status")


# ---------------------------------------------------------------------------------------------------
# parser


def _metals(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _add_space_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metals", type=_metals, default=("Fe", "Mn", "Co", "Ni"),
                        help="redox-active M-site metals, comma separated (default: Fe,Mn,Co,Ni)")
    parser.add_argument("--step", type=float, default=0.25,
                        help="simplex grid step of the metal fractions; must divide 1 (default: 0.25)")
    parser.add_argument("--source", choices=("literature", "chgnet"), default="literature",
                        help="where end-member properties come from (default: literature)")


def _add_tracking_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", default=tracking.SCREENING_EXPERIMENT,
                        help=f"MLflow experiment (default: {tracking.SCREENING_EXPERIMENT})")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db "
                             "with artifacts in ./mlartifacts)")


def _settings_fields() -> list[tuple[str, type, object]]:
    """(name, type, default) of the simple fields of ``mechanics.screen.ScreeningSettings``."""
    try:
        from mechanics.screen import ScreeningSettings
    except ModuleNotFoundError as exc:
        if exc.name != "mechanics.screen":
            raise
        return []

    hints = typing.get_type_hints(ScreeningSettings)
    fields = []
    for f in dataclasses.fields(ScreeningSettings):
        kind = hints.get(f.name)
        if kind in (int, float, str, bool):
            fields.append((f.name, kind, f.default))
    return fields


def _add_settings_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("simulation settings (mechanics.screen.ScreeningSettings)")
    for name, kind, default in _settings_fields():
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            group.add_argument(flag, dest=f"settings_{name}", action=argparse.BooleanOptionalAction,
                               default=None, help=f"default: {default}")
        else:
            group.add_argument(flag, dest=f"settings_{name}", type=kind, default=None, metavar=name.upper(),
                               help=f"default: {default}")


def settings_from_args(args: argparse.Namespace, **base):
    """ScreeningSettings from the defaults, then ``base`` overrides, then the options given."""
    from mechanics.screen import ScreeningSettings

    values = dict(base)
    for key, value in vars(args).items():
        if key.startswith("settings_") and value is not None:
            values[key[len("settings_"):]] = value
    try:
        return ScreeningSettings(**values)
    except InputError:
        raise
    except (TypeError, ValueError) as exc:
        raise InputError("settings", f"valid simulation settings ({exc})", values) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chemoscreen",
        description="Learn the chemo-mechanics of olivine cathodes from correlative images and screen "
                    "alternative electrodes with phase-field simulations on Ray, tracked in MLflow.",
        epilog="Exit codes: 0 success, 2 bad input, 1 other failure.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="the whole pipeline on embedded defaults "
                                       "(synth, calibrate, sweep, rank)")
    demo.add_argument("--out", default="demo-output", help="directory for the store, artifacts and outputs "
                                                           "(default: demo-output)")
    demo.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    demo.set_defaults(handler=cmd_demo)

    cands = sub.add_parser("candidates", help="list olivine candidates and their derived parameters")
    _add_space_options(cands)
    cands.add_argument("--out", default=None, help="write the table to FILE (.csv or .parquet)")
    cands.set_defaults(handler=cmd_candidates)

    sweep = sub.add_parser("sweep", help="simulate candidates on Ray and log one MLflow run each (resumable)")
    _add_space_options(sweep)
    law = sweep.add_mutually_exclusive_group()
    law.add_argument("--model", default=None,
                     help=f"eigenstrain law from the MLflow registry (default: {tracking.DEFAULT_MODEL_URI})")
    law.add_argument("--law", choices=("vegard",), default=None, help="use Vegard's law instead of a model")
    sweep.add_argument("--address", default=None,
                       help="Ray address: local, auto, HOST:PORT or ray://HOST:PORT (default: $RAY_ADDRESS, "
                            "else a local Ray)")
    _add_tracking_options(sweep)
    sweep.add_argument("--refine", type=int, default=0, metavar="K",
                       help="rerun the top K on the free-surface particle (default: 0)")
    sweep.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    sweep.add_argument("--gpus-per-actor", type=float, default=1.0,
                       help="GPU share of one actor when GPUs exist (fractions allowed; default: 1)")
    sweep.add_argument("--actors", type=int, default=None,
                       help="number of actors (default: fill the cluster)")
    sweep.add_argument("--batch-size", type=int, default=None,
                       help="candidates per actor call (default: one call per actor, at most 256 on a GPU, "
                            "64 on a CPU)")
    sweep.add_argument("--no-artifacts", dest="artifacts", action="store_false",
                       help="skip the snapshot and voltage PNGs")
    _add_settings_options(sweep)
    sweep.set_defaults(handler=cmd_sweep)

    rank = sub.add_parser("rank", help="ranking table and Pareto front of the latest sweep, from MLflow")
    _add_tracking_options(rank)
    rank.add_argument("--sweep-id", default=None,
                      help="rank this sweep (default: the latest in the experiment)")
    rank.add_argument("--out", default="ranking.csv",
                      help="ranking table (.csv or .parquet); the Pareto plot goes beside it as "
                           "<name>_pareto.png (default: ranking.csv)")
    rank.add_argument("--weights", default="1,1,1",
                      help="score weights of specific energy, peak tensile stress, |volume change| "
                           "(default: 1,1,1)")
    rank.add_argument("--top", type=int, default=20, help="rows to print (default: 20)")
    rank.set_defaults(handler=cmd_rank)

    try:
        from inverse.commands import register
    except ModuleNotFoundError as exc:  # an install without the inverse package still screens
        if exc.name not in ("inverse", "inverse.commands"):
            raise
    else:
        register(sub)
    return parser


# ---------------------------------------------------------------------------------------------------
# commands


def _space(args):
    import candidates

    return candidates.olivine_space(metals=args.metals, step=args.step)


def _describe_space(args) -> str:
    return f"olivine metals={','.join(args.metals)} step={args.step:g} source={args.source}"


def _print_table(table, top: int | None = None) -> None:
    import pandas as pd

    columns = [c for c in SUMMARY_COLUMNS if c in table.columns]
    shown = table[columns] if top is None else table[columns].head(top)
    with pd.option_context("display.width", 160, "display.max_columns", 20,
                           "display.float_format", "{:.4g}".format):
        print(shown.to_string(index=False))


def ui_hint(tracking_uri: str) -> str:
    """The command that opens the MLflow UI on loopback for this store."""
    path = tracking.sqlite_path(tracking_uri)
    if path is not None:
        return (f"mlflow ui --backend-store-uri sqlite:///{path.resolve()} --host 127.0.0.1 --port 5000"
                "   # then open http://127.0.0.1:5000")
    return f"open {tracking_uri} in a browser"


def cmd_candidates(args) -> int:
    import candidates

    space = _space(args)
    table = candidates.candidate_table(space, source=args.source, progress=True)
    if args.out:
        path = candidates.write_table(table, args.out)
        print(f"wrote {len(table)} candidates to {path}")
    columns = [c for c in ("candidate_id", "formula", "misfit_a_pct", "misfit_b_pct", "misfit_c_pct",
                           "volume_change_pct", "coherency_B_min_GPa", "voltage_V", "capacity_mAh_g",
                           "specific_energy_Wh_kg") if c in table.columns]
    print(table[columns].to_string(index=False, float_format="{:.4g}".format))
    return 0


def run_sweep_command(args, *, space, settings, model: str | None, out=sys.stdout):
    """Shared by ``sweep`` and ``demo``: validate, probe, resolve the law, sweep, print the ranking."""
    from screening.api import prepare_items, resolve_law
    from screening.cluster import probe_address, resolve_address
    from screening.sweep import SweepOptions, absolute_tracking_uri, execute_sweep

    uri = absolute_tracking_uri(tracking.resolve_tracking_uri(args.tracking_uri))
    tracking.probe_tracking_uri(uri)
    address = resolve_address(getattr(args, "address", None))
    probe_address(address)
    if getattr(args, "refine", 0) < 0:
        raise InputError("--refine", "a non-negative number of candidates", args.refine)
    for flag in ("num_cpus", "actors", "batch_size"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise InputError("--" + flag.replace("_", "-"), "a positive integer", value)
    if getattr(args, "gpus_per_actor", 1.0) <= 0:
        raise InputError("--gpus-per-actor", "a positive GPU share such as 1 or 0.5", args.gpus_per_actor)
    client = tracking.open_store(uri)
    law, model_uri = resolve_law(model, uri, client)
    items = prepare_items(space, args.source, progress=True)
    options = SweepOptions(
        experiment=args.experiment, tracking_uri=uri, address=address, num_cpus=args.num_cpus,
        gpus_per_actor=getattr(args, "gpus_per_actor", 1.0), actors=getattr(args, "actors", None),
        batch_size=getattr(args, "batch_size", None), refine=getattr(args, "refine", 0),
        artifacts=getattr(args, "artifacts", True), space=_describe_space(args))
    outcome = execute_sweep(items, settings, law=law, model_uri=model_uri, options=options, client=client)
    print(f"sweep {outcome.sweep_id}: {outcome.simulated} simulated, {outcome.skipped} already finished, "
          f"{outcome.failed} failed; model {model_uri}; parent run {outcome.parent_run_id}", file=out)
    print("timings: " + ", ".join(f"{k} {v:.1f}" for k, v in outcome.timings.items()), file=out)
    _print_table(outcome.table, top=20)
    print(f"MLflow UI: {ui_hint(uri)}", file=out)
    return outcome


def cmd_sweep(args) -> int:
    space = _space(args)
    settings = settings_from_args(args)
    model = "vegard" if args.law == "vegard" else (args.model or tracking.DEFAULT_MODEL_URI)
    outcome = run_sweep_command(args, space=space, settings=settings, model=model)
    finished = (outcome.table["status"] == "FINISHED").sum() if not outcome.table.empty else 0
    return 0 if finished > 0 else 1


def cmd_rank(args) -> int:
    import candidates
    from screening.results import log_ranking, rank_sweep
    from screening.sweep import absolute_tracking_uri

    try:
        weights = tuple(float(w) for w in args.weights.split(","))
    except ValueError:
        raise InputError("--weights", "three comma-separated numbers", args.weights) from None
    uri = absolute_tracking_uri(tracking.resolve_tracking_uri(args.tracking_uri))
    tracking.probe_tracking_uri(uri)
    client = tracking.open_store(uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        expected = "an experiment with sweeps (run `chemoscreen sweep` first)"
        raise InputError("--experiment", expected, args.experiment)
    parent = tracking.find_sweep(client, experiment.experiment_id, args.sweep_id)
    table = rank_sweep(client, uri, experiment.experiment_id, parent, log_children=False, weights=weights)
    path = candidates.write_table(table, args.out)
    written = [path]
    if table["pareto_rank"].notna().any():
        from screening.plots import pareto_png

        written.append(path.with_name(path.stem + "_pareto.png"))
        pareto_png(table, written[-1])
    log_ranking(client, parent, table)
    _print_table(table, top=args.top)
    print(f"wrote {', '.join(map(str, written))}; logged on parent run {parent} (artifacts ranking/)")
    return 0


def cmd_demo(args) -> int:
    from screening.demo import run_demo

    return run_demo(args.out, num_cpus=args.num_cpus)


# ---------------------------------------------------------------------------------------------------
# entry point


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")
    # one line per candidate run is noise; the sweep prints where to look once
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except InputError as exc:
        print(f"chemoscreen {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"chemoscreen {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        traceback.print_exc()
        print(f"chemoscreen {args.command}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
