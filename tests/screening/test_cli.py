"""``chemoscreen`` error handling in process (``screening.cli.main``): bad input exits 2 naming the
field before any work and writes nothing; any other failure prints one line and keeps the traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from chemoscreen import store
from screening import cli, tracking


def _run(argv, capsys) -> tuple[int, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.err


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}




@pytest.fixture(autouse=True)
def _no_inherited_store(monkeypatch):
    """Commands use the working directory's store: ``mlflow.set_tracking_uri`` (called while ranking)
    also sets ``MLFLOW_TRACKING_URI``, which monkeypatch restores after each test."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def _ranked_store(tmp_path_factory):
    """A store holding one sweep (parent + two FINISHED children) whose ranking is already logged.

    Made once (a fresh schema takes seconds); each test compares the folder before and after.
    """
    tmp_path = tmp_path_factory.mktemp("ranked")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = store.open_store(uri)
    experiment_id = store.ensure_experiment(client, store.SCREENING_EXPERIMENT, uri)
    parent = client.create_run(experiment_id, tags={"sweep_id": "abcdefabcdef"}).info.run_id
    for k, (energy, stress, volume) in enumerate(((500.0, 900.0, 6.0), (600.0, 1200.0, 8.0))):
        child = client.create_run(experiment_id, tags={tracking.PARENT_TAG: parent,
                                                       "candidate_id": f"{k:016x}", "formula": f"F{k}"})
        tracking.log_metrics(client, child.info.run_id, {"specific_energy_Wh_kg": energy,
                                                          "peak_tensile_stress_MPa": stress,
                                                          "volume_change_pct": volume})
        for metal, fraction in (("Fe", 1.0 - 0.5 * k), ("Mn", 0.5 * k)):  # the composition, as logged
            client.log_param(child.info.run_id, f"x_{metal}", fraction)
        client.set_terminated(child.info.run_id, "FINISHED")
    client.log_text(parent, "rank,formula\n1,F0\n", "ranking/ranking.csv")
    return tmp_path, client, parent


@pytest.fixture
def ranked_store(_ranked_store, monkeypatch):
    monkeypatch.chdir(_ranked_store[0])
    return _ranked_store


@pytest.mark.parametrize("weights", ["nan,1,1", "inf,1,1", "1,1", "1,1,1,1", "0,0,0", "=-1,1,1", "a,b,c"])
def test_bad_rank_weights_exit_2_and_write_nothing(ranked_store, capsys, weights):
    """Before: ``--weights nan,1,1`` exited 0 with every score NaN and overwrote the parent's ranking."""
    folder, _, _ = ranked_store
    before = _tree(folder)  # the database and the parent's ranking artifacts (mlartifacts/) included
    argv = ["rank", f"--weights{weights}"] if weights.startswith("=") else ["rank", "--weights", weights]
    code, err = _run(argv, capsys)
    assert code == 2 and "--weights" in err and "Traceback" not in err
    assert _tree(folder) == before  # no ranking.csv, no plot, the store and its artifacts untouched


def test_good_rank_weights_rank_the_sweep(ranked_store, capsys):
    folder, client, parent = ranked_store
    code, err = _run(["rank", "--weights", "1,0,0", "--out", "r.csv"], capsys)
    assert code == 0, err
    assert (folder / "r.csv").read_text().count("\n") == 3  # header + two candidates
    (folder / "r.csv").unlink()


@pytest.mark.parametrize("command", [["candidates", "--out", "{blocker}/x.csv"],
                                     ["rank", "--out", "{blocker}/r.csv"],
                                     ["demo", "--out", "{blocker}/demo"]])
