"""The sweep report (screening.report) on a real SQLite MLflow store with a registered law.

The sweep is written with the driver's own logging helpers (tracking.open_parent_run / log_child_run)
and real PNGs from screening.plots, without simulating: the report reads what a sweep leaves in MLflow,
and these tests check that every part of it reaches the page.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from chemoscreen import store
from chemoscreen.models import log_model
from mechanics.errors import InputError
from mechanics.laws import PiecewiseLinearLaw
from screening import present, report, tracking
from screening.plots import render_candidate
from screening.results import rank_sweep

SWEEP_ID = "0123456789ab"
KNOTS = np.array([0.0, 0.5, 1.0])
# knot values of ε⁰ (a, b, c) for the registered law; its bootstrap samples scatter around them
LAW_VALUES = np.array([[0.0, 0.027, 0.052], [0.0, 0.018, 0.038], [0.0, -0.011, -0.020]])
N_SAMPLES = 16
CANDIDATES = [  # formula (pymatgen), fractions, energy, stress, volume change, extra columns of other stages
    ("LiFePO4", {"Fe": 1.0}, 580.0, 1160.0, 6.97, 210.0, 40.0),
    ("Li1Co0.75Ni0.25P1O4", {"Co": 0.75, "Ni": 0.25}, 810.0, 500.0, 2.10, 390.0, 25.0),
    ("LiMnPO4", {"Mn": 1.0}, 700.0, 1240.0, 10.2, 190.0, 60.0),
    ("Li1Mn0.5Fe0.5P1O4", {"Fe": 0.5, "Mn": 0.5}, 640.0, 1130.0, 8.57, 200.0, 55.0),
]


class _Page(HTMLParser):
    """The parts of the report the tests read: table headers and cells, images, scripts, links."""

    def __init__(self) -> None:
        super().__init__()
        self.headers, self.rows, self.images, self.scripts, self.external = [], [], [], [], []
        self._in_table = self._in_cell = False
        self._cell: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id") == "ranking":
            self._in_table = True
        if self._in_table and tag == "th":
            self.headers.append(attrs["data-column"])
        if self._in_table and tag == "tr" and "data-run-id" in attrs:
            self.rows.append([])
        if self._in_table and tag == "td":
            self._in_cell, self._cell = True, []
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "script":
            self.scripts.append(attrs)
        for key in ("src", "href"):
            value = str(attrs.get(key, ""))
            if tag in ("script", "link", "img") and value.startswith(("http:", "https:", "//")):
                self.external.append(value)

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_table = False
        if tag == "td" and self._in_cell:
            self.rows[-1].append("".join(self._cell).strip())
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self._cell.append(data)


def _snapshots(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"composition": rng.uniform(0, 1, (2, 8, 8)),
            "max_principal_stress_GPa": rng.normal(0, 0.5, (2, 8, 8)), "soc": np.array([0.3, 0.7])}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A store holding a registered law with samples and one sweep of four candidates that used it."""
    root = tmp_path_factory.mktemp("report")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = store.open_store(uri)
    cal_exp = store.ensure_experiment(client, store.CALIBRATION_EXPERIMENT, uri)
    cal_run = client.create_run(cal_exp).info.run_id
    rng = np.random.default_rng(0)
    samples = LAW_VALUES[None] + rng.normal(0.0, 0.002, (N_SAMPLES, 3, 3)) * (KNOTS > 0)
    version = log_model(client, cal_run, PiecewiseLinearLaw(KNOTS, LAW_VALUES), artifact_path="law",
                        register=store.MODEL_NAME, samples=samples)
    client.set_terminated(cal_run)
    model_uri = f"models:/{store.MODEL_NAME}/{version}"

    experiment_id = store.ensure_experiment(client, store.SCREENING_EXPERIMENT, uri)
    parent, _ = tracking.open_parent_run(client, experiment_id, SWEEP_ID, f"sweep-{SWEEP_ID}",
                                         {"model_uri": model_uri, "candidate_space": "test space"},
                                         {"settings.grid_points": 16, "model": model_uri})
    for k, (formula, fractions, energy, stress, dv, cost, std) in enumerate(CANDIDATES):
        folder = root / f"png{k}"
        folder.mkdir()
        curve = np.stack([np.linspace(0, 1, 5), np.linspace(3.5, 3.4, 5)], axis=1)
        for name, data in render_candidate(_snapshots(k), curve, formula).items():
            (folder / name).write_bytes(data)
        metrics = {"specific_energy_Wh_kg": energy, "peak_tensile_stress_MPa": stress,
                   "volume_change_pct": dv, "voltage_V": 3.5, "cost_USD_per_kWh": cost,
                   "peak_tensile_stress_MPa_std": std, "feasible": float(k != 2)}
        tracking.log_child_run(client, experiment_id, parent, run_name=formula, reuse_run_id=None,
                               tags={"candidate_id": f"{k:016x}", "formula": formula, "fidelity": "periodic",
                                     "composition_id": f"{k:012x}"},
                               params={f"x_{el}": x for el, x in fractions.items()}, metrics=metrics,
                               status="FINISHED", artifact_dir=str(folder))
    client.set_terminated(parent)
    table = rank_sweep(client, uri, experiment_id, parent, log_children=True)
    out = root / "report.html"
    path = report.report_for_sweep(client, uri, experiment_id, parent, out, table=table,
                                   ui_url="http://127.0.0.1:5123")
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return {"root": root, "uri": uri, "client": client, "experiment_id": experiment_id, "parent": parent,
            "table": table, "path": path, "page": page, "html": path.read_text(encoding="utf-8"),
            "model_uri": model_uri, "samples": samples}


