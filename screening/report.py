"""The sweep report: one self-contained HTML file with the ranking a person reads.

``chemoscreen report``, ``chemoscreen sweep`` and ``chemoscreen demo`` all write it through
:func:`report_for_sweep`; a sweep also logs it on its parent run (``report/report.html``), so it opens
in the MLflow UI's artifact view. It holds:

- the ranking table (every column the ranking has: objectives, ``score``, ``pareto_rank`` and any
  uncertainty, cost or envelope column other stages add), sortable by clicking a header, first sorted by
  score; each column says where its numbers come from (:func:`column_source`);
- an interactive Pareto plot (plotly, offline): hover shows the formula and the metrics, a click opens
  the candidate's MLflow run in a new tab, or, where the page may not open one (MLflow shows artifacts
  in a sandboxed iframe), a link to it under the plot;
- each candidate's voltage curve and composition/stress snapshots (the PNGs of its child run);
- the calibrated law ε⁰(X) with its bootstrap band when the sweep used a registered model;
- provenance: sweep id, model version, simulation settings, code version, store.

Nothing is fetched at view time: plotly's JavaScript and every image are inlined (a report is a few MB).
The page is rendered from the jinja2 templates in ``screening/templates/``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from chemoscreen import store
from mechanics.errors import InputError
from screening.present import (
    DEFAULT_UI_URL,
    check_ui_url,
    ranking_url,
    run_url,
    share_ranking_view,
    sweep_view_key,
)

REPORT_ARTIFACT_DIR = "report"
REPORT_NAME = "report.html"
CANDIDATE_IMAGES = ("voltage.png", "composition.png", "stress.png")
# columns of the ranking table that the report does not show as columns (ids go into links and titles)
HIDDEN_COLUMNS = ("run_id", "candidate_id", "composition_id")
LAW_AXES = ("a", "b", "c")
LAW_POINTS = 101
# central band of the law's posterior samples (bootstrap replicates)
BAND_PERCENTILES = (2.5, 97.5)


@dataclass(frozen=True)
class ReportSettings:
    """What ``chemoscreen report`` renders and where it writes it.

    Fields:
      experiment: the MLflow experiment holding the sweep (``--experiment``).
      sweep_id: the sweep (12 hex digits); None: the latest in the experiment.
      tracking_uri: the store (None: ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``).
      out: the HTML file to write.
      ui_url: the MLflow UI the report's links point to.
    """

    experiment: str = field(default=store.SCREENING_EXPERIMENT, metadata={"help": "MLflow experiment"})
    sweep_id: str | None = field(default=None, metadata={"help": "the sweep to report (default: the latest)"})
    tracking_uri: str | None = field(default=None, metadata={
        "help": "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)"})
    out: str = field(default=REPORT_NAME, metadata={"help": "the HTML file to write"})
    ui_url: str = field(default=DEFAULT_UI_URL, metadata={
        "help": "where the MLflow UI runs; the report's links to runs point there"})

    def __post_init__(self) -> None:
        if not isinstance(self.experiment, str) or not self.experiment.strip():
            raise InputError("experiment", "an MLflow experiment name", self.experiment)
        if self.sweep_id is not None:
            store.hex_id(self.sweep_id, "sweep_id", store.SWEEP_ID_DIGITS)
        if self.tracking_uri is not None and (not isinstance(self.tracking_uri, str)
                                              or not self.tracking_uri.strip()):
            raise InputError("tracking_uri", "a tracking URI (or None for the default)", self.tracking_uri)
        if not isinstance(self.out, str) or not self.out.strip() or Path(self.out).is_dir():
            raise InputError("out", "the path of an HTML file (not a folder)", self.out)
        if not Path(self.out).resolve().parent.is_dir():
            raise InputError("out", "a file in an existing folder", self.out)
        object.__setattr__(self, "ui_url", check_ui_url(self.ui_url, "ui_url"))


@dataclass
class ReportData:
    """Everything the template shows, read from MLflow (:func:`collect`) or built by hand in tests.

    ``table`` is the ranking (one row per candidate, ``run_id`` per row); ``images`` maps a run id to
    its PNGs (name → bytes); ``law`` is None or ``{"X": (n,), "mean": (n, 3), "low"/"high": (n, 3) or
    None, "samples": int}`` with ε⁰ in %.
    """

    experiment: str
    experiment_id: str
    sweep_id: str
    parent_run_id: str
    table: pd.DataFrame
    ui_url: str = DEFAULT_UI_URL
    view_key: str | None = None
    images: dict[str, dict[str, bytes]] = field(default_factory=dict)
    model_uri: str = ""
    law: dict | None = None
    law_note: str = ""
    settings: dict[str, str] = field(default_factory=dict)
    parent_tags: dict[str, str] = field(default_factory=dict)
    tracking_uri: str = ""
    code_version: str = ""


# ---------------------------------------------------------------------------------------------------
# what a column is


def column_source(name: str) -> str:
    """Where a ranking column's numbers come from, shown under its header.

    Returns:
        ``estimated`` (end-member data and mixing rules, not simulated), ``simulated``, ``ranking``
        (score and Pareto rank, derived from the others), ``uncertainty`` (a ``*_std`` column) or
        ``reported`` (any other column a stage added); empty for the candidate's name and status.
    """
    from screening.results import DESCRIPTOR_METRICS, SIMULATION_METRICS

    base = name[len("particle_"):] if name.startswith("particle_") else name
    if name in ("formula", "status", "failure_reason"):
        return ""
    if name.endswith("_std"):
        return "uncertainty"
    if name in ("score", "pareto_rank", "rank"):
        return "ranking"
    if base in DESCRIPTOR_METRICS:
        return "estimated"
    if base in SIMULATION_METRICS or base.startswith("sim_"):
        return "simulated"
    return "reported"


def display_columns(table: pd.DataFrame) -> list[str]:
    """The ranking's columns in the report's order: rank, formula, score, pareto_rank, the objectives,
    every other column alphabetically (a ``X_std`` right after ``X``), then status and failure reason."""
    from screening.objectives import DEFAULT_OBJECTIVES, OBJECTIVES

    lead = ["rank", "formula", "score", "pareto_rank", "feasible", "infeasible_reason"]
    lead += [OBJECTIVES[name].column for name, _ in DEFAULT_OBJECTIVES]
    tail = ["status", "failure_reason"]
    rest = sorted(c for c in table.columns if c not in lead + tail + list(HIDDEN_COLUMNS)
                  and not c.endswith("_std"))
    ordered = []
    for name in [c for c in lead if c in table.columns] + rest:
        ordered.append(name)
        if f"{name}_std" in table.columns:
            ordered.append(f"{name}_std")
    ordered += [c for c in table.columns if c.endswith("_std") and c not in ordered]
    return ordered + [c for c in tail if c in table.columns]


def _format(value) -> tuple[str, str]:
    """(text, sort key) of a table cell: 4 significant digits for numbers; missing values sort last."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)), str(int(bool(value)))
    if isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
        return f"{number:.4g}", repr(number)
    return str(value), str(value)


