"""Reading a sweep back from MLflow: one row per candidate, ranked, and the ranking logged on the parent.

``mlflow.search_runs`` gives the child runs of a sweep's parent as a pandas table; periodic runs make
the rows, refined (``fidelity=particle``) runs add ``particle_*`` columns to the candidate they refine.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from screening import tracking
from screening.objectives import FRACTION_PREFIX, STATIC_METRICS, ObjectiveSpec
from screening.ranking import rank_candidates

# static descriptors of a candidate logged as child metrics (ARCHITECTURE.md §4.4)
DESCRIPTOR_METRICS = (
    "misfit_a_pct", "misfit_b_pct", "misfit_c_pct", "volume_change_pct", "coherency_B_min_GPa",
    "voltage_V", "capacity_mAh_g", "specific_energy_Wh_kg",
)
SIMULATION_METRICS = ("peak_tensile_stress_MPa", "peak_elastic_energy_MJ_m3", "phase_separation")
RANK_METRICS = ("score", "pareto_rank")
CONTRACT_METRICS = DESCRIPTOR_METRICS + SIMULATION_METRICS + RANK_METRICS
#: what the ranking computes and logs on each child run (the window and the constraints enter them):
#: the closed-form metrics of the composition and ``feasible`` (1/0); ``infeasible_reason`` is a tag
RANKING_METRICS = STATIC_METRICS + ("feasible",) + RANK_METRICS


def candidate_frame(tracking_uri: str, experiment_id: str, parent_run_id: str) -> pd.DataFrame:
    """One row per periodic candidate of a sweep from ``mlflow.search_runs``, with particle results joined.

    Columns: candidate_id, formula, status, failure_reason, infeasible_reason (as last logged), run_id,
    the composition ``x_<metal>`` (params), every metric (``metrics.`` prefix dropped) and, for refined
    candidates, ``particle_<metric>`` of the simulation metrics.
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(experiment_ids=[experiment_id], output_format="pandas",
                              filter_string=f"tags.{tracking.PARENT_TAG} = '{parent_run_id}'")
    if runs.empty:
        return pd.DataFrame(columns=["candidate_id", "formula", "status", "run_id"])

    def tag(name: str) -> pd.Series:
        column = f"tags.{name}"
        return runs[column] if column in runs.columns else pd.Series([None] * len(runs), index=runs.index)

    metric_cols = [c for c in runs.columns if c.startswith("metrics.")]
    fraction_cols = [c for c in runs.columns if c.startswith(f"params.{FRACTION_PREFIX}")]
    frame = pd.DataFrame({
        "candidate_id": tag("candidate_id"), "formula": tag("formula"), "status": runs["status"],
        "fidelity": tag("fidelity").fillna("periodic"), "refines": tag("refines"),
        "failure_reason": tag("failure_reason"), "logged_infeasible_reason": tag("infeasible_reason"),
        "run_id": runs["run_id"],
        "start_time": runs["start_time"],
    })
    fractions = runs[fraction_cols].rename(columns=lambda c: c[len("params."):])
    frame = pd.concat([frame, fractions.apply(pd.to_numeric, errors="coerce").fillna(0.0),
                       runs[metric_cols].rename(columns=lambda c: c[len("metrics."):])], axis=1)
    # one row per candidate: a FINISHED run first, else the newest
    frame["_finished"] = frame["status"] == "FINISHED"
    frame = frame.sort_values(["_finished", "start_time"], ascending=[False, False])
    frame = frame.drop_duplicates("candidate_id").drop(columns=["_finished", "start_time"])
    periodic = frame[frame["fidelity"] == "periodic"].drop(columns=["fidelity", "refines"])
    particle = frame[(frame["fidelity"] == "particle") & (frame["status"] == "FINISHED")]
    if not particle.empty:
        keep = [c for c in SIMULATION_METRICS if c in particle.columns]
        joined = particle.set_index("refines")[keep].add_prefix("particle_")
        periodic = periodic.join(joined, on="candidate_id")
    return periodic.reset_index(drop=True)


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def rank_sweep(client, tracking_uri: str, experiment_id: str, parent_run_id: str, *,
               log_children: bool, weights=None, spec: ObjectiveSpec | None = None) -> pd.DataFrame:
    """Rank a sweep's candidates (:func:`screening.ranking.rank_candidates` with ``spec`` or the
    ``weights`` alias); with ``log_children``, log :data:`RANKING_METRICS` and the ``infeasible_reason``
    tag on each child run where they changed (NaN score and Pareto rank for an infeasible candidate)."""
    frame = candidate_frame(tracking_uri, experiment_id, parent_run_id)
    finished = frame[frame["status"] == "FINISHED"]
    others = frame[frame["status"] != "FINISHED"]
    if finished.empty:
        ranked = finished.assign(score=np.nan, pareto_rank=np.nan)
        ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    else:
        recomputed = [c for c in RANKING_METRICS if c in finished.columns]
        ranked = rank_candidates(finished.drop(columns=recomputed), weights, spec=spec)
    if log_children:
        old = finished.set_index("run_id")
        for row in ranked.to_dict("records"):
            new = {k: float(row[k]) for k in RANKING_METRICS if k in row}
            before = {k: old.at[row["run_id"], k] if k in old.columns else None for k in new}
            changed = {k: v for k, v in new.items()
                       if before[k] is None or not np.isclose(before[k], v, equal_nan=True)}
            if changed:
                tracking.log_metrics(client, row["run_id"], changed)
            reason = _text(row.get("infeasible_reason"))
            if reason != _text(old.at[row["run_id"], "logged_infeasible_reason"]):
                client.set_tag(row["run_id"], "infeasible_reason", reason[:5000])
    ranked = ranked.drop(columns="logged_infeasible_reason", errors="ignore")
    others = others.drop(columns="logged_infeasible_reason", errors="ignore")
    table = pd.concat([ranked, others], ignore_index=True) if not others.empty else ranked
    if "rank" in table.columns:
        table["rank"] = np.arange(1, len(table) + 1)
    lead = [c for c in ("rank", "candidate_id", "formula", "feasible", "score", "pareto_rank",
                        "usable_specific_energy_Wh_kg", "peak_tensile_stress_MPa", "volume_change_pct",
                        "cost_USD_per_kWh", "supply_risk_hhi") if c in table.columns]
    tail = [c for c in ("infeasible_reason", "status", "failure_reason", "run_id") if c in table.columns]
    middle = [c for c in table.columns if c not in lead and c not in tail]
    return table[lead + sorted(middle) + tail]


def log_ranking(client, parent_run_id: str, table: pd.DataFrame, spec: ObjectiveSpec | None = None) -> None:
    """Attach ``ranking/ranking.csv`` and ``ranking/pareto.png`` to the sweep's parent run and tag it with
    the spec it was ranked by (``ranking_spec``)."""
    from screening.plots import pareto_png

    client.set_tag(parent_run_id, "ranking_spec", (spec or ObjectiveSpec()).describe()[:5000])
    with tempfile.TemporaryDirectory(prefix="chemoscreen-rank-") as tmp:
        table.to_csv(Path(tmp) / "ranking.csv", index=False)
        if "pareto_rank" in table.columns and table["pareto_rank"].notna().any():
            pareto_png(table, Path(tmp) / "pareto.png")
        client.log_artifacts(parent_run_id, tmp, artifact_path="ranking")