def test_table_shows_every_column_sorted_by_score(sweep):
    page, table = sweep["page"], sweep["table"]
    # every metric column of the ranking, including those other stages add (cost, std, feasibility)
    for column in ("score", "pareto_rank", "specific_energy_Wh_kg", "peak_tensile_stress_MPa",
                   "volume_change_pct", "cost_USD_per_kWh", "feasible", "peak_tensile_stress_MPa_std"):
        assert column in page.headers
    stress = page.headers.index("peak_tensile_stress_MPa")
    assert page.headers.index("peak_tensile_stress_MPa_std") == stress + 1
    assert not {"run_id", "candidate_id"} & set(page.headers)
    assert len(page.rows) == len(CANDIDATES)
    cells = [row[page.headers.index("score")] for row in page.rows]
    shown = [float(c) for c in cells if c != ""]
    assert shown == sorted(shown, reverse=True)
    # infeasible candidates (plateaus above the 4.5 V window) have no score and come last
    assert len(shown) < len(cells) and all(c == "" for c in cells[len(shown):])
    # 4 significant digits of the ranking's own numbers
    best = table.sort_values("score", ascending=False).iloc[0]
    assert shown[0] == pytest.approx(best["score"], rel=5e-4)
    # formulas as a chemist writes them
    formulas = [row[page.headers.index("formula")] for row in page.rows]
    assert "LiCo0.75Ni0.25PO4" in formulas and not any("P1O4" in f for f in formulas)


def test_report_is_self_contained(sweep):
    page, html = sweep["page"], sweep["html"]
    assert page.external == []
    assert not any("src" in attrs for attrs in page.scripts)          # every script inline
    assert "plotly.js" in html and 'Plotly.newPlot(' in html and '"pareto"' in html
    # three PNGs per candidate, inlined
    pngs = [src for src in page.images if src.startswith("data:image/png;base64,")]
    assert len(pngs) == len(page.images) == 3 * len(CANDIDATES)


def test_plot_points_link_to_the_runs(sweep):
    html, table = sweep["html"], sweep["table"]
    for run_id in table["run_id"]:
        url = present.run_url("http://127.0.0.1:5123", sweep["experiment_id"], run_id)
        assert html.count(json.dumps(url)[1:-1]) >= 1                  # in the plot's customdata
        assert html.count(f'href="{url}"') == 2                        # the table row and the snapshots
    assert 'target="_blank"' in html and "plotly_click" in html and 'id="open-run"' in html


def test_law_with_its_bootstrap_band(sweep):
    curves = report.law_curves(sweep["model_uri"], sweep["uri"])
    # ε⁰ at the end member is the last knot value (piecewise-linear law), in %
    assert curves["mean"][-1] == pytest.approx(100 * LAW_VALUES[:, -1], abs=1e-12)
    assert curves["samples"] == N_SAMPLES
    # at X = 1/2 (a knot) the band is the samples' 2.5–97.5 % percentiles there (exact: the law is linear
    # between knots, so nothing but the percentile itself is computed)
    mid = int(np.argmin(np.abs(curves["X"] - 0.5)))
    low, high = np.percentile(100 * sweep["samples"][:, :, 1], report.BAND_PERCENTILES, axis=0)
    assert curves["low"][mid] == pytest.approx(low, abs=1e-12)
    assert curves["high"][mid] == pytest.approx(high, abs=1e-12)
    assert 'id="law"' in sweep["html"] and f"{N_SAMPLES} bootstrap replicates" in sweep["html"]
    assert f"{100 * LAW_VALUES[0, -1]:.3f} %" in sweep["html"]
    widest = float(np.max(curves["high"] - curves["low"]))
    assert f"at its widest {widest:.3g} percentage points" in sweep["html"]


