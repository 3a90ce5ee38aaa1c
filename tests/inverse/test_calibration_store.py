"""The calibration's edge (inverse.tracking) on a real SQLite store: outputs and store checked before the fit,
a failed commit undone step by step (the previous alias and output directory come back), and what a killed
calibration left (a RUNNING run, its staging directory, an unaliased version) cleaned by the next one."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from chemoscreen import store
from chemoscreen.io import owner_prefix
from inverse import calibrate, synthesize
from inverse.tracking import HOST_TAG, PID_TAG, log_calibration, prepare_outputs
from mechanics.errors import InputError


@pytest.fixture(scope="module")
def cal16():
    """The smallest real calibration (16² set, no bootstrap, no joint rounds): about a second."""
    images = synthesize(size_px=16, oversample=1, seed=1, n_dislocations=0)
    return calibrate(images, n_bootstrap=0, n_joint=0)


@pytest.fixture
def workdir(tmp_path, monkeypatch, empty_store):
    """A working directory holding a fresh store (``mlflow.db``, schema only)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    return tmp_path


def _uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _read_only_folder() -> Path | None:
    """A folder this process cannot create entries in, even as root (sysfs refuses new files)."""
    folder = Path("/sys/kernel")
    if not folder.is_dir():
        return None
    try:
        (folder / "chemoscreen-probe").mkdir()
    except OSError:
        return folder
    (folder / "chemoscreen-probe").rmdir()
    return None


READ_ONLY = _read_only_folder()


@pytest.mark.parametrize(("case", "field"), [
    ("out-is-a-file", "--out"),
    ("out-under-a-file", "--out"),
    ("out-read-only", "--out"),
    ("register-empty", "--register"),
    ("register-slash", "--register"),
    ("register-at", "--register"),
    ("tracking-unreachable", "--tracking-uri"),
    ("tracking-missing-folder", "--tracking-uri"),
    ("tracking-read-only", "--tracking-uri"),
    ("tracking-corrupt-db", "--tracking-uri"),
])
def test_bad_outputs_are_refused_before_anything_is_written(workdir, case, field):
    """Issue 20: `--out FILE` failed after the fit and lost the alias; `--register bad/name` failed after
    the fit; `--register ""` was accepted; an unreachable server failed after 251 s. Each is refused by
    prepare_outputs (which the CLI calls before reading the images) and leaves the folder as it was."""
    (workdir / "afile").write_text("x")
    kwargs = {"out_dir": workdir / "cal", "tracking_uri": _uri(workdir), "register": "lfp-chemomech"}
    if case == "out-is-a-file":
        kwargs["out_dir"] = workdir / "afile"
    elif case == "out-under-a-file":
        kwargs["out_dir"] = workdir / "afile" / "sub" / "cal"
    elif case == "out-read-only":
        if READ_ONLY is None:
            pytest.skip("no folder here refuses new entries to this user")
        kwargs["out_dir"] = READ_ONLY / "cal"
    elif case.startswith("register"):
        kwargs["register"] = {"register-empty": "", "register-slash": "bad/name", "register-at": "a@b"}[case]
    elif case == "tracking-unreachable":
        kwargs["tracking_uri"] = f"http://127.0.0.1:{_closed_port()}"
    elif case == "tracking-corrupt-db":  # checked after the staging folder was made: it must go again
        (workdir / "corrupt.db").write_bytes(bytes(range(256)) * 8)
        kwargs["tracking_uri"] = f"sqlite:///{workdir / 'corrupt.db'}"
    elif case == "tracking-read-only":  # MLflow retried this for about 100 s before failing
        if READ_ONLY is None:
            pytest.skip("no folder here refuses new entries to this user")
        kwargs["tracking_uri"] = f"sqlite:///{READ_ONLY / 'mlflow.db'}"
    else:
        kwargs["tracking_uri"] = f"sqlite:///{workdir / 'missing' / 'mlflow.db'}"
    before = sorted(p.name for p in workdir.iterdir())
    with pytest.raises(InputError) as info:
        prepare_outputs(**kwargs)
    assert info.value.field == field
    assert sorted(p.name for p in workdir.iterdir()) == before  # no store, no staging folder, no output


class _StoreFailsAfterTheAliasMoved:
    """Fault injection on the real store: every call goes to the SQLite client; only marking the run
    FINISHED, the step after the alias moved, raises (as a server going away at that moment would)."""

    def __init__(self, client):
        self._client = client

    def __getattr__(self, name):
        return getattr(self._client, name)

    def set_terminated(self, run_id, status=None, end_time=None):
        if status == "FINISHED":
            from mlflow.exceptions import MlflowException

            raise MlflowException("tracking server went away")
        return self._client.set_terminated(run_id, status, end_time)


def _state(client, out: Path):
    versions = sorted(int(v.version) for v in client.search_model_versions("name = 'lfp-chemomech'"))
    try:
        champion = int(client.get_model_version_by_alias("lfp-chemomech", store.ALIAS).version)
    except Exception:  # noqa: BLE001 (MlflowException: no such alias or model)
        champion = None
    doc = json.loads((out / "calibration.json").read_text()) if (out / "calibration.json").exists() else None
    return versions, champion, doc


