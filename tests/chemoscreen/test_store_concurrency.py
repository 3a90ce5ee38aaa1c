"""chemoscreen.store under concurrency and on broken stores: creation is serialised, bad files fail fast."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from chemoscreen import store
from mechanics.errors import InputError

REPO = Path(__file__).resolve().parents[2]

OPENER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from chemoscreen import store
    import mlflow  # imported before the start signal: the processes then race on the schema only
    folder = Path(sys.argv[1])
    (folder / f"ready-{sys.argv[2]}").touch()
    while not (folder / "go").exists():
        time.sleep(0.005)
    client = store.open_store(f"sqlite:///{folder / 'mlflow.db'}")
    store.ensure_experiment(client, "race", f"sqlite:///{folder / 'mlflow.db'}")
    print("opened")
""")


def _open_at_once(folder: Path, count: int) -> list[subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    processes = [subprocess.Popen([sys.executable, "-c", OPENER, str(folder), str(i)], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(count)]
    deadline = time.monotonic() + 120
    while len(list(folder.glob("ready-*"))) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    (folder / "go").touch()
    results = []
    for process in processes:
        out, err = process.communicate(timeout=180)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


def test_processes_opening_a_fresh_sqlite_store_at_once_all_succeed(tmp_path):
    """Without the creation lock one of two processes crashed on ``duplicate column name: step``.

    Two processes, released together after their imports, open the same new store; each must exit
    0 and find one experiment. Without the lock one of the two crashed in each of 3 tries here.
    """
    results = _open_at_once(tmp_path, 2)
    for result in results:
        assert result.returncode == 0 and "opened" in result.stdout, result.stderr[-3000:]
    client = store.open_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [e.name for e in client.search_experiments() if e.name == "race"] == ["race"]


def test_a_file_that_is_not_a_database_is_an_input_error(tmp_path):
    for name, content in (("text.db", b"not a database at all, just text\n" * 40),
                          ("zeros.db", b"SQLite format 3\x00" + b"\x00" * 4000)):
        path = tmp_path / name
        path.write_bytes(content)
        start = time.perf_counter()
        with pytest.raises(InputError, match="--tracking-uri") as info:
            store.open_store(f"sqlite:///{path}")
        assert "not a usable database" in str(info.value)
        assert time.perf_counter() - start < 30  # no retry loop (MLflow's own retries took 105 s)
        assert path.read_bytes() == content  # the file is left as it was


@pytest.mark.parametrize("uri", ["foo://host/db", "s3://bucket/mlflow", "ftp://host/x.db"])
def test_an_unknown_uri_scheme_is_refused_by_the_probe(uri):
    with pytest.raises(InputError, match="--tracking-uri") as info:
        store.probe_tracking_uri(uri)
    assert "known kind" in str(info.value)




def test_a_sqlite_store_in_a_read_only_folder_fails_fast(read_only_folder):
    start = time.perf_counter()
    with pytest.raises(InputError, match="--tracking-uri") as info:
        store.open_store(f"sqlite:///{read_only_folder / 'chemoscreen-test.db'}")
    assert "writable folder" in str(info.value)
    assert time.perf_counter() - start < 10  # refused before MLflow opens (and retries) anything
    assert not list(read_only_folder.glob("chemoscreen-test.db*"))
