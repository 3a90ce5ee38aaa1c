"""The sweep through the command line: exactly one FINISHED run per candidate, resumable, ranked."""

from __future__ import annotations

import time
from collections import Counter

import pytest

import candidates
from chemoscreen import store
from screening import tracking
from screening.driver import CONTRACT_METRICS

N_CANDIDATES = 10  # Fe, Mn, Co, Ni at step 0.5: C(2 + 3, 3) grid points
N_REFINED = 2


def _children(workdir):
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = store.open_store(uri)
    experiment = client.get_experiment_by_name(store.SCREENING_EXPERIMENT)
    runs = store.search_all_runs(client, experiment.experiment_id)
    parents = [r for r in runs if tracking.PARENT_TAG not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("fidelity") == "periodic"]
    refined = [r for r in runs if r.data.tags.get("fidelity") == "particle"]
    return client, parents, children, refined


@pytest.fixture(scope="module")
def swept(tmp_path_factory, chemoscreen, small_sweep):
    workdir = tmp_path_factory.mktemp("sweep")
    start = time.perf_counter()
    result = chemoscreen(["sweep", *small_sweep, "--refine", str(N_REFINED)], workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    return workdir, result, time.perf_counter() - start


def test_every_candidate_has_one_finished_run_with_the_contract_metrics(swept):
    workdir, result, _ = swept
    client, parents, children, refined = _children(workdir)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["sweep_id"] and parents[0].data.tags["model_uri"] == "vegard"
    counts = Counter(r.data.tags["candidate_id"] for r in children)
    assert len(counts) == N_CANDIDATES and set(counts.values()) == {1}
    for run in children:
        assert run.info.status == "FINISHED", run.data.tags.get("failure_reason")
        assert run.data.tags["status"] == "FINISHED" and run.data.tags["formula"].startswith("Li")
        fractions = {k[2:]: float(v) for k, v in run.data.params.items() if k.startswith("x_")}
        assert run.data.tags["composition_id"] == candidates.composition_id(fractions)
        missing = set(CONTRACT_METRICS) - set(run.data.metrics)
        assert not missing, f"{run.data.tags['formula']} lacks {missing}"
    artifacts = {a.path for a in client.list_artifacts(children[0].info.run_id)}
    assert {"composition.png", "stress.png", "voltage.png"} <= artifacts
    parent_artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id, "ranking")}
    assert {"ranking/ranking.csv", "ranking/pareto.png"} <= parent_artifacts
    assert (workdir / "mlartifacts").is_dir()
    # --refine: the best N_REFINED of the ranking (Pareto rank, then score) rerun on the free-surface
    # particle, one run each
    by_id = {r.data.tags["candidate_id"]: r for r in children}
    # infeasible candidates (Co, Ni plateaus above the 4.5 V window) carry a NaN Pareto rank and score
    feasible = [r for r in children if r.data.metrics["feasible"] == 1.0]
    assert len(children) - len(feasible) == 3  # LiCoPO4, LiNiPO4, LiCo0.5Ni0.5PO4
    ranked = sorted(feasible, key=lambda r: (r.data.metrics["pareto_rank"], -r.data.metrics["score"]))
    best = {r.data.tags["candidate_id"] for r in ranked[:N_REFINED]}
    assert len(refined) == N_REFINED and {r.data.tags["refines"] for r in refined} == best
    for run in refined:
        assert run.info.status == "FINISHED" and run.data.params["settings.fidelity"] == "particle"
        assert run.data.tags["formula"] == by_id[run.data.tags["refines"]].data.tags["formula"]
        assert "peak_tensile_stress_MPa" in run.data.metrics
    assert "mlflow ui --backend-store-uri sqlite:///" in result.stdout


def test_rerun_adds_nothing(swept, chemoscreen, small_sweep):
    workdir, _, _ = swept
    _, _, before, refined_before = _children(workdir)
    result = chemoscreen(["sweep", *small_sweep, "--refine", str(N_REFINED)], workdir)
    assert result.returncode == 0, result.stderr
    assert "ray_start_s" not in result.stdout  # nothing to do: Ray is not even started
    assert f"0 simulated, {N_CANDIDATES} already finished" in result.stdout
    _, parents, after, refined_after = _children(workdir)
    assert len(parents) == 1
    assert sorted(r.info.run_id for r in after) == sorted(r.info.run_id for r in before)
    assert sorted(r.info.run_id for r in refined_after) == sorted(r.info.run_id for r in refined_before)
    # no metric history was appended either
    client, _, _, _ = _children(workdir)
    run = after[0]
    assert len(client.get_metric_history(run.info.run_id, "score")) == 1


def test_rank_writes_table_and_pareto_plot(swept, chemoscreen):
    import pandas as pd

    workdir, _, _ = swept
    result = chemoscreen(["rank", "--out", "ranking.csv"], workdir)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(workdir / "ranking.csv")
    assert len(table) == N_CANDIDATES
    assert table["rank"].tolist() == list(range(1, N_CANDIDATES + 1))
    assert (table["pareto_rank"].diff().dropna() >= 0).all()
    assert (workdir / "ranking_pareto.png").stat().st_size > 0
    assert "pareto_rank" in result.stdout
