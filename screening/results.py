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
from screening.ranking import rank_candidates

# static descriptors of a candidate logged as child metrics (ARCHITECTURE.md §4.4)
DESCRIPTOR_METRICS = (
    "misfit_a_pct", "misfit_b_pct", "misfit_c_pct", "volume_change_pct", "coherency_B_min_GPa",
    "voltage_V", "capacity_mAh_g", "specific_energy_Wh_kg",
)
SIMULATION_METRICS = ("peak_tensile_stress_MPa", "peak_elastic_energy_MJ_m3", "phase_separation")
RANK_METRICS = ("score", "pareto_rank")
CONTRACT_METRICS = DESCRIPTOR_METRICS + SIMULATION_METRICS + RANK_METRICS


def candidate_frame(tracking_uri: str, experiment_id: str, parent_run_id: str) -> pd.DataFrame:
    """One row per periodic candidate of a sweep from ``mlflow.search_runs``, with particle results joined.

    Columns: candidate_id, formula, status, failure_reason, run_id, every metric (``metrics.`` prefix
    dropped) and, for refined candidates, ``particle_<metric>`` of the simulation metrics.
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
    frame = pd.DataFrame({
        "candidate_id": tag("candidate_id"), "formula": tag("formula"), "status": runs["status"],
        "fidelity": tag("fidelity").fillna("periodic"), "refines": tag("refines"),
        "failure_reason": tag("failure_reason"), "run_id": runs["run_id"],
        "start_time": runs["start_time"],
    })
    frame = pd.concat([frame, runs[metric_cols].rename(columns=lambda c: c[len("metrics."):])], axis=1)
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


def rank_sweep(client, tracking_uri: str, experiment_id: str, parent_run_id: str, *,
               log_children: bool, weights=None) -> pd.DataFrame:
    """Rank a sweep's candidates; log ``score``/``pareto_rank`` where they changed (``log_children``)."""
    frame = candidate_frame(tracking_uri, experiment_id, parent_run_id)
    finished = frame[frame["status"] == "FINISHED"]
    others = frame[frame["status"] != "FINISHED"]
    kwargs = {} if weights is None else {"weights": weights}
    if finished.empty:
        ranked = finished.assign(score=np.nan, pareto_rank=np.nan)
        ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    else:
        ranked = rank_candidates(finished.drop(columns=[c for c in RANK_METRICS if c in finished.columns]),
                                 **kwargs)
    if log_children:
        old = finished.set_index("run_id")
        for row in ranked.itertuples(index=False):
            new = {"score": row.score, "pareto_rank": row.pareto_rank}
            before = {k: old.at[row.run_id, k] if k in old.columns else np.nan for k in new}
            if any(not np.isclose(before[k], new[k], equal_nan=True) for k in new):
                tracking.log_metrics(client, row.run_id, {k: v for k, v in new.items() if np.isfinite(v)})
    table = pd.concat([ranked, others], ignore_index=True) if not others.empty else ranked
    if "rank" in table.columns:
        table["rank"] = np.arange(1, len(table) + 1)
    lead = [c for c in ("rank", "candidate_id", "formula", "score", "pareto_rank", "specific_energy_Wh_kg",
                        "peak_tensile_stress_MPa", "volume_change_pct") if c in table.columns]
    tail = [c for c in ("status", "failure_reason", "run_id") if c in table.columns]
    middle = [c for c in table.columns if c not in lead and c not in tail]
    return table[lead + sorted(middle) + tail]


def log_ranking(client, parent_run_id: str, table: pd.DataFrame) -> None:
    """Attach ``ranking/ranking.csv`` and ``ranking/pareto.png`` to the sweep's parent run."""
    from screening.plots import pareto_png

    with tempfile.TemporaryDirectory(prefix="chemoscreen-rank-") as tmp:
        table.to_csv(Path(tmp) / "ranking.csv", index=False)
        if "pareto_rank" in table.columns and table["pareto_rank"].notna().any():
            pareto_png(table, Path(tmp) / "pareto.png")
        client.log_artifacts(parent_run_id, tmp, artifact_path="ranking")


