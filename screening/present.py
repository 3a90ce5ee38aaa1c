"""How the commands show a sweep: the summary columns of the ranking and the way to the MLflow UI.

Shared by ``chemoscreen sweep``/``rank``/``report`` (:mod:`screening.cli`), ``chemoscreen demo``
(:mod:`screening.demo`) and the sweep report (:mod:`screening.report`), which therefore do not import
each other.

Deep links into the MLflow UI (3.x, checked in tests/browser): the experiment's runs page honours the
URL parameters ``searchFilter``, ``orderByKey`` and ``orderByAsc``; ``workflowType=machine_learning``
shows the model-training pages instead of the GenAI ones. Which columns the table shows is UI state,
which MLflow shares through a *shared view*: an experiment tag ``mlflow.sharedViewState.<KEY>`` holding
the view as JSON, opened with ``viewStateShareKey=<KEY>``. :func:`share_ranking_view` writes one per
sweep (the ranking columns shown, the sweep's runs filtered, sorted by score) and :func:`ranking_url`
links to it. MLflow 3.17 applies a shared view only when the URL carries no search parameters of its own,
so a link has either the view key or (where no view could be written) the filter and the order.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import TextIO
from urllib.parse import quote, urlencode, urlparse

from chemoscreen import store
from mechanics.errors import InputError

DEFAULT_UI_URL = "http://127.0.0.1:5000"
SHARED_VIEW_TAG = "mlflow.sharedViewState."
# the columns the shared view of a sweep shows, when the ranking has them
RANKING_VIEW_METRICS = ("score", "pareto_rank", "specific_energy_Wh_kg", "peak_tensile_stress_MPa",
                        "volume_change_pct", "particle_peak_tensile_stress_MPa")

SUMMARY_COLUMNS = ("rank", "formula", "feasible", "score", "score_std", "pareto_rank", "p_pareto",
                   "usable_specific_energy_Wh_kg", "peak_tensile_stress_MPa", "volume_change_pct",
                   "cost_USD_per_kWh", "supply_risk_hhi", "particle_peak_tensile_stress_MPa", "status")


def print_table(table, top: int | None = None, file: TextIO | None = None) -> None:
    """Print the :data:`SUMMARY_COLUMNS` of a ranking table (4 significant digits).

    Args:
        table: a ranking (``pandas.DataFrame``, e.g. ``SweepOutcome.table``).
        top: print only the first ``top`` rows (None: all).
        file: where to print (default ``sys.stdout``).
    """
    import pandas as pd

    from candidates.space import chemist_formula

    columns = [c for c in SUMMARY_COLUMNS if c in table.columns]
    shown = table[columns] if top is None else table[columns].head(top)
    if "formula" in shown.columns:
        shown = shown.assign(formula=shown["formula"].map(chemist_formula))
    with pd.option_context("display.width", 160, "display.max_columns", 20,
                           "display.float_format", "{:.4g}".format):
        print(shown.to_string(index=False), file=file or sys.stdout)


def ui_hint(tracking_uri: str) -> str:
    """The command that opens the MLflow UI on loopback for this store.

    Args:
        tracking_uri: the store the sweep logged to.

    Returns:
        An ``mlflow ui`` command line for a SQLite store, else a hint to open the server's URI.
    """
    path = store.sqlite_path(tracking_uri)
    if path is not None:
        return (f"mlflow ui --backend-store-uri sqlite:///{path.resolve()} --host 127.0.0.1 --port 5000"
                "   # then open http://127.0.0.1:5000")
    return f"open {tracking_uri} in a browser"


def check_ui_url(url: str, field: str = "--ui-url") -> str:
    """Check an MLflow UI address (``http(s)://HOST[:PORT][/PATH]``) and drop a trailing slash.

    Raises:
        InputError: (``field``) not an http(s) URL with a host.
    """
    parsed = urlparse(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InputError(field, "the MLflow UI's address, e.g. http://127.0.0.1:5000", url)
    return url.rstrip("/")


def _metric_key(name: str) -> str:
    # the UI's canonical column key, as its sort menu writes it into orderByKey
    return f"metrics.`{name}`"


def sweep_view_key(sweep_id: str) -> str:
    """The shared-view key of a sweep's ranking (``chemoscreen-<sweep_id>``)."""
    return f"chemoscreen-{sweep_id}"


def ranking_view(parent_run_id: str, metrics: Iterable[str]) -> dict:
    """The UI state of a sweep's ranking: its child runs, best score first, the ranking columns shown.

    Args:
        parent_run_id: the sweep's parent run.
        metrics: metric columns the table has; those of :data:`RANKING_VIEW_METRICS` are shown.
    """
    from screening.tracking import children_filter

    present = set(metrics)
    return {
        "searchFilter": children_filter(parent_run_id),
        "orderByKey": _metric_key("score"),
        "orderByAsc": False,
        "selectedColumns": [_metric_key(m) for m in RANKING_VIEW_METRICS if m in present],
    }


def share_ranking_view(client, experiment_id: str, sweep_id: str, parent_run_id: str,
                       metrics: Iterable[str]) -> str:
    """Store the sweep's ranking as an MLflow shared view (an experiment tag); return its key."""
    key = sweep_view_key(sweep_id)
    client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG + key,
                              json.dumps(ranking_view(parent_run_id, metrics)))
    return key


def ranking_url(ui_url: str, experiment_id: str, parent_run_id: str, view_key: str | None = None) -> str:
    """The MLflow UI address of a sweep's ranking: its child runs (named by formula), best score first.

    Args:
        ui_url: where the MLflow UI runs (``--ui-url``).
        experiment_id: the experiment of the sweep.
        parent_run_id: the sweep's parent run.
        view_key: a shared view written by :func:`share_ranking_view` (adds the ranking columns).

    Returns:
        ``UI/#/experiments/ID/runs?viewStateShareKey=KEY&workflowType=machine_learning``, or without a key
        ``UI/#/experiments/ID/runs?searchFilter=...&orderByKey=metrics.`score`&orderByAsc=false&...``.
    """
    from screening.tracking import children_filter

    if view_key:  # the shared view holds the filter and the order too; MLflow ignores it beside them
        query = {"viewStateShareKey": view_key, "workflowType": "machine_learning"}
    else:
        query = {"searchFilter": children_filter(parent_run_id), "orderByKey": _metric_key("score"),
                 "orderByAsc": "false", "workflowType": "machine_learning"}
    return (f"{check_ui_url(ui_url)}/#/experiments/{quote(str(experiment_id), safe='')}/runs?"
            + urlencode(query, quote_via=quote))


def run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI address of one run."""
    return f"{check_ui_url(ui_url)}/#/experiments/{quote(str(experiment_id), safe='')}/runs/{quote(run_id)}"
