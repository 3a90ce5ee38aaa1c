"""The sweep's logging path, measured cheaper without changing what it writes: renderers that redraw
their figures give the same PNG pixels as fresh figures, and the SQLite store the logger switches to
write-ahead logging keeps every committed run readable by a fresh connection."""

from __future__ import annotations

import io
import sqlite3

import numpy as np
from PIL import Image

from chemoscreen import store
from screening import tracking
from screening.plots import Renderer, render_candidate
from screening.runlog import quicker_sqlite_commits


def _candidate(k: int, frames: int = 3, n: int = 24):
    rng = np.random.default_rng(k)
    snapshots = {"composition": rng.random((frames, n, n)),
                 "max_principal_stress_GPa": rng.normal(scale=0.1 * (k + 1), size=(frames, n, n)),
                 "soc": np.linspace(0.1, 0.9, frames)}
    x = np.linspace(0.0, 1.0, 10 + 5 * k)
    return snapshots, np.stack([x, 3.45 - 0.05 * k * x], axis=1), f"LiFe{k}PO4"


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_a_renderer_redrawing_its_figures_gives_the_pixels_of_fresh_figures():
    """Candidates that change the colour scale, the grid size, the frame count and the voltage range, in
    a row through one Renderer: every PNG decodes to exactly the pixels of a fresh figure's PNG."""
    renderer = Renderer()
    candidates = [_candidate(0), _candidate(1, n=12), _candidate(2, frames=2), _candidate(3)]
    for snapshots, curve, formula in candidates:
        fresh = render_candidate(snapshots, curve, formula)
        redrawn = renderer.render(snapshots, curve, formula)
        assert sorted(redrawn) == ["composition.png", "stress.png", "voltage.png"] == sorted(fresh)
        for name in fresh:
            np.testing.assert_array_equal(_pixels(redrawn[name]), _pixels(fresh[name]), err_msg=name)
    assert len(renderer.figures) == 3  # snapshots of 3 and of 2 frames, and the voltage curve


def test_logger_store_is_write_ahead_and_readable_by_a_fresh_connection(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = store.open_store(uri)
    assert quicker_sqlite_commits(client) and quicker_sqlite_commits(client)  # once is enough, twice harmless
    experiment = store.ensure_experiment(client, "logging", uri)
    parent = client.create_run(experiment, run_name="parent").info.run_id
    run_id = tracking.log_child_run(client, experiment, parent, run_name="LiFePO4", reuse_run_id=None,
                                    tags={"candidate_id": "c1"}, params={"x_Fe": 1.0},
                                    metrics={"voltage_V": 3.43}, status="FINISHED")
    with sqlite3.connect(tmp_path / "mlflow.db") as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        status, = other.execute("SELECT status FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
    assert status == "FINISHED"
    fresh = store.open_store(uri)
    assert fresh.get_run(run_id).data.metrics["voltage_V"] == 3.43
    assert not quicker_sqlite_commits(object())  # not an MLflow client on SQLite: nothing to change