# ---------------------------------------------------------------------------------------------------
# reading a sweep back


def code_version() -> str:
    """``git describe --always --dirty`` of the installed code when it sits in a git checkout, else the
    package version."""
    from importlib.metadata import PackageNotFoundError, version

    here = Path(__file__).resolve().parent
    git = shutil.which("git")
    if git is not None:
        try:
            done = subprocess.run([git, "describe", "--always", "--dirty", "--tags"], cwd=here,
                                  capture_output=True, text=True, timeout=10, check=False)
            if done.returncode == 0 and done.stdout.strip():
                return f"git {done.stdout.strip()}"
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        return f"chemoscreen {version('chemoscreen')}"
    except PackageNotFoundError:
        return "unknown"


def law_curves(model_uri: str, tracking_uri: str) -> dict:
    """ε⁰(X) in % of a registered law on [0, 1] with the central band of its posterior samples.

    Args:
        model_uri: a pinned ``models:/NAME/VERSION`` (the sweep's ``model_uri`` tag).
        tracking_uri: the store.

    Returns:
        ``{"X", "mean", "low", "high", "samples"}`` (``low``/``high`` None when fewer than 2 samples).
    """
    import torch

    from chemoscreen.models import load_model

    stored = load_model(model_uri, tracking_uri=tracking_uri)
    X = torch.linspace(0.0, 1.0, LAW_POINTS, dtype=torch.float64)
    with torch.no_grad():
        mean = 100.0 * stored.model(X).detach().cpu().numpy()
        draws = [100.0 * s(X).detach().cpu().numpy() for s in stored.samples]
    low = high = None
    if len(draws) >= 2:
        low, high = np.percentile(np.stack(draws), BAND_PERCENTILES, axis=0)
    return {"X": X.numpy(), "mean": mean, "low": low, "high": high, "samples": len(draws)}