def test_provenance(sweep):
    html = sweep["html"]
    for text in (SWEEP_ID, sweep["parent"], sweep["model_uri"], "settings.grid_points", "test space",
                 report.code_version()):
        assert text in html
    assert report.code_version() != "unknown"


def test_logged_on_the_parent_with_a_shared_ranking_view(sweep):
    client, parent = sweep["client"], sweep["parent"]
    logged = [f.path for f in client.list_artifacts(parent, report.REPORT_ARTIFACT_DIR)]
    assert logged == [f"{report.REPORT_ARTIFACT_DIR}/{report.REPORT_NAME}"]
    assert Path(report.report_artifact(client, parent)).read_bytes() == sweep["path"].read_bytes()
    tags = client.get_experiment(sweep["experiment_id"]).tags
    view = json.loads(tags[present.SHARED_VIEW_TAG + present.sweep_view_key(SWEEP_ID)])
    assert view["searchFilter"] == tracking.children_filter(parent)
    assert view["orderByKey"] == "metrics.`score`" and view["orderByAsc"] is False
    assert "metrics.`score`" in view["selectedColumns"] and "metrics.`pareto_rank`" in view["selectedColumns"]
    # the downloaded copy (what the demo puts next to the ranking) is the same file
    copy = report.fetch_report(client, parent, sweep["root"] / "copy.html")
    assert copy.read_bytes() == sweep["path"].read_bytes()


def test_write_report_finds_the_latest_sweep(sweep, tmp_path):
    out = tmp_path / "r.html"
    outcome = report.write_report(report.ReportSettings(tracking_uri=sweep["uri"], out=str(out)))
    assert outcome.path == out and out.stat().st_size > 1_000_000   # plotly.js alone is ~4.7 MB
    assert outcome.sweep_id == SWEEP_ID and outcome.parent_run_id == sweep["parent"]
    assert "viewStateShareKey=chemoscreen-" + SWEEP_ID in outcome.ranking_url


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"sweep_id": "xyz"}, "sweep_id"), ({"ui_url": "127.0.0.1:5000"}, "ui_url"),
    ({"out": "/no/such/r.html"}, "out"), ({"experiment": " "}, "experiment"),
    ({"tracking_uri": ""}, "tracking_uri"),
])
def test_bad_settings_are_refused(kwargs, field):
    with pytest.raises(InputError) as info:
        report.ReportSettings(**kwargs)
    assert info.value.field == field


def test_unknown_sweep_writes_nothing(sweep, tmp_path):
    out = tmp_path / "r.html"
    unknown = (({"experiment": "nope"}, "--experiment"), ({"sweep_id": "ffffffffffff"}, "--sweep-id"))
    for kwargs, field in unknown:
        with pytest.raises(InputError) as info:
            report.write_report(report.ReportSettings(tracking_uri=sweep["uri"], out=str(out), **kwargs))
        assert info.value.field == field
    assert list(tmp_path.iterdir()) == []


def test_cli_report_and_rank_print_the_deep_link(sweep, tmp_path, capsys):
    from screening.cli import main

    out = tmp_path / "cli.html"
    assert main(["report", "--tracking-uri", sweep["uri"], "--out", str(out), "--ui-url", "http://h:1/"]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "http://h:1/#/experiments/" in printed
    assert main(["rank", "--tracking-uri", sweep["uri"], "--out", str(tmp_path / "r.csv")]) == 0
    link = re.search(r"ranking in the MLflow UI: (\S+)", capsys.readouterr().out).group(1)
    assert link.startswith(present.DEFAULT_UI_URL + f"/#/experiments/{sweep['experiment_id']}/runs?")
    # the shared view carries filter, order and columns; MLflow ignores it beside search parameters
    assert link.endswith(f"runs?viewStateShareKey=chemoscreen-{SWEEP_ID}&workflowType=machine_learning")
    plain = present.ranking_url("http://h:1", sweep["experiment_id"], sweep["parent"])
    for part in ("searchFilter=tags.mlflow.parentRunId%20%3D%20%27" + sweep["parent"], "orderByAsc=false",
                 "orderByKey=metrics.%60score%60", "workflowType=machine_learning"):
        assert part in plain
    assert main(["report", "--tracking-uri", sweep["uri"], "--ui-url", "ftp://x"]) == 2
    assert "--ui-url" in capsys.readouterr().err


def test_column_sources():
    assert report.column_source("voltage_V") == "estimated"
    assert report.column_source("peak_tensile_stress_MPa") == "simulated"
    assert report.column_source("particle_peak_tensile_stress_MPa") == "simulated"
    assert report.column_source("score") == "ranking"
    assert report.column_source("peak_tensile_stress_MPa_std") == "uncertainty"
    assert report.column_source("cost_USD_per_kWh") == "reported"
    assert report.column_source("formula") == ""
