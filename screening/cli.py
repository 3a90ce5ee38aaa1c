"""The ``chemoscreen`` command line (ARCHITECTURE.md §4.1).

Exit codes: 0 success, 2 bad input or usage (the message names the field), 1 any other failure.
Bad inputs (metals, step, tracking URI, Ray address, model) are checked before any simulation starts.

The commands are thin: ``sweep`` builds :class:`mechanics.screen.ScreeningSettings` and
:class:`screening.SweepOptions` from the flags and calls :func:`screening.api.sweep`, the same function
``chemoscreen demo`` and ``screening.run_sweep`` call; what they print comes from :mod:`screening.present`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import traceback
import typing
from collections.abc import Sequence

from chemoscreen import store
from mechanics.errors import InputError
from screening.present import print_table, ui_hint

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
    parser.add_argument("--experiment", default=store.SCREENING_EXPERIMENT,
                        help=f"MLflow experiment (default: {store.SCREENING_EXPERIMENT})")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db "
                             "with artifacts in ./mlartifacts)")


# Seam: chemoscreen/options.py (decision 1 of the coordination plan, being written) derives argparse
# flags from a frozen settings dataclass and builds it back. When it lands, the three functions below
# (_settings_fields, _add_settings_options, settings_from_args) become one call of it for
# ScreeningSettings, with the same flags (--grid-points, ...) and dests.


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


def settings_from_args(args: argparse.Namespace):
    """ScreeningSettings from its defaults and the ``--<field>`` options given.

    Args:
        args: parsed arguments of a parser with :func:`_add_settings_options`.

    Returns:
        The :class:`mechanics.screen.ScreeningSettings`.

    Raises:
        InputError: a value the settings refuse.
    """
    from mechanics.screen import ScreeningSettings

    values = {}
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
                     help=f"eigenstrain law from the MLflow registry (default: {store.DEFAULT_MODEL_URI})")
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
    sweep.add_argument("--envelope", action="store_true",
                       help="also log each candidate's charging envelope at --particle-size-nm "
                            "(docs/envelope.md)")
    _add_settings_options(sweep)
    sweep.set_defaults(handler=cmd_sweep)

    _add_envelope_parser(sub)

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


def cmd_candidates(args) -> int:
    import candidates

    space = _space(args)
    table = candidates.candidate_table(space, source=args.source, progress=True)
    if args.out:
        path = candidates.write_table(table, args.out)
        print(f"wrote {len(table)} candidates to {path}")
    columns = [c for c in ("composition_id", "formula", "misfit_a_pct", "misfit_b_pct", "misfit_c_pct",
                           "volume_change_pct", "coherency_B_min_GPa", "voltage_V", "capacity_mAh_g",
                           "specific_energy_Wh_kg") if c in table.columns]
    print(table[columns].to_string(index=False, float_format="{:.4g}".format))
    return 0


def cmd_sweep(args) -> int:
    from screening.api import VEGARD, sweep
    from screening.driver import SweepOptions

    space = _space(args)
    settings = settings_from_args(args)
    law = VEGARD if args.law == VEGARD else (args.model or store.DEFAULT_MODEL_URI)
    options = SweepOptions(
        experiment=args.experiment, tracking_uri=args.tracking_uri, address=args.address,
        num_cpus=args.num_cpus, gpus_per_actor=args.gpus_per_actor, actors=args.actors,
        batch_size=args.batch_size, refine=args.refine, artifacts=args.artifacts, progress=True,
        space=_describe_space(args))
    outcome = sweep(space, law, settings, source=args.source, options=options)
    print(f"sweep {outcome.sweep_id}: {outcome.simulated} simulated, {outcome.skipped} already finished, "
          f"{outcome.failed} failed; model {outcome.model_uri}; parent run {outcome.parent_run_id}")
    print("timings: " + ", ".join(f"{k} {v:.1f}" for k, v in outcome.timings.items()))
    print_table(outcome.table, top=20)
    print(f"MLflow UI: {ui_hint(outcome.tracking_uri)}")
    if args.envelope:
        from screening.envelope import log_sweep_envelope

        where = log_sweep_envelope(outcome, space, law, settings, source=args.source)
        print(f"envelope metrics logged on the candidate runs; files in {where}")
    finished = (outcome.table["status"] == "FINISHED").sum() if not outcome.table.empty else 0
    return 0 if finished > 0 else 1


def cmd_rank(args) -> int:
    import candidates
    from screening import tracking
    from screening.results import log_ranking, rank_sweep

    try:
        weights = tuple(float(w) for w in args.weights.split(","))
    except ValueError:
        raise InputError("--weights", "three comma-separated numbers", args.weights) from None
    uri = store.absolute_tracking_uri(store.resolve_tracking_uri(args.tracking_uri))
    store.probe_tracking_uri(uri)
    client = store.open_store(uri)
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
    print_table(table, top=args.top)
    print(f"wrote {', '.join(map(str, written))}; logged on parent run {parent} (artifacts ranking/)")
    return 0


def cmd_demo(args) -> int:
    from screening.demo import run_demo

    return run_demo(args.out, num_cpus=args.num_cpus)


# ---------------------------------------------------------------------------------------------------
# envelope (issue 15): safe charging window, critical size and protocols per candidate (docs/envelope.md)


def _numbers(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated numbers, got {text!r}") from None


def _add_envelope_parser(sub) -> None:
    env = sub.add_parser("envelope", help="fracture-limited safe C-rate window, critical size and charging "
                                          "protocols per candidate (free platelet)")
    _add_space_options(env)
    law = env.add_mutually_exclusive_group()
    law.add_argument("--model", default=None,
                     help=f"eigenstrain law from the MLflow registry (default: {store.DEFAULT_MODEL_URI})")
    law.add_argument("--law", choices=("vegard",), default=None, help="use Vegard's law instead of a model")
    env.add_argument("--tracking-uri", default=None, help="MLflow store holding --model")
    env.add_argument("--sizes", type=_numbers, default=None,
                     help="platelet edges in nm (default: 50,100,200)")
    env.add_argument("--c-rates", type=_numbers, default=None,
                     help="scanned C-rates (default: 0.05,0.2,1,5,20,50,200)")
    env.add_argument("--target-min", type=float, default=None,
                     help="charge time T of protocol (b) (default: 60)")
    env.add_argument("--safety-factor", type=float, default=None, help="s in σ ≤ σ_c/s (default: 1.5)")
    env.add_argument("--max-overpotential-mV", dest="max_overpotential_mV", type=float, default=None,
                     help="largest |η| over a run (default: 200, an LFP cell's ~3.65 V charge cut-off)")
    env.add_argument("--seeds", type=int, default=None, help="noise seeds per condition (default: 4)")
    env.add_argument("--out", default="envelope-output", help="output directory (default: envelope-output)")
    _add_settings_options(env)
    env.set_defaults(handler=cmd_envelope)


def cmd_envelope(args) -> int:
    from screening.api import VEGARD
    from screening.envelope import EnvelopeSettings, charging_envelope, default_simulation_settings

    for flag, dest in (("--c-rate", "settings_c_rate"), ("--particle-size-nm", "settings_particle_size_nm"),
                       ("--direction", "settings_direction")):
        if getattr(args, dest, None) is not None:
            raise InputError(flag, "not used by envelope: it scans --c-rates, --sizes and both directions",
                             getattr(args, dest))
    given = {k[len("settings_"):]: v for k, v in vars(args).items()
             if k.startswith("settings_") and v is not None}
    settings = dataclasses.replace(default_simulation_settings(), **given)
    values = {"c_rates": args.c_rates, "sizes_nm": args.sizes, "target_min": args.target_min,
              "safety_factor": args.safety_factor, "max_overpotential_mV": args.max_overpotential_mV,
              "seeds": args.seeds}
    envelope = EnvelopeSettings(**{k: v for k, v in values.items() if v is not None})
    law = VEGARD if args.law == VEGARD else (args.model or store.DEFAULT_MODEL_URI)
    result = charging_envelope(_space(args), law, settings=settings, envelope=envelope, out=args.out,
                               source=args.source, tracking_uri=args.tracking_uri, progress=True)
    columns = ["formula", "size_nm", "direction", "min_safe_C_rate", "max_safe_C_rate",
               "critical_size_nm_at_1C", "fastest_time_min", "protocol_peak_stress_MPa",
               "constant_peak_stress_MPa"]
    print(result.summary[columns].to_string(index=False, float_format="{:.4g}".format))
    print(f"{result.simulated} simulations run; wrote {len(result.files)} files to {args.out} "
          "(K_Ic estimated: see k_ic_source)")
    return 0


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
