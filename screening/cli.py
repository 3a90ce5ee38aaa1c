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
import datetime
import math
import os
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path

from chemoscreen import options, store
from mechanics.errors import InputError
from screening.present import (
    DEFAULT_UI_URL,
    check_ui_url,
    print_table,
    ranking_url,
    share_ranking_view,
    sweep_view_key,
    ui_hint,
)

# the largest candidate space built without --max-candidates: step 0.02 over four metals (23,426) fits;
# step 0.001 over four metals (167,668,501) would exhaust memory while the candidates are built
MAX_CANDIDATES = 25_000

# ---------------------------------------------------------------------------------------------------
# parser


def _metals(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _add_space_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metals", type=_metals, default=("Fe", "Mn", "Co", "Ni"),
                        help="redox-active M-site metals, comma separated (default: Fe,Mn,Co,Ni)")
    parser.add_argument("--step", type=float, default=0.25,
                        help="simplex grid step of the metal fractions; must divide 1 (default: 0.25)")
    parser.add_argument("--dopant", action="append", default=[], metavar="EL=LEVEL,...",
                        help="an inactive M-site dopant and its levels, e.g. Mg=0,0.05,0.1; every grid "
                             "point is combined with every level (repeatable)")
    parser.add_argument("--compositions", default=None, metavar="FILE",
                        help="a CSV of M-site fractions, one composition per row and one column per metal "
                             "(e.g. Fe,Mn,Mg), instead of the --metals/--step grid: any off-grid points")
    parser.add_argument("--source", choices=("literature", "chgnet"), default="literature",
                        help="where end-member properties come from (default: literature)")
    parser.add_argument("--max-candidates", type=int, default=MAX_CANDIDATES, metavar="N",
                        help=f"refuse a space larger than N candidates, counted before any is built "
                             f"(default: {MAX_CANDIDATES})")


def _add_tracking_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", default=store.SCREENING_EXPERIMENT,
                        help=f"MLflow experiment (default: {store.SCREENING_EXPERIMENT})")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db "
                             "with artifacts in ./mlartifacts)")


def _add_objective_options(parser: argparse.ArgumentParser) -> None:
    """What the candidates are ranked by (:class:`screening.objectives.ObjectiveSpec`), for sweep and rank."""
    from screening.objectives import DEFAULT_MAX_VOLTAGE_V, DEFAULT_OBJECTIVES

    group = parser.add_argument_group("ranking (objectives, voltage window, constraints)")
    default = ",".join(f"{name}:{weight:g}" for name, weight in DEFAULT_OBJECTIVES)
    group.add_argument("--objectives", default=None, metavar="NAME:WEIGHT,...",
                       help=f"objectives and score weights (default: {default}); see docs/screening.md")
    group.add_argument("--max-voltage", type=float, default=None, metavar="V",
                       help="electrolyte stability limit applied to each redox plateau, V vs Li/Li+ "
                            f"(default: {DEFAULT_MAX_VOLTAGE_V:g})")
    group.add_argument("--constraint", action="append", default=[], metavar="METRIC<VALUE",
                       help="feasibility constraint on a metric (<, <=, >, >=); repeatable")
    group.add_argument("--top-k", type=int, default=None, metavar="K",
                       help="with --samples: p_top_k is the fraction of draws with the candidate among the "
                            "K best by score (default: 5)")


def _objective_spec(args):
    from screening.objectives import ObjectiveSpec

    return ObjectiveSpec.from_text(objectives=args.objectives, max_voltage_V=args.max_voltage,
                                   constraints=args.constraint, weights=getattr(args, "weights", None),
                                   top_k=args.top_k)


def _add_settings_options(parser: argparse.ArgumentParser) -> None:
    """One option per field of :class:`mechanics.screen.ScreeningSettings` (``--grid-points``, ...)."""
    from mechanics.screen import ScreeningSettings

    group = parser.add_argument_group("simulation settings (screening.ScreeningSettings)")
    options.add_options(group, ScreeningSettings)