@contextlib.contextmanager
def _quiet_downloads():
    """No MLflow download bar per image (a hundred bars in a log say nothing)."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _download_images(client, run_id: str, folder: Path) -> dict[str, bytes]:
    names = {info.path for info in client.list_artifacts(run_id)}
    images = {}
    for name in CANDIDATE_IMAGES:
        if name in names:
            local = client.download_artifacts(run_id, name, str(folder))
            images[name] = Path(local).read_bytes()
    return images


def collect(client, tracking_uri: str, experiment_id: str, parent_run_id: str, *,
            table: pd.DataFrame | None = None, ui_url: str = DEFAULT_UI_URL,
            view_key: str | None = None) -> ReportData:
    """Read what the report shows about one sweep from MLflow.

    Args:
        client: an ``MlflowClient`` on ``tracking_uri``.
        tracking_uri: the store.
        experiment_id: the sweep's experiment.
        parent_run_id: the sweep's parent run.
        table: the ranking when the caller has it (a sweep does); else it is read back
            (:func:`screening.results.rank_sweep`, nothing logged).
        ui_url: where the MLflow UI runs.
        view_key: the sweep's shared view (:func:`screening.present.share_ranking_view`), if written.

    Returns:
        The :class:`ReportData`.
    """
    from screening.results import rank_sweep

    parent = client.get_run(parent_run_id)
    experiment = client.get_experiment(experiment_id)
    if table is None:
        table = rank_sweep(client, tracking_uri, experiment_id, parent_run_id, log_children=False)
    tags = dict(parent.data.tags)
    model_uri = tags.get("model_uri", parent.data.params.get("model", ""))
    law, note = None, ""
    if model_uri.startswith("models:/"):
        try:
            law = law_curves(model_uri, tracking_uri)
        except Exception as exc:  # the ranking is worth showing without the law
            note = f"the law {model_uri} could not be loaded ({type(exc).__name__}: {str(exc)[:300]})"
    elif model_uri == "vegard":
        note = "Vegard's law, ε⁰(X) = X·ε⁰(1) with each candidate's own end-member misfit (no calibrated law)"
    else:
        note = f"an unregistered law module ({model_uri or 'unknown'}): no stored law to plot"
    images: dict[str, dict[str, bytes]] = {}
    with tempfile.TemporaryDirectory(prefix="chemoscreen-report-") as tmp, _quiet_downloads():
        for k, run_id in enumerate(table.get("run_id", pd.Series(dtype=str)).dropna()):
            folder = Path(tmp, str(k))
            folder.mkdir()
            found = _download_images(client, str(run_id), folder)
            if found:
                images[str(run_id)] = found
    settings = dict(sorted(parent.data.params.items()))
    return ReportData(
        experiment=experiment.name, experiment_id=experiment_id, sweep_id=tags.get("sweep_id", ""),
        parent_run_id=parent_run_id, table=table, ui_url=ui_url, view_key=view_key, images=images,
        model_uri=model_uri, law=law, law_note=note, settings=settings,
        parent_tags={k: v for k, v in sorted(tags.items()) if not k.startswith("mlflow.")},
        tracking_uri=tracking_uri, code_version=code_version())


# ---------------------------------------------------------------------------------------------------
# rendering


def _pareto_figure(data: ReportData, table: pd.DataFrame):
    import plotly.graph_objects as go

    from candidates.space import chemist_formula

    needed = ("peak_tensile_stress_MPa", "specific_energy_Wh_kg", "volume_change_pct", "pareto_rank")
    if not all(c in table.columns for c in needed) or not table["pareto_rank"].notna().any():
        return None
    ranked = table[table["pareto_rank"].notna()]
    named = ("rank", "formula", "status", "failure_reason")
    hover_cols = [c for c in display_columns(ranked)
                  if c not in named and pd.api.types.is_numeric_dtype(ranked[c])]

    def trace(rows: pd.DataFrame, name: str, marker: dict):
        custom = [[run_url(data.ui_url, data.experiment_id, str(r["run_id"])) if "run_id" in r else "",
                   chemist_formula(str(r.get("formula", "")))] + [_format(r[c])[0] for c in hover_cols]
                  for _, r in rows.iterrows()]
        lines = "<br>".join(f"{c} = %{{customdata[{2 + i}]}}" for i, c in enumerate(hover_cols))
        return go.Scatter(
            x=rows["peak_tensile_stress_MPa"], y=rows["specific_energy_Wh_kg"], mode="markers", name=name,
            customdata=custom, marker=marker,
            hovertemplate=f"<b>%{{customdata[1]}}</b><br>{lines}<br><i>click: open the MLflow run</i>"
                          "<extra></extra>")

    front = ranked[ranked["pareto_rank"] == 1]
    others = ranked[ranked["pareto_rank"] != 1]
    fig = go.Figure()
    colour = {"colorscale": "Viridis", "cmin": float(ranked["volume_change_pct"].abs().min()),
              "cmax": float(ranked["volume_change_pct"].abs().max())}
    fig.add_trace(trace(others, "Pareto rank > 1",
                        {"size": 9, "color": others["volume_change_pct"].abs(), **colour}))
    fig.add_trace(trace(front, "Pareto front (rank 1)",
                        {"size": 13, "color": front["volume_change_pct"].abs(), **colour,
                         "line": {"color": "crimson", "width": 2.5},
                         "colorbar": {"title": {"text": "|ΔV| (%)"}}}))
    fig.update_layout(xaxis_title="peak tensile stress (MPa), lower is better",
                      yaxis_title="specific energy (Wh/kg), higher is better",
                      template="plotly_white", height=480, margin={"l": 60, "r": 20, "t": 30, "b": 50},
                      legend={"orientation": "h", "y": 1.08})
    return fig


def _law_figure(law: dict):
    import plotly.graph_objects as go

    fig = go.Figure()
    colours = ("#1f77b4", "#2ca02c", "#d62728")
    X = list(map(float, law["X"]))
    for i, (axis, colour) in enumerate(zip(LAW_AXES, colours)):
        if law["low"] is not None:
            fig.add_trace(go.Scatter(x=X + X[::-1], y=list(law["high"][:, i]) + list(law["low"][::-1, i]),
                                     fill="toself", fillcolor=colour, opacity=0.2, line={"width": 0},
                                     hoverinfo="skip", name=f"ε⁰_{axis} {BAND_PERCENTILES[0]:g}–"
                                                            f"{BAND_PERCENTILES[1]:g} % band"))
        fig.add_trace(go.Scatter(x=X, y=law["mean"][:, i], mode="lines", line={"color": colour},
                                 name=f"ε⁰_{axis}", hovertemplate="X = %{x:.2f}<br>ε⁰ = %{y:.3f} %"))
    fig.update_layout(xaxis_title="Li fraction X", yaxis_title="eigenstrain ε⁰ (%)", template="plotly_white",
                      height=380, margin={"l": 60, "r": 20, "t": 20, "b": 50})
    return fig


def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("screening", "templates"),
                              autoescape=jinja2.select_autoescape(["html", "j2"]),
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render(data: ReportData) -> str:
    """The report of ``data`` as one HTML document (plotly's JavaScript and the PNGs inlined)."""
    import plotly
    import plotly.offline
    from markupsafe import Markup

    from candidates.space import chemist_formula

    table = data.table
    if "score" in table.columns:  # the person reads the best score first (the rank column keeps the order)
        table = table.sort_values("score", ascending=False, na_position="last", kind="stable")
    columns = display_columns(table)
    rows = []
    for _, row in table.iterrows():
        run_id = str(row["run_id"]) if "run_id" in row and isinstance(row["run_id"], str) else ""
        cells = []
        for name in columns:
            value = row[name]
            if name == "formula":
                value = chemist_formula(str(value))
            text, key = _format(value)
            cells.append({"text": text, "key": key, "numeric": key != "" and text != key})
        rows.append({"cells": cells, "run_id": run_id,
                     "run_url": run_url(data.ui_url, data.experiment_id, run_id) if run_id else "",
                     "candidate_id": str(row.get("candidate_id", "")),
                     "machine_formula": str(row.get("formula", ""))})
    headers = [{"name": c, "source": column_source(c)} for c in columns]

    figure_html = {}
    for name, fig in (("pareto", _pareto_figure(data, table)),
                      ("law", _law_figure(data.law) if data.law is not None else None)):
        if fig is not None:
            figure_html[name] = Markup(fig.to_html(full_html=False, include_plotlyjs=False, div_id=name,
                                                   config={"displaylogo": False, "responsive": True}))

    def data_uri(png: bytes) -> str:
        return "data:image/png;base64," + base64.b64encode(png).decode("ascii")

    candidates = []
    for row in rows:
        found = data.images.get(row["run_id"], {})
        if found:
            candidates.append({"formula": chemist_formula(row["machine_formula"]), "run_url": row["run_url"],
                               "images": [{"name": n, "src": data_uri(found[n])}
                                          for n in CANDIDATE_IMAGES if n in found]})
    links = {"ranking": ranking_url(data.ui_url, data.experiment_id, data.parent_run_id, data.view_key),
             "parent": run_url(data.ui_url, data.experiment_id, data.parent_run_id)}
    law_summary = None
    if data.law is not None:
        band = data.law["low"] is not None
        law_summary = {"samples": data.law["samples"], "band": band,
                       "end": {a: f"{data.law['mean'][-1, i]:.3f}" for i, a in enumerate(LAW_AXES)},
                       "widest": f"{float(np.max(data.law['high'] - data.law['low'])):.3g}" if band else ""}
    context = {
        "title": f"chemoscreen sweep {data.sweep_id}", "data": data, "headers": headers, "rows": rows,
        "figures": figure_html, "candidates": candidates, "links": links, "law": law_summary,
        "band": f"{BAND_PERCENTILES[0]:g}–{BAND_PERCENTILES[1]:g} %",
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "plotly_js": Markup(plotly.offline.get_plotlyjs()), "plotly_version": plotly.__version__,
        "n_finished": int((table.get("status", pd.Series(dtype=str)) == "FINISHED").sum()),
    }
    return _environment().get_template("report.html.j2").render(**context)


# ---------------------------------------------------------------------------------------------------
# the one path: write (and log) the report of a sweep


def report_for_sweep(client, tracking_uri: str, experiment_id: str, parent_run_id: str, out, *,
                     table: pd.DataFrame | None = None, ui_url: str = DEFAULT_UI_URL,
                     log: bool = True) -> Path:
    """Write the report of one sweep to ``out``; with ``log``, also share the ranking view in the MLflow
    UI and attach the report to the parent run (``report/report.html``).

    Args:
        client: an ``MlflowClient`` on ``tracking_uri``.
        tracking_uri: the store.
        experiment_id: the sweep's experiment.
        parent_run_id: the sweep's parent run.
        out: the HTML file (written atomically: a reader never sees half of it).
        table: the ranking if the caller has it.
        ui_url: where the MLflow UI runs.
        log: write the shared view tag and the artifact.

    Returns:
        ``out`` as a path.
    """
    from chemoscreen.io import atomic_write

    view_key = None
    if table is None:
        from screening.results import rank_sweep

        table = rank_sweep(client, tracking_uri, experiment_id, parent_run_id, log_children=False)
    if log:
        sweep_id = client.get_run(parent_run_id).data.tags.get("sweep_id", parent_run_id[:12])
        view_key = share_ranking_view(client, experiment_id, sweep_id, parent_run_id, table.columns)
    data = collect(client, tracking_uri, experiment_id, parent_run_id, table=table, ui_url=ui_url,
                   view_key=view_key)
    page = render(data)
    path = atomic_write(out, lambda tmp: tmp.write_text(page, encoding="utf-8"), field="--out")
    if log:
        with tempfile.TemporaryDirectory(prefix="chemoscreen-report-") as tmp:
            staged = Path(tmp, REPORT_NAME)
            shutil.copyfile(path, staged)
            client.log_artifact(parent_run_id, str(staged), artifact_path=REPORT_ARTIFACT_DIR)
    return path


def report_artifact(client, parent_run_id: str) -> str:
    """Where the logged report of a sweep lies: a local path for a file artifact store, else its URI."""
    from urllib.parse import unquote, urlparse

    root = client.get_run(parent_run_id).info.artifact_uri
    uri = f"{root}/{REPORT_ARTIFACT_DIR}/{REPORT_NAME}"
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else uri


def fetch_report(client, parent_run_id: str, out) -> Path:
    """Copy the report logged on a sweep's parent run to ``out`` (atomically)."""
    from chemoscreen.io import atomic_write

    with tempfile.TemporaryDirectory(prefix="chemoscreen-report-") as tmp, _quiet_downloads():
        local = client.download_artifacts(parent_run_id, f"{REPORT_ARTIFACT_DIR}/{REPORT_NAME}", tmp)
        return atomic_write(out, lambda target: shutil.copyfile(local, target), field="--out")


@dataclass(frozen=True)
class ReportOutcome:
    """What :func:`write_report` wrote: the file, the sweep and the UI link of its ranking."""

    path: Path
    sweep_id: str
    parent_run_id: str
    ranking_url: str


def write_report(settings: ReportSettings) -> ReportOutcome:
    """``chemoscreen report``: find the sweep, write its report, share its ranking view and log the report.

    Args:
        settings: the validated :class:`ReportSettings`.

    Returns:
        The :class:`ReportOutcome`.

    Raises:
        InputError: the store cannot be reached (``--tracking-uri``), the experiment does not exist
            (``--experiment``) or holds no such sweep (``--sweep-id``); all before anything is written.
    """
    from screening import tracking

    uri = store.absolute_tracking_uri(store.resolve_tracking_uri(settings.tracking_uri))
    store.probe_tracking_uri(uri)
    client = store.open_store(uri)
    experiment = client.get_experiment_by_name(settings.experiment)
    if experiment is None:
        raise InputError("--experiment", "an experiment with sweeps (run `chemoscreen sweep` first)",
                         settings.experiment)
    parent = tracking.find_sweep(client, experiment.experiment_id, settings.sweep_id)
    path = report_for_sweep(client, uri, experiment.experiment_id, parent, settings.out,
                            ui_url=settings.ui_url)
    sweep_id = client.get_run(parent).data.tags.get("sweep_id", "")
    view_key = sweep_view_key(sweep_id) if sweep_id else None
    link = ranking_url(settings.ui_url, experiment.experiment_id, parent, view_key)
    return ReportOutcome(path=path, sweep_id=sweep_id, parent_run_id=parent, ranking_url=link)

