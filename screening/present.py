"""How the commands show a sweep: the summary columns of the ranking and the way to the MLflow UI.

Shared by ``chemoscreen sweep``/``rank`` (:mod:`screening.cli`) and ``chemoscreen demo``
(:mod:`screening.demo`), which therefore do not import each other.
"""

from __future__ import annotations

import sys
from typing import TextIO

from chemoscreen import store

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

    columns = [c for c in SUMMARY_COLUMNS if c in table.columns]
    shown = table[columns] if top is None else table[columns].head(top)
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
