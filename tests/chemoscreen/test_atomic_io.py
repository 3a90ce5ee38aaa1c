"""chemoscreen.io on the real file system: atomic replacement, clean failure, and unwritable targets."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from chemoscreen.io import atomic_files, atomic_write
from mechanics.errors import InputError


class Boom(Exception):
    pass


def _write(text: str):
    return lambda tmp: tmp.write_text(text, encoding="utf-8")


def test_writes_the_file_and_leaves_no_temporary(tmp_path):
    target = atomic_write(tmp_path / "a.txt", _write("new"), field="--out")
    assert target == tmp_path / "a.txt" and target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_the_file_gets_the_mode_of_a_plain_write(tmp_path):
    (tmp_path / "plain.txt").write_text("x")
    plain = (tmp_path / "plain.txt").stat().st_mode & 0o777
    new = atomic_write(tmp_path / "new.txt", _write("x"), field="--out")
    assert new.stat().st_mode & 0o777 == plain  # not mkstemp's 0o600
    new.chmod(0o640)
    atomic_write(new, _write("y"), field="--out")
    assert new.stat().st_mode & 0o777 == 0o640 and new.read_text() == "y"


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise Boom

    with pytest.raises(Boom):
        atomic_write(target, half_then_fail, field="--out")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_missing_folder_is_an_input_error_unless_parents_are_made(tmp_path):
    target = tmp_path / "no" / "such" / "a.txt"
    with pytest.raises(InputError) as info:
        atomic_write(target, _write("x"), field="--out")
    assert info.value.field == "--out" and "does not exist" in str(info.value)
    assert not (tmp_path / "no").exists()
    atomic_write(target, _write("x"), field="--out", make_parents=True)
    assert target.read_text() == "x"


@pytest.mark.parametrize("make_parents", [False, True])
@pytest.mark.parametrize("depth", ["direct", "deeper"])
def test_a_path_under_a_file_is_an_input_error(tmp_path, make_parents, depth):
    blocker = tmp_path / "file.txt"
    blocker.write_text("keep")
    target = blocker / "a.csv" if depth == "direct" else blocker / "sub" / "a.csv"
    with pytest.raises(InputError) as info:
        atomic_write(target, _write("x"), field="--out", make_parents=make_parents)
    assert info.value.field == "--out" and f"{blocker} is a file" in str(info.value)
    assert blocker.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_a_target_that_is_a_folder_is_an_input_error(tmp_path):
    (tmp_path / "out.csv").mkdir()
    with pytest.raises(InputError, match="folder of that name exists"):
        atomic_write(tmp_path / "out.csv", _write("x"), field="--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]




def test_a_read_only_folder_is_an_input_error(read_only_folder):
    target = read_only_folder / "chemoscreen-atomic-test.csv"
    with pytest.raises(InputError) as info:
        atomic_write(target, _write("x"), field="--out")
    assert info.value.field == "--out" and "writable folder" in str(info.value)
    assert not target.exists()
    assert not any(p.name.startswith(".chemoscreen-atomic-test") for p in read_only_folder.iterdir())


def test_staged_files_appear_together_or_not_at_all(tmp_path):
    main, side = tmp_path / "set.tif", tmp_path / "set.json"
    with pytest.raises(Boom), atomic_files(field="--out") as staging:
        staging.temp(main).write_text("pages")
        staging.temp(side).write_text("{}")
        raise Boom
    assert list(tmp_path.iterdir()) == []
    with atomic_files(field="--out") as staging:
        tmp = staging.temp(main)
        assert tmp.parent == tmp_path and tmp.name.startswith(".set.tif.") and tmp.suffix == ".tif"
        tmp.write_text("pages")
        staging.temp(side).write_text("{}")
    assert main.read_text() == "pages" and side.read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set.json", "set.tif"]


def test_owned_temporary_folders_of_dead_processes_are_found_and_removed(tmp_path):
    """A folder named by owner_prefix is stale once its process is gone: exited and reaped, or killed and
    not yet reaped (a zombie still answers kill(pid, 0)). Live owners, other hosts and other names stay."""
    import subprocess
    import sys

    from chemoscreen.io import owner_prefix, process_alive, remove_stale

    reaped = subprocess.Popen([sys.executable, "-c", "pass"])
    reaped.wait()
    zombie = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    zombie.kill()
    deadline = time.monotonic() + 30
    while process_alive(zombie.pid):  # SIGKILL is asynchronous; the zombie stays until wait()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert os.path.exists(f"/proc/{zombie.pid}") or not os.path.isdir("/proc")  # not reaped yet
    assert process_alive(os.getpid()) and not process_alive(reaped.pid)
    names = {"reaped": owner_prefix("x.tmp", reaped.pid) + "a",
             "zombie": owner_prefix("x.tmp", zombie.pid) + "b", "live": owner_prefix("x.tmp") + "c",
             "other-host": f"x.tmp_elsewhere_{reaped.pid}_d",
             "other-name": owner_prefix("y.tmp", reaped.pid) + "e"}
    for name in names.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text("x")
    removed = remove_stale(tmp_path, "x.tmp")
    zombie.wait()
    assert sorted(p.name for p in removed) == sorted([names["reaped"], names["zombie"]])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [names["live"], names["other-host"], names["other-name"]])