@pytest.mark.parametrize("failure", ["after-alias", "out-became-a-file"])
def test_a_failed_commit_restores_the_previous_alias_and_output(workdir, cal16, failure):
    uri, out = _uri(workdir), workdir / "cal"
    first = log_calibration(cal16, out_dir=out, tracking_uri=uri)
    client = store.open_store(uri)
    before = _state(client, out)
    assert before[:2] == ([1], 1) and before[2]["mlflow"]["run_id"] == first.mlflow["run_id"]

    outputs = prepare_outputs(out, tracking_uri=uri)
    if failure == "after-alias":
        outputs.client = _StoreFailsAfterTheAliasMoved(outputs.client)
        expected = Exception
    else:  # another process put a file where the output directory goes, after the check
        (workdir / "other").mkdir()
        out.rename(workdir / "other" / "cal")
        out.write_text("not a directory")
        expected = InputError
    with outputs, pytest.raises(expected):
        log_calibration(cal16, outputs=outputs)

    versions, champion, _ = _state(client, out)
    assert versions == [1] and champion == 1  # the new version is gone, the alias where it was
    if failure == "after-alias":
        assert json.loads((out / "calibration.json").read_text()) == before[2]  # previous OUT is back
    else:
        assert out.read_text() == "not a directory"
    experiment = client.get_experiment_by_name(store.CALIBRATION_EXPERIMENT)
    statuses = sorted(r.info.status for r in client.search_runs([experiment.experiment_id]))
    assert statuses == ["FAILED", "FINISHED"]
    assert not [p.name for p in workdir.iterdir() if p.name.startswith(".")]  # no staging or aside folder


def test_a_failed_first_registration_leaves_no_model_and_no_alias(workdir, cal16):
    uri = _uri(workdir)
    outputs = prepare_outputs(workdir / "sub" / "cal", tracking_uri=uri)
    outputs.client = _StoreFailsAfterTheAliasMoved(outputs.client)
    with outputs, pytest.raises(Exception, match="went away"):
        log_calibration(cal16, outputs=outputs)
    client = store.open_store(uri)
    assert client.search_registered_models() == []
    assert not (workdir / "sub").exists()  # the folder made for --out is removed again


def test_leftovers_of_killed_calibrations_are_cleaned_by_the_next(workdir, cal16):
    """What a SIGKILL leaves (a run RUNNING, its unaliased model version, a staging folder) is found by its
    host and pid tags and its folder name, and cleaned when that process is gone; a live one is left alone.
    (tests/e2e/test_failures_calibrate.py kills real calibrate processes.)"""
    from chemoscreen.io import host_name
    from chemoscreen.models import log_model

    uri, out = _uri(workdir), workdir / "cal"
    log_calibration(cal16, out_dir=out, tracking_uri=uri)  # creates the store and the experiment
    client = store.open_store(uri)
    experiment = client.get_experiment_by_name(store.CALIBRATION_EXPERIMENT).experiment_id
    dead, live = _dead_pid(), os.getpid()
    runs, versions = {}, {}
    for name, pid in (("dead", dead), ("live", live), ("dead-champion", dead)):
        run = client.create_run(experiment, tags={HOST_TAG: host_name(), PID_TAG: str(pid)})
        versions[name] = log_model(client, run.info.run_id, cal16.law, artifact_path="law",
                                   register="lfp-chemomech")
        runs[name] = run.info.run_id
        (workdir / f"{owner_prefix('.cal.tmp', pid)}{name}").mkdir()
    # killed after its alias moved: the version is complete and in use, so it stays
    client.set_registered_model_alias("lfp-chemomech", store.ALIAS, versions["dead-champion"])
    other_host = client.create_run(experiment, tags={HOST_TAG: "elsewhere", PID_TAG: str(dead)})

    with prepare_outputs(out, tracking_uri=uri):
        pass

    assert client.get_run(runs["dead"]).info.status == "KILLED"
    assert client.get_run(runs["dead-champion"]).info.status == "KILLED"
    assert client.get_run(runs["live"]).info.status == "RUNNING"
    assert client.get_run(other_host.info.run_id).info.status == "RUNNING"  # its pid means nothing here
    by_run = {v.run_id for v in client.search_model_versions("name = 'lfp-chemomech'")}
    assert runs["live"] in by_run and runs["dead-champion"] in by_run and runs["dead"] not in by_run
    champion = client.get_model_version_by_alias("lfp-chemomech", store.ALIAS)
    assert str(champion.version) == versions["dead-champion"]
    left = sorted(p.name for p in workdir.iterdir() if p.name.startswith(".cal.tmp"))
    assert left == [f"{owner_prefix('.cal.tmp', live)}live"]
    client.set_terminated(runs["live"], "FINISHED")