def _add_strategy_options(parser: argparse.ArgumentParser) -> None:
    """``--strategy``, ``--budget``, ``--proposal-batch``, ``--proposal-seed`` from
    :class:`screening.strategies.StrategySettings`; any of them makes the sweep an active-learning one."""
    from screening.strategies import StrategySettings

    group = parser.add_argument_group(
        "active learning (screening.StrategySettings): simulate --budget candidates of the space, chosen "
        "--proposal-batch at a time; without these options every candidate is simulated")
    options.add_options(group, StrategySettings)


def strategy_from_args(args: argparse.Namespace):
    """The :class:`screening.strategies.StrategySettings` of the options given, or None when none was.

    Raises:
        InputError: a value the settings refuse, named with its option (``--budget (budget)``).
    """
    from screening.strategies import StrategySettings

    given = [f.name for f in dataclasses.fields(StrategySettings)
             if getattr(args, options.option_dest(StrategySettings, f.name), None) is not None]
    return options.settings_from_args(StrategySettings, args) if given else None


def settings_from_args(args: argparse.Namespace):
    """ScreeningSettings from its defaults and the ``--<field>`` options given.

    Args:
        args: parsed arguments of a parser with :func:`_add_settings_options`.

    Returns:
        The :class:`mechanics.screen.ScreeningSettings`.

    Raises:
        InputError: a value the settings refuse, named with its option (``--grid-points (grid_points)``).
    """
    from mechanics.screen import ScreeningSettings

    return options.settings_from_args(ScreeningSettings, args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chemoscreen",
        description="Learn the chemo-mechanics of olivine cathodes from correlative images and screen "
                    "alternative electrodes with phase-field simulations on Ray, tracked in MLflow.",
        epilog="Exit codes: 0 success, 2 bad input, 1 other failure. A failure prints one line and keeps "
               "its traceback in a log file; --debug (anywhere on the command line) or CHEMOSCREEN_DEBUG=1 "
               "prints it instead.")
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
    sweep.add_argument("--kinetics-model", default=None, metavar="URI",
                       help="learned kinetics (chemoscreen learn-kinetics) for LFP-like candidates, Fe on "
                            "≥ 75 %% of the metal sites (e.g. models:/lfp-kinetics@champion; default: "
                            "literature)")
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
    sweep.add_argument("--samples", type=int, default=1, metavar="N",
                       help="joint draws of the law's posterior and the candidate parameters per candidate; "
                            "metrics become means with _std, _p05, _p95 (default: 1, no draws)")
    sweep.add_argument("--no-artifacts", dest="artifacts", action="store_false",
                       help="skip the snapshot and voltage PNGs")
    sweep.add_argument("--allow-pickle-model", action="store_true",
                       help="also load a law version an older chemoscreen stored with pickle (unpickling "
                            "runs code from the store: only when every writer of the store is trusted)")
    sweep.add_argument("--envelope", action="store_true",
                       help="also log each candidate's charging envelope at --particle-size-nm "
                            "(docs/envelope.md)")
    _add_settings_options(sweep)
    _add_objective_options(sweep)
    _add_strategy_options(sweep)
    sweep.set_defaults(handler=cmd_sweep)

    _add_envelope_parser(sub)

    rank = sub.add_parser("rank", help="ranking table and Pareto front of the latest sweep, from MLflow")
    _add_tracking_options(rank)
    rank.add_argument("--sweep-id", default=None,
                      help="rank this sweep (default: the latest in the experiment)")
    rank.add_argument("--out", default="ranking.csv",
                      help="ranking table (.csv or .parquet); the Pareto plot goes beside it as "
                           "<name>_pareto.png (default: ranking.csv)")
    rank.add_argument("--weights", default=None,
                      help="alias of --objectives usable_specific_energy_Wh_kg:E,peak_tensile_stress_MPa:S,"
                           "abs_volume_change_pct:V given as E,S,V")
    _add_objective_options(rank)
    rank.add_argument("--top", type=int, default=20, help="rows to print (default: 20)")
    rank.add_argument("--ui-url", default=DEFAULT_UI_URL,
                      help="the MLflow UI whose link to this ranking is printed (default: %(default)s)")
    rank.set_defaults(handler=cmd_rank)

    # report: one self-contained HTML page of a sweep (screening.report); flags from ReportSettings
    from chemoscreen.options import add_options
    from screening.report import ReportSettings

    report = sub.add_parser("report", help="write a sweep's report: one self-contained HTML file (ranking, "
                                           "Pareto plot, snapshots, law, provenance)")
    add_options(report, ReportSettings)
    report.set_defaults(handler=cmd_report)

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