def test_out_under_a_file_exits_2_naming_out(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blocker").write_text("keep")
    code, err = _run([a.format(blocker="blocker") for a in command], capsys)
    assert code == 2 and "--out" in err and "is a file" in err
    assert _tree(tmp_path) == {"blocker": b"keep"}


@pytest.mark.parametrize("command", [["candidates", "--out", "{ro}/chemoscreen-x.csv"],
                                     ["rank", "--out", "{ro}/chemoscreen-r.csv"],
                                     ["demo", "--out", "{ro}/chemoscreen-demo"]])
def test_out_in_a_read_only_folder_exits_2_naming_out(tmp_path, monkeypatch, capsys, read_only_folder,
                                                      command):
    monkeypatch.chdir(tmp_path)
    code, err = _run([a.format(ro=read_only_folder) for a in command], capsys)
    assert code == 2 and "--out" in err and "writable folder" in err
    assert not list(read_only_folder.glob("chemoscreen-*")) and _tree(tmp_path) == {}


@pytest.mark.parametrize(("argv", "field"), [
    (["demo", "--num-cpus", "-1"], "--num-cpus"),
    (["sweep", "--law", "vegard", "--particle-padding-cells", "-5"], "--particle-padding-cells"),
    (["sweep", "--law", "vegard", "--step", "0.001"], "--step"),
    (["candidates", "--step", "0.001"], "--step"),
    (["candidates", "--max-candidates", "0"], "--max-candidates"),
    (["sweep", "--law", "vegard", "--tracking-uri", "foo://host/x"], "--tracking-uri"),
], ids=["demo-num-cpus", "padding", "sweep-space-too-large", "candidates-space-too-large", "max-candidates",
        "unknown-scheme"])
def test_bad_input_exits_2_naming_the_field_before_any_work(tmp_path, monkeypatch, capsys, argv, field):
    monkeypatch.chdir(tmp_path)
    code, err = _run(argv, capsys)
    assert code == 2 and f"error: {field}" in err and "Traceback" not in err, err
    assert _tree(tmp_path) == {}  # nothing simulated, no candidates built, no store, no demo folder


def test_a_model_that_is_not_in_the_store_exits_2_naming_model(tmp_path, monkeypatch, capsys):
    """Before: ``--model runs:/missing`` or a file path failed with a traceback (exit 1)."""
    monkeypatch.chdir(tmp_path)
    for model in ("runs:/missing", f"runs:/{'0' * 32}/model", "model.pth", str(tmp_path / "law.pth")):
        code, err = _run(["sweep", "--model", model, "--step", "0.5"], capsys)
        assert code == 2 and "--model:" in err and "Traceback" not in err, err
    assert set(_tree(tmp_path)) <= {"mlflow.db", "mlflow.db.lock"}  # the store is opened to look


def test_a_large_space_is_allowed_when_max_candidates_says_so(capsys):
    assert cli.space_size(4, 0.001) == 167_668_501  # C(1003, 3)
    assert cli.space_size(4, 0.25) == 35 and cli.space_size(2, 0.5) == 3 and cli.space_size(1, 0.5) == 1
    cli.check_space_size(("Fe", "Mn"), 0.001, 1001)  # C(1001, 1) = 1001 candidates
    with pytest.raises(cli.InputError, match="--step"):
        cli.check_space_size(("Fe", "Mn"), 0.001, 1000)


def test_a_corrupt_store_exits_2_naming_the_tracking_uri(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlflow.db").write_bytes(b"this is not an sqlite database\n" * 64)
    code, err = _run(["rank"], capsys)
    assert code == 2 and "--tracking-uri" in err and "not a usable database" in err


def test_an_unexpected_failure_prints_one_line_and_keeps_the_traceback(tmp_path, monkeypatch, capsys):
    """Before: every exit-1 error printed a traceback to the user."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv(cli.DEBUG_VARIABLE, raising=False)

    def broken(args):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(cli, "cmd_candidates", broken)  # the parser binds the handler when built
    code, err = _run(["candidates"], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("chemoscreen candidates: failed: RuntimeError: disk on fire second line")
    (log,) = (tmp_path / "state" / "chemoscreen" / "logs").iterdir()
    assert str(log) in lines[0] and "--debug" in lines[0]
    assert "Traceback" in log.read_text() and "disk on fire" in log.read_text()
    assert log.stat().st_mode & 0o077 == 0  # tracebacks name paths: readable by the user only
    code, err = _run(["candidates", "--debug"], capsys)
    assert code == 1 and "Traceback" in err and "RuntimeError" in err
    assert len(list((tmp_path / "state" / "chemoscreen" / "logs").iterdir())) == 1


@pytest.mark.parametrize(("argv", "field", "words"), [
    (["candidates", "--dopant", "Mg"], "--dopant", "EL=LEVEL"),
    (["candidates", "--dopant", "Mg=x"], "--dopant", "numeric"),
    (["candidates", "--dopant", "Mg=0.1", "--dopant", "Mg=0.05"], "--dopant", "each dopant once"),
    (["candidates", "--dopant", "Fe=0.1"], "--dopant", "inactive dopant"),
    (["candidates", "--dopant", "Mg=0.5"], "--dopant", "levels in [0, 0.2]"),
    (["sweep", "--law", "vegard", "--step", "0.02", "--dopant", "Mg=0,0.05"], "--step", "× 2 dopant levels"),
    (["candidates", "--compositions", "missing.csv"], "--compositions", "No such file"),
], ids=["no-levels", "not-a-number", "twice", "active-metal", "too-much", "too-large", "missing-file"])
def test_bad_dopant_or_compositions_exit_2_naming_the_field(tmp_path, monkeypatch, capsys, argv, field,
                                                            words):
    monkeypatch.chdir(tmp_path)
    code, err = _run(argv, capsys)
    assert code == 2 and f"error: {field}" in err and words in err and "Traceback" not in err, err
    assert _tree(tmp_path) == {}


@pytest.mark.parametrize(("text", "words"), [
    ("Fe,Mn\n0.9,0.3\n", "summing to 1 (within 1e-06) (line 2)"),
    ("Fe,Mn\n0.5,0.5\n1.0,zero\n", "line 3, column 'Mn' is not a number"),
    ("Fe,Mn\n0.5,0.5,0.1\n", "line 2 has more or fewer cells"),
    ("Fe,Mn\n", "no rows"),
    ("Fe,Xx\n0.5,0.5\n", "Xx"),
])
def test_a_bad_compositions_file_exits_2_naming_the_line(tmp_path, monkeypatch, capsys, text, words):
    (tmp_path / "pool.csv").write_text(text)
    monkeypatch.chdir(tmp_path)
    code, err = _run(["candidates", "--compositions", "pool.csv"], capsys)
    assert code == 2 and "error: --compositions" in err and words in err, err
    assert _tree(tmp_path) == {"pool.csv": text.encode()}


def test_dopant_levels_and_a_compositions_file_build_the_space(tmp_path, capsys):
    out = tmp_path / "space.csv"
    assert cli.main(["candidates", "--metals", "Fe,Mn", "--step", "0.5", "--dopant", "Mg=0,0.05",
                     "--out", str(out)]) == 0
    import pandas as pd

    table = pd.read_csv(out)
    assert len(table) == 6  # 3 grid points × 2 Mg levels
    assert sorted(table["formula"])[:2] == ["Li1Mg0.05Fe0.95P1O4", "Li1Mg0.05Mn0.475Fe0.475P1O4"]
    (tmp_path / "pool.csv").write_text("Fe,Mn,Mg\n0.9,0.07,0.03\n0.5,0.5,\n0.9,0.07,0.03\n")
    args = cli.build_parser().parse_args(["candidates", "--compositions", str(tmp_path / "pool.csv")])
    space = cli._space(args)
    assert [c.fractions for c in space] == [{"Fe": 0.9, "Mg": 0.03, "Mn": 0.07}, {"Fe": 0.5, "Mn": 0.5}]
    assert space[0].history[0]["generator"] == "compositions_file"  # provenance: the file it came from
    assert space[0].history[0]["parameters"]["file"] == "pool.csv"
    assert "compositions file=pool.csv" in cli._describe_space(args)
    capsys.readouterr()
