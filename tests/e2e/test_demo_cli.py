"""``chemoscreen demo``: the whole pipeline on embedded defaults (minutes on 2 cores, so marked slow)."""

from __future__ import annotations

import pandas as pd
import pytest

from chemoscreen import store
from screening import tracking


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(tmp_path, chemoscreen):
    result = chemoscreen(["demo", "--out", "out"], tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    out = tmp_path / "out"
    table = pd.read_csv(out / "ranking.csv")
    assert len(table) == 35 and (table["status"] == "FINISHED").all()
    assert (out / "ranking_pareto.png").exists() and (out / "calibration" / "calibration.json").exists()
    # step 6: the charging envelope of the top 3 (window and protocols printed, files written)
    summary = pd.read_csv(out / "envelope" / "envelope_summary.csv")
    assert len(summary) == 3 and "protocol (b) fixed time" in result.stdout
    assert f"mlflow ui --backend-store-uri sqlite:///{out / 'mlflow.db'} --host 127.0.0.1" in result.stdout
    client = store.open_store(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(store.SCREENING_EXPERIMENT)
    parent = client.get_run(tracking.find_sweep(client, experiment.experiment_id))
    # the sweep used the version the calibration registered, pinned
    assert parent.data.tags["model_uri"] == "models:/lfp-chemomech/1"
    assert client.get_experiment(experiment.experiment_id).artifact_location == (out / "mlartifacts").as_uri()