def space_size(n_metals: int, step: float) -> int | None:
    """Grid points of the simplex of ``n_metals`` fractions at ``step``: C(n + k − 1, k − 1), n = 1/step.

    Returns None when ``step`` is not a usable step (``candidates.olivine_space`` then says why).
    """
    if not (isinstance(step, float | int) and math.isfinite(step) and 0 < step <= 1) or n_metals < 1:
        return None
    intervals = round(1.0 / step)
    return math.comb(intervals + n_metals - 1, n_metals - 1)


def check_space_size(metals: Sequence[str], step: float, max_candidates: int, levels: int = 1) -> None:
    """Refuse a space larger than ``max_candidates`` before any candidate is built (``levels``: the
    dopant level combinations each grid point is combined with).

    Raises:
        InputError: (field ``--max-candidates``) not a positive integer; (field ``--step``) the space
            is larger than ``max_candidates``.
    """
    if isinstance(max_candidates, bool) or not isinstance(max_candidates, int) or max_candidates < 1:
        raise InputError("--max-candidates", "a positive integer", max_candidates)
    count = space_size(len(set(metals)), step)
    if count is not None and count * levels > max_candidates:
        made = f"{count}" if levels == 1 else f"{count} × {levels} dopant levels = {count * levels}"
        expected = (f"a space of at most {max_candidates} candidates ({len(set(metals))} metals at step "
                    f"{step:g} make {made}); use a coarser --step or raise --max-candidates")
        raise InputError("--step", expected, step)


