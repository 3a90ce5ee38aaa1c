"""Failure paths of ``chemoscreen calibrate`` (and the model store behind ``sweep``) through the installed
command: bad input exits 2 before any work and leaves the store, the alias and the folder as they were; a
calibrate killed with SIGKILL at several points is cleaned up by the next one; a pickle planted in the
store as the champion does not run."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chemoscreen import store

FAST = ["--bootstrap", "0", "--joint", "0", "--n-knots", "6"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow SQLite database with its schema only (made once; copying it takes milliseconds)."""
    path = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    store.open_store(f"sqlite:///{path}")
    return path


def _image_set(folder: Path) -> Path:
    from inverse import save_images, synthesize

    return save_images(synthesize(size_px=16, oversample=1, seed=1, n_dislocations=0), folder / "p.npz")


def _snapshot(folder: Path) -> dict:
    """What a failed command must not change: model versions, the alias, runs and their status, files."""
    client = store.open_store(f"sqlite:///{folder / 'mlflow.db'}")
    versions = sorted((v.name, int(v.version)) for v in client.search_model_versions())
    try:
        champion = str(client.get_model_version_by_alias(store.MODEL_NAME, store.ALIAS).version)
    except Exception:  # noqa: BLE001 (MlflowException: no alias)
        champion = None
    runs = sorted((r.info.run_id, r.info.status) for e in client.search_experiments()
                  for r in store.search_all_runs(client, e.experiment_id))
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix != ".db-journal")
    return {"versions": versions, "champion": champion, "runs": runs, "files": files}


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, empty_store) -> Path:
    """A folder with an image set, a store whose champion is version 1, its calibration in ``cal/``, and
    damaged inputs."""
    from inverse import calibrate, load_images
    from inverse.tracking import log_calibration

    folder = tmp_path_factory.mktemp("calibrated")
    shutil.copy(empty_store, folder / "mlflow.db")
    path = _image_set(folder)
    cal = calibrate(load_images(path), n_bootstrap=0, n_joint=0, n_knots=6)
    log_calibration(cal, out_dir=folder / "cal", tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    (folder / "afile").write_text("an existing file")
    data = path.read_bytes()
    (folder / "truncated.npz").write_bytes(data[: len(data) // 2])
    return folder


@pytest.mark.parametrize(("args", "field"), [
    (["p.npz", "--out", "afile"], "--out"),  # issue 20: this failed after the fit and deleted the alias
    (["p.npz", "--out", "new", "--tracking-uri", "http://127.0.0.1:{port}"], "--tracking-uri"),
    (["truncated.npz", "--out", "new"], "images"),
], ids=["out-is-a-file", "unreachable-server", "truncated-npz"])
def test_bad_input_exits_2_and_leaves_everything_as_it_was(calibrated, chemoscreen, args, field):
    """A few cases through the installed command (the other bad inputs are unit tests of
    inverse.tracking.prepare_outputs and inverse.images.validate, in tests/inverse)."""
    before = _snapshot(calibrated)
    assert before["champion"] == "1" and before["versions"] == [(store.MODEL_NAME, 1)]
    args = [a.format(port=_closed_port()) for a in args]
    start = time.perf_counter()
    result = chemoscreen(["calibrate", *args, *FAST], calibrated, timeout=300)
    elapsed = time.perf_counter() - start
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"chemoscreen calibrate: error: {field}: expected" in result.stderr
    assert "Traceback" not in result.stderr
    assert "fit:" not in result.stdout  # refused before the fit
    assert _snapshot(calibrated) == before  # no version, alias unchanged, no run, no partial folder
    # imports take a few seconds on a busy 2-core machine; the unreachable server is refused at once
    assert elapsed < 60


# ---------------------------------------------------------------------------------------------------
# SIGKILL

# Runs the command line in this interpreter with an audit hook (a real CPython feature, not a change to
# the code under test) that SIGKILLs the process at the first event matching the chosen point.
_KILLER = r"""
import os, signal, sys

point = sys.argv[1]

def _writes(args):
    return len(args) > 1 and isinstance(args[1], str) and "w" in args[1]

def hook(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        if ((point == "write-outputs" and ".cal.tmp_" in path and _writes(args))
                or (point == "log-artifacts" and "mlartifacts" in path and _writes(args))
                or (point == "write-model" and "chemoscreen-model_" in path and _writes(args))):
            os.kill(os.getpid(), signal.SIGKILL)
    if event == "os.rename" and point == "move-in" and ".cal.tmp_" in os.fsdecode(args[0]):
        os.kill(os.getpid(), signal.SIGKILL)

sys.addaudithook(hook)
from screening.cli import main
sys.exit(main(sys.argv[2:]))
"""

KILL_POINTS = {  # point: what the process had done when it died
    "write-outputs": "staging folder half written, no run yet",
    "log-artifacts": "run RUNNING, artifacts half copied",
    "write-model": "run RUNNING, the model's temporary folder made",
    "move-in": "version registered, alias not moved, run RUNNING",
}


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_calibrate_killed_at_several_points_is_cleaned_up_by_the_next(tmp_path, empty_store, e2e_env,
                                                                       chemoscreen):
    """Issue 20: SIGKILL while logging left a run RUNNING forever, a staging folder and a model staging
    folder, and a rerun cleaned none of it. Kill real calibrate processes at four points, one after the
    other, then run calibrate once more: every run is FINISHED or KILLED, no version of a killed run
    without an alias is left, and no temporary folder of a dead process remains."""
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    _image_set(tmp_path)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**e2e_env, "TMPDIR": str(tmp)}
    client = store.open_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    seen = {}
    for point in KILL_POINTS:
        killed = subprocess.run([sys.executable, "-c", _KILLER, point, "calibrate", "p.npz", "--out", "cal",
                                 *FAST], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert killed.returncode == -signal.SIGKILL, (point, killed.stdout + killed.stderr)
        experiment = client.get_experiment_by_name(store.CALIBRATION_EXPERIMENT)
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        seen[point] = {
            "running": sum(r.info.status == "RUNNING" for r in runs),
            "killed": sum(r.info.status == "KILLED" for r in runs),
            "staging": len([p for p in tmp_path.iterdir() if p.name.startswith(".cal.tmp_")]),
            "model_tmp": len([p for p in tmp.iterdir() if p.name.startswith("chemoscreen-model_")]),
            "versions": len(client.search_model_versions()),
        }
    # each kill left its own leftovers, and each calibrate cleaned those of the one killed before it
    assert seen == {
        "write-outputs": {"running": 0, "killed": 0, "staging": 1, "model_tmp": 0, "versions": 0},
        "log-artifacts": {"running": 1, "killed": 0, "staging": 1, "model_tmp": 0, "versions": 0},
        "write-model": {"running": 1, "killed": 1, "staging": 1, "model_tmp": 1, "versions": 0},
        "move-in": {"running": 1, "killed": 2, "staging": 1, "model_tmp": 0, "versions": 1},
    }, seen
    assert not (tmp_path / "cal").exists()
    experiment = client.get_experiment_by_name(store.CALIBRATION_EXPERIMENT).experiment_id
    left_running = {r.info.run_id for r in client.search_runs([experiment]) if r.info.status == "RUNNING"}

    result = chemoscreen(["calibrate", "p.npz", "--out", "cal", *FAST], tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = {r.info.run_id: r.info.status for r in store.search_all_runs(client, experiment)}
    assert {runs[run_id] for run_id in left_running} == {"KILLED"}  # the last one killed, too
    assert sorted(runs.values()) == ["FINISHED", "KILLED", "KILLED", "KILLED"]
    versions = client.search_model_versions()
    assert [runs[v.run_id] for v in versions] == ["FINISHED"]  # the killed run's version is gone
    doc = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert doc["mlflow"]["model_uri"] == f"models:/{store.MODEL_NAME}/{versions[0].version}"
    assert client.get_model_version_by_alias(store.MODEL_NAME, store.ALIAS).version == versions[0].version
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert [p.name for p in tmp.iterdir() if p.name.startswith("chemoscreen-")] == []


# ---------------------------------------------------------------------------------------------------
# the model store


class _Payload:
    """Unpickling this makes a folder: what an attacker's shell command would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_a_pickle_planted_as_champion_does_not_run_through_the_default_sweep(tmp_path, empty_store,
                                                                             chemoscreen):
    """Issue 20: a crafted data/model.pth planted in the artifact store ran a shell command at the next
    plain `chemoscreen sweep`. Plant one (MLflow's pytorch layout) as lfp-chemomech@champion: the default
    sweep refuses it with exit 2 and the payload never runs."""
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = store.open_store(uri)
    experiment = store.ensure_experiment(client, store.CALIBRATION_EXPERIMENT, uri)
    run = client.create_run(experiment)
    marker = tmp_path / "payload-ran"
    planted = tmp_path / "planted"
    (planted / "data").mkdir(parents=True)
    (planted / "MLmodel").write_text("flavors:\n  pytorch:\n    model_data: data\n    pytorch_version: 2.0\n"
                                     "  python_function:\n    loader_module: mlflow.pytorch\n")
    (planted / "data" / "model.pth").write_bytes(pickle.dumps(_Payload(marker)))
    client.log_artifacts(run.info.run_id, str(planted), artifact_path="law")
    client.set_terminated(run.info.run_id, "FINISHED")
    shutil.rmtree(planted)
    client.create_registered_model(store.MODEL_NAME)
    version = client.create_model_version(store.MODEL_NAME, source=f"{run.info.artifact_uri}/law",
                                          run_id=run.info.run_id)
    client.set_registered_model_alias(store.MODEL_NAME, store.ALIAS, version.version)
    # the payload is live: unpickled, it runs
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.is_dir() and not marker.exists()

    result = chemoscreen(["sweep", "--metals", "Fe,Mn", "--step", "0.5"], tmp_path, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--allow-pickle-model" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()
    assert client.get_experiment_by_name(store.SCREENING_EXPERIMENT) is None  # nothing was swept
