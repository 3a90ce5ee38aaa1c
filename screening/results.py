"""Reading a sweep back from MLflow: one row per candidate, ranked, and the ranking logged on the parent.

``mlflow.search_runs`` gives the child runs of a sweep's parent as a pandas table; periodic runs make
the rows, refined (``fidelity=particle``) runs add ``particle_*`` columns to the candidate they refine.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from mechanics.errors import InputError
from screening import tracking
from screening.objectives import FRACTION_PREFIX, OBJECTIVES, STATIC_METRICS, ObjectiveSpec, weights_alias
from screening.ranking import rank_candidates, rank_draws

# static descriptors of a candidate logged as child metrics (ARCHITECTURE.md §4.4)
DESCRIPTOR_METRICS = (
    "misfit_a_pct", "misfit_b_pct", "misfit_c_pct", "volume_change_pct", "coherency_B_min_GPa",
    "voltage_V", "capacity_mAh_g", "specific_energy_Wh_kg",
)
SIMULATION_METRICS = ("peak_tensile_stress_MPa", "peak_elastic_energy_MJ_m3", "phase_separation")
RANK_METRICS = ("score", "pareto_rank")
#: with ``--samples``: simulated metrics logged as the mean over the draws with these statistics beside
#: them, and their per-draw values as the history ``<metric>_draw`` (``tracking.log_child_run``)
DRAWN_METRICS = SIMULATION_METRICS
STAT_SUFFIXES = ("_std", "_p05", "_p95")
HISTORY_SUFFIX = "_draw"
CONTRACT_METRICS = DESCRIPTOR_METRICS + SIMULATION_METRICS + RANK_METRICS
#: what the ranking computes and logs on each child run (the window and the constraints enter them):
#: the closed-form metrics of the composition and ``feasible`` (1/0); ``infeasible_reason`` is a tag
RANKING_METRICS = STATIC_METRICS + ("feasible",) + RANK_METRICS + ("score_std", "p_pareto", "p_top_k")


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
    if weights is not None:
        if spec is not None:
            raise InputError("weights", "either weights (the --weights alias) or spec, not both", weights)
        spec = ObjectiveSpec(objectives=weights_alias(weights, "weights"))
    spec = ObjectiveSpec() if spec is None else spec
    frame = candidate_frame(tracking_uri, experiment_id, parent_run_id)
    beats = None
    finished = frame[frame["status"] == "FINISHED"]
    others = frame[frame["status"] != "FINISHED"]
    if finished.empty:
        ranked = finished.assign(score=np.nan, pareto_rank=np.nan)
        ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    else:
        recomputed = [c for c in RANKING_METRICS if c in finished.columns]
        ranked = rank_candidates(finished.drop(columns=recomputed), spec=spec)
        # one history read per run and drawn objective (the other metrics' draws do not enter the ranking)
        columns = {OBJECTIVES[name].column for name in spec.names}
        drawn = [m for m in DRAWN_METRICS if f"{m}_std" in ranked.columns and m in columns]
        if drawn:
            draws = {m: _draw_histories(client, ranked["run_id"], m) for m in drawn}
            width = max(a.shape[1] for a in draws.values())
            draws = {m: np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=np.nan)
                     for m, a in draws.items()}
            ranked, beats = rank_draws(ranked, draws, spec)
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
    lead = [c for c in ("rank", "candidate_id", "formula", "feasible", "score", "score_std", "pareto_rank",
                        "p_pareto", "p_top_k",
                        "usable_specific_energy_Wh_kg", "peak_tensile_stress_MPa", "volume_change_pct",
                        "cost_USD_per_kWh", "supply_risk_hhi") if c in table.columns]
    tail = [c for c in ("infeasible_reason", "status", "failure_reason", "run_id") if c in table.columns]
    middle = [c for c in table.columns if c not in lead and c not in tail]
    table = table[lead + sorted(middle) + tail]
    if beats is not None:  # P(row beats column) over the draws, for the parent's plots
        ids = ranked["candidate_id"].tolist()
        table.attrs["p_beats"] = pd.DataFrame(beats, index=ids, columns=ids)
    return table


def _draw_histories(client, run_ids, metric: str) -> np.ndarray:
    """(n_runs, n_draws) values of ``<metric>_draw`` (step = draw index) of each run; NaN where missing."""
    rows = []
    for run_id in run_ids:
        history = sorted(client.get_metric_history(run_id, metric + HISTORY_SUFFIX), key=lambda m: m.step)
        values = {m.step: m.value for m in history}  # a re-logged step keeps its last value
        rows.append([values.get(k, np.nan) for k in range(max(values, default=-1) + 1)])
    width = max((len(r) for r in rows), default=0)
    return np.array([r + [np.nan] * (width - len(r)) for r in rows], dtype=float).reshape(len(rows), width)


def log_ranking(client, parent_run_id: str, table: pd.DataFrame, spec: ObjectiveSpec | None = None) -> None:
    """Attach the ranking to the sweep's parent run: ``ranking/ranking.csv``, ``ranking/pareto.png`` and,
    for a sweep with draws, ``ranking/score_errorbars.png`` and the pairwise matrix of the top 10
    (``ranking/p_beats.png``, ``ranking/p_beats.csv``); tag ``ranking_spec`` with the spec used."""
    from screening.plots import pareto_png

    client.set_tag(parent_run_id, "ranking_spec", (spec or ObjectiveSpec()).describe()[:5000])
    with tempfile.TemporaryDirectory(prefix="chemoscreen-rank-") as tmp:
        table.to_csv(Path(tmp) / "ranking.csv", index=False)
        if "pareto_rank" in table.columns and table["pareto_rank"].notna().any():
            pareto_png(table, Path(tmp) / "pareto.png")
        write_uncertainty_plots(table, Path(tmp))
        client.log_artifacts(parent_run_id, tmp, artifact_path="ranking")


def write_uncertainty_plots(table: pd.DataFrame, directory: Path, stem: str = "") -> list[Path]:
    """``<stem>score_errorbars.png``, ``<stem>p_beats.png`` and ``<stem>p_beats.csv`` (top 10 by score) in
    ``directory`` when the table comes from a sweep with draws; returns the paths written."""
    from screening.plots import beats_png, score_errorbars_png

    if "score_std" not in table.columns or "p_beats" not in table.attrs or not table["score"].notna().any():
        return []
    written = [directory / f"{stem}score_errorbars.png", directory / f"{stem}p_beats.png",
               directory / f"{stem}p_beats.csv"]
    score_errorbars_png(table, written[0])
    top = table[table["score"].notna()].head(10)
    matrix = table.attrs["p_beats"].loc[top["candidate_id"], top["candidate_id"]]
    labels = top["formula"].tolist()
    beats_png(matrix.to_numpy(), labels, written[1])
    pd.DataFrame(matrix.to_numpy(), index=labels, columns=labels).to_csv(written[2])
    return written