def check_output(path: str | os.PathLike, field: str = "--out", *, folder: bool = False) -> Path:
    """Check that ``path`` can be written (a file, or a folder with ``folder=True``) before any work.

    The nearest existing folder on the way must be a folder (not a file) where a file can be created;
    a temporary file is made there and removed at once, nothing else is written.

    Args:
        path: the output path (``--out``).
        field: the option it came from, named in errors.
        folder: ``path`` is an output folder (created later) rather than a file.

    Returns:
        ``path`` as a Path.

    Raises:
        InputError: ``path`` lies under a file, in a read-only folder, or is a folder where a file is
            expected (or a file where a folder is expected).
    """
    target = Path(path)
    if folder and target.exists() and not target.is_dir():
        raise InputError(field, "a folder (a file of that name exists)", str(target))
    if not folder and target.is_dir():
        raise InputError(field, "a file path (a folder of that name exists)", str(target))
    start = target if folder else target.parent
    existing = next((p for p in (start, *start.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise InputError(field, f"a path in a folder ({existing} is a file)", str(target))
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise InputError(field, f"a path in a writable folder ({existing}: {exc.strerror or exc})",
                         str(target)) from None
    return target


def parse_dopants(texts: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """``--dopant`` values (``"Mg=0,0.05,0.1"``, repeatable) as ``{"Mg": (0.0, 0.05, 0.1)}``.

    Raises:
        InputError: (``--dopant``) not of the form ``EL=LEVEL,...`` with numeric levels, or a dopant
            given twice; the levels themselves are checked by ``candidates.olivine_space``.
    """
    dopants: dict[str, tuple[float, ...]] = {}
    for text in texts:
        symbol, sep, levels = str(text).partition("=")
        try:
            values = tuple(float(v) for v in levels.split(",") if v.strip())
        except ValueError:
            values = ()
        if not sep or not symbol.strip() or not values:
            raise InputError("--dopant", "EL=LEVEL,... with numeric M-site levels, e.g. Mg=0,0.05,0.1", text)
        if symbol.strip() in dopants:
            raise InputError("--dopant", "each dopant once", text)
        dopants[symbol.strip()] = values
    return dopants


def read_compositions(path: str | os.PathLike) -> list[dict[str, float]]:
    """The compositions of a ``--compositions`` CSV: one row per composition, one column per metal
    (fractions; an empty cell is 0). Every value is checked by ``candidates.explicit_space``.

    Raises:
        InputError: (``--compositions``) the file is missing or unreadable, has no rows, or holds a
            value that is not a number.
    """
    import csv

    expected = "a CSV file with one column per metal (e.g. Fe,Mn,Mg) and one row of fractions per composition"
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError("--compositions", f"{expected} ({exc})", str(path)) from None
    compositions = []
    for number, row in enumerate(rows, start=2):
        fractions = {}
        for metal, value in row.items():
            if metal is None or value is None:
                raise InputError("--compositions", f"{expected}; line {number} has more or fewer cells "
                                 "than the header", str(path))
            if not value.strip():
                continue
            try:
                fraction = float(value)
            except ValueError:
                raise InputError("--compositions", f"{expected}; line {number}, column {metal.strip()!r} "
                                 "is not a number", value) from None
            if fraction:
                fractions[metal.strip()] = fraction
        compositions.append(fractions)
    if not compositions:
        raise InputError("--compositions", expected + " (the file has no rows)", str(path))
    return compositions


def _space(args):
    import candidates

    dopants = parse_dopants(getattr(args, "dopant", []))
    if getattr(args, "compositions", None) is not None:
        if dopants:
            raise InputError("--dopant", "no --dopant with --compositions (write the dopant's fraction "
                             "in its own column of the file)", args.dopant)
        compositions = read_compositions(args.compositions)
        if len(compositions) > args.max_candidates:
            raise InputError("--compositions", f"at most --max-candidates = {args.max_candidates} rows",
                             len(compositions))
        try:
            return candidates.custom_space(compositions, name="compositions_file",
                                           file=os.path.basename(str(args.compositions)))
        except InputError as exc:  # compositions[i] is the CSV's line i + 2
            line = exc.field.partition("[")[2].partition("]")[0]
            where = f" (line {int(line) + 2})" if line.isdigit() else ""
            raise InputError("--compositions", f"{exc.expected}{where}", exc.got) from None
    levels = math.prod(len(set(v)) for v in dopants.values())
    check_space_size(args.metals, args.step, args.max_candidates, levels)
    try:
        return candidates.olivine_space(metals=args.metals, step=args.step, dopants=dopants or None)
    except InputError as exc:
        if exc.field.startswith("dopants"):
            raise InputError("--dopant", f"{exc.expected} ({exc.field})", exc.got) from None
        raise


def _describe_space(args) -> str:
    if getattr(args, "compositions", None) is not None:
        return f"compositions file={os.path.basename(str(args.compositions))} source={args.source}"
    dopants = "".join(f" dopant={d}" for d in getattr(args, "dopant", []))
    return f"olivine metals={','.join(args.metals)} step={args.step:g}{dopants} source={args.source}"


def cmd_candidates(args) -> int:
    import candidates

    if args.out:
        candidates.check_table_path(args.out)
        check_output(args.out)
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

    strategy = strategy_from_args(args)
    if strategy is not None and args.envelope:
        raise InputError("--envelope", "no --envelope with --strategy (run `chemoscreen envelope` on the "
                         "ranked candidates)", True)
    space = _space(args)
    settings = settings_from_args(args)
    law = VEGARD if args.law == VEGARD else (args.model or store.DEFAULT_MODEL_URI)
    options = SweepOptions(objectives=_objective_spec(args), samples=args.samples,
        experiment=args.experiment, tracking_uri=args.tracking_uri, address=args.address,
        num_cpus=args.num_cpus, gpus_per_actor=args.gpus_per_actor, actors=args.actors,
        batch_size=args.batch_size, refine=args.refine, artifacts=args.artifacts, progress=True,
        allow_pickle_model=args.allow_pickle_model, space=_describe_space(args))
    outcome = sweep(space, law, settings, source=args.source, options=options, strategy=strategy,
                    kinetics_model=args.kinetics_model)
    print(f"sweep {outcome.sweep_id}: {outcome.simulated} simulated, {outcome.skipped} already finished, "
          f"{outcome.failed} failed; model {outcome.model_uri}; parent run {outcome.parent_run_id}")
    print("timings: " + ", ".join(f"{k} {v:.1f}" for k, v in outcome.timings.items()))
    print_table(outcome.table, top=20)
    print(f"MLflow UI: {ui_hint(outcome.tracking_uri)}")
    if args.envelope:
        from screening.envelope import log_sweep_envelope

        where = log_sweep_envelope(outcome, space, law, settings, source=args.source)
        print(f"envelope metrics logged on the candidate runs; files in {where}")
    client = store.open_store(outcome.tracking_uri)
    if any(f.path.endswith("report.html") for f in client.list_artifacts(outcome.parent_run_id, "report")):
        from screening.report import report_artifact

        print(f"report: {report_artifact(client, outcome.parent_run_id)}")
    if not outcome.table.empty:
        view = sweep_view_key(outcome.sweep_id)
        print(f"ranking in the MLflow UI: "
              f"{ranking_url(DEFAULT_UI_URL, outcome.experiment_id, outcome.parent_run_id, view)}")
    finished = (outcome.table["status"] == "FINISHED").sum() if not outcome.table.empty else 0
    return 0 if finished > 0 else 1


def cmd_rank(args) -> int:
    import candidates
    from screening import tracking
    from screening.results import log_ranking, rank_sweep, write_uncertainty_plots

    if args.weights is not None:
        parse_weights(args.weights)  # NaN, inf, negative, a wrong count: named --weights, nothing opened
    spec = _objective_spec(args)
    candidates.check_table_path(args.out)
    check_output(args.out)
    ui_url = check_ui_url(args.ui_url)
    uri = store.absolute_tracking_uri(store.resolve_tracking_uri(args.tracking_uri))
    store.probe_tracking_uri(uri)
    client = store.open_store(uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        expected = "an experiment with sweeps (run `chemoscreen sweep` first)"
        raise InputError("--experiment", expected, args.experiment)
    parent = tracking.find_sweep(client, experiment.experiment_id, args.sweep_id)
    table = rank_sweep(client, uri, experiment.experiment_id, parent, log_children=False, spec=spec)
    path = candidates.write_table(table, args.out)
    written = [path]
    if table["pareto_rank"].notna().any():
        from screening.plots import pareto_png

        written.append(path.with_name(path.stem + "_pareto.png"))
        pareto_png(table, written[-1])
    written += write_uncertainty_plots(table, path.parent, f"{path.stem}_")
    log_ranking(client, parent, table, spec)
    print_table(table, top=args.top)
    print(f"wrote {', '.join(map(str, written))}; logged on parent run {parent} (artifacts ranking/)")
    sweep_id = client.get_run(parent).data.tags.get("sweep_id")
    key = None
    if sweep_id:  # the ranking columns shown in the UI (an MLflow shared view on the experiment)
        key = share_ranking_view(client, experiment.experiment_id, sweep_id, parent, table.columns)
    print(f"ranking in the MLflow UI: {ranking_url(ui_url, experiment.experiment_id, parent, key)}")
    return 0


def cmd_report(args) -> int:
    from chemoscreen.options import settings_from_args
    from screening.report import ReportSettings, write_report

    outcome = write_report(settings_from_args(ReportSettings, args))
    print(f"wrote {outcome.path} (sweep {outcome.sweep_id}; also logged on parent run "
          f"{outcome.parent_run_id} as report/report.html)")
    print(f"ranking in the MLflow UI: {outcome.ranking_url}")
    return 0


def parse_weights(text: str) -> tuple[float, ...]:
    """``--weights``: one finite, non-negative number per ranking objective, with a positive sum.

    Raises:
        InputError: (field ``--weights``) anything else (NaN, inf, a negative number, a wrong count,
            all zero), before the store is opened or a file written.
    """
    from screening.ranking import DEFAULT_WEIGHTS

    count = len(DEFAULT_WEIGHTS)
    expected = (f"{count} comma-separated finite numbers ≥ 0 with a positive sum (weights of specific "
                "energy, peak tensile stress, |volume change|)")
    try:
        weights = tuple(float(w) for w in text.split(","))
    except ValueError:
        raise InputError("--weights", expected, text) from None
    if len(weights) != count or not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise InputError("--weights", expected, text)
    return weights


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
    env.add_argument("--seeds", type=int, default=None, help="noise seeds per condition (default: 8)")
    env.add_argument("--out", default="envelope-output", help="output directory (default: envelope-output)")
    _add_settings_options(env)
    env.set_defaults(handler=cmd_envelope)


def cmd_envelope(args) -> int:
    from mechanics.screen import ScreeningSettings
    from screening.api import VEGARD
    from screening.envelope import EnvelopeSettings, charging_envelope, default_simulation_settings

    for flag, name in (("--c-rate", "c_rate"), ("--particle-size-nm", "particle_size_nm"),
                       ("--direction", "direction")):
        value = getattr(args, options.option_dest(ScreeningSettings, name), None)
        if value is not None:
            raise InputError(flag, "not used by envelope: it scans --c-rates, --sizes and both directions",
                             value)
    # the envelope's own defaults (free platelet, ...) under the flags the user gave
    settings = options.settings_from_args(ScreeningSettings, args,
                                          **dataclasses.asdict(default_simulation_settings()))
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


DEBUG_FLAG = "--debug"
DEBUG_VARIABLE = "CHEMOSCREEN_DEBUG"


def log_folder() -> Path:
    """Where failure tracebacks go: ``$XDG_STATE_HOME/chemoscreen/logs`` (default ``~/.local/state``)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "chemoscreen" / "logs"


def _save_traceback(command: str) -> Path | None:
    """Write the current exception's traceback to a new file in :func:`log_folder` (mode 0600)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = log_folder() / f"{command}-{stamp}-{os.getpid()}.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
            handle.write(f"chemoscreen {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
    except OSError:
        return None
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; exit 0 success, 2 bad input (one line naming the field), 1 other failure.

    A failure prints one line; its traceback goes to a file in :func:`log_folder`, whose path the line
    gives, or to stderr with ``--debug`` (anywhere on the command line) or ``CHEMOSCREEN_DEBUG=1``.
    """
    os.environ.setdefault("MPLBACKEND", "Agg")
    # one line per candidate run is noise; the sweep prints where to look once
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    if not sys.stderr.isatty():  # MLflow's download bars are carriage-return noise in a log file
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    argv = [a for a in argv if a != DEBUG_FLAG]
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except InputError as exc:
        if debug:
            traceback.print_exc()
        print(f"chemoscreen {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"chemoscreen {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            traceback.print_exc()
            where = ""
        else:
            saved = _save_traceback(args.command)
            where = (f" (traceback in {saved}; {DEBUG_FLAG} prints it)" if saved
                     else f" (rerun with {DEBUG_FLAG} for the traceback)")
        summary = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        print(f"chemoscreen {args.command}: failed: {summary}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
