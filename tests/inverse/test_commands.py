"""``chemoscreen synth`` / ``calibrate`` end to end with a real SQLite MLflow store in a temp dir."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from inverse import save_images, synthesize
from inverse.commands import register
from inverse.images import as_mapping
from inverse.tracking import load_law


def run(argv):
    parser = argparse.ArgumentParser(prog="chemoscreen")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def test_synth_calibrate_register_load(workdir, capsys):
    from mlflow import MlflowClient

    assert run(["synth", "--out", "p.npz", "--size", "32", "--seed", "3", "--dislocations", "1"]) == 0
    assert run(["calibrate", "p.npz", "--out", "cal", "--bootstrap", "4", "--n-knots", "6"]) == 0
    out = capsys.readouterr().out
    assert "registered models:/lfp-chemomech/1 (alias champion)" in out
    doc = json.loads((workdir / "cal" / "calibration.json").read_text())
    assert doc["mlflow"]["model_uri"] == "models:/lfp-chemomech/1"
    assert doc["inputs"][0]["path"].endswith("p.npz") and len(doc["inputs"][0]["sha256"]) == 64
    assert {p.name for p in (workdir / "cal").iterdir()} >= {"calibration.json", "residual.npz", "law.png",
                                                            "maps_p0.png"}
    with np.load(workdir / "cal" / "residual.npz", allow_pickle=False) as res:
        assert res["p0_residual_aa"].shape == (32, 32) and "p0_hotspots" in res.files

    # default store: ./mlflow.db with artifacts in ./mlartifacts
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name("chemoscreen-calibration")
    assert exp.artifact_location == (workdir / "mlartifacts").as_uri()
    champion = client.get_model_version_by_alias("lfp-chemomech", "champion")
    assert str(champion.version) == "1"
    run_info = client.get_run(doc["mlflow"]["run_id"])
    assert run_info.info.status == "FINISHED"
    assert run_info.data.metrics["slope_a"] == pytest.approx(doc["vegard"]["slope_a"])
    assert "calibration.json" in {a.path for a in client.list_artifacts(run_info.info.run_id)}

    # the registered law loads without the data and evaluates ε⁰(X) for a tensor
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    law = load_law("models:/lfp-chemomech@champion")
    x = torch.tensor(doc["law"]["X"], dtype=torch.float64)
    eps = law(x).detach().numpy()
    np.testing.assert_allclose(eps[:, 0], doc["law"]["eigenstrain"]["a"], atol=1e-12)
    np.testing.assert_allclose(eps[:, 2], doc["law"]["eigenstrain"]["c"], atol=1e-12)
    # the version stores the law's posterior: one law per bootstrap replicate, whose spread at the knots
    # is the bootstrap std of calibration.json (ddof = 1, as the calibration computes it)
    from chemoscreen.models import load_model

    stored = load_model("models:/lfp-chemomech@champion", tracking_uri=uri)
    assert stored.kind == "eigenstrain-law/piecewise-linear" and len(stored.samples) == 4
    spread = np.stack([s(x).detach().numpy() for s in stored.samples]).std(axis=0, ddof=1)
    assert np.all(spread[:, 0] <= np.asarray(doc["law"]["std"]["a"]) + 1e-15)
    assert spread[1:, 0].max() > 0

    # --no-promote: a new version, the alias stays where it was
    fast = ["--bootstrap", "0", "--joint", "0"]
    assert run(["calibrate", "p.npz", "--out", "cal2", *fast, "--no-promote"]) == 0
    assert str(client.get_model_version_by_alias("lfp-chemomech", "champion").version) == "1"
    assert len(client.search_model_versions("name='lfp-chemomech'")) == 2

    # a name MLflow would refuse only after the fit is refused before any work (issue 20)
    assert run(["calibrate", "p.npz", "--out", "cal3", *fast, "--register", "bad/name"]) == 2
    assert "error: --register: expected a model name" in capsys.readouterr().err
    assert not (workdir / "cal3").exists()
    assert not [p for p in workdir.iterdir() if p.name.startswith(".cal3")]
    assert len(client.search_model_versions("name='lfp-chemomech'")) == 2
    assert len(client.search_runs([exp.experiment_id])) == 2

    # bad input: exit code 2, message names the field, nothing written
    assert run(["calibrate", "missing.npz", "--out", "cal4"]) == 2
    assert "error: images: expected an existing image-set file" in capsys.readouterr().err
    assert not (workdir / "cal4").exists()
    assert len(client.search_model_versions("name='lfp-chemomech'")) == 2


def test_synth_rejects_bad_options(workdir, capsys):
    assert run(["synth", "--out", "p.txt"]) == 2
    assert "error: --out:" in capsys.readouterr().err
    assert run(["synth", "--out", "p.npz", "--law", "nope.csv"]) == 2
    assert "error: law:" in capsys.readouterr().err
    assert not (workdir / "p.npz").exists()


def test_calibrate_options_psf_device_solver(workdir, capsys):
    """The PSFs, the device and the solver reach the fit and the MLflow run; bad values exit 2 with the
    option's name and leave no output directory."""
    from mlflow import MlflowClient

    assert run(["synth", "--out", "p.npz", "--size", "32", "--seed", "2", "--dislocations", "0"]) == 0
    assert run(["calibrate", "p.npz", "--out", "cal", "--bootstrap", "2", "--joint", "1",
                "--strain-psf-nm", "10", "--composition-psf-nm", "10", "--solver", "pcg",
                "--device", "cpu"]) == 0
    assert "solves: pcg on cpu" in capsys.readouterr().out
    run_id = json.loads((workdir / "cal" / "calibration.json").read_text())["mlflow"]["run_id"]
    data = MlflowClient("sqlite:///mlflow.db").get_run(run_id).data
    params, metrics = data.params, data.metrics
    # basis solves (prepare, one joint round) and the X-step's forward/adjoint pairs, each a few CG steps
    assert metrics["pcg_solves"] >= 4 and metrics["pcg_iterations"] > 3 * metrics["pcg_solves"]
    assert metrics["time_joint_s"] > 0 and metrics["time_prepare_s"] > 0
    assert params["strain_psf_nm"] == "10.0" and params["solver"] == "pcg" and params["device"] == "cpu"
    assert params["rim"] == "partial coverage"  # synth writes the coverage map, calibrate uses it

    # without the coverage map (or told to ignore it) the outline is the mask's staircase
    assert run(["synth", "--out", "q.npz", "--size", "32", "--seed", "2", "--dislocations", "0",
                "--no-coverage"]) == 0
    assert "coverage" not in np.load(workdir / "q.npz").files
    for name, argv in (("q.npz", []), ("p.npz", ["--ignore-coverage"])):
        assert run(["calibrate", name, "--out", f"stair-{name}", "--bootstrap", "0", "--no-track",
                    *argv]) == 0
        assert "outline: pixel staircase" in capsys.readouterr().out

    assert run(["calibrate", "p.npz", "--out", "bad1", "--strain-psf-nm", "-3"]) == 2
    assert "strain_psf_nm" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert run(["calibrate", "p.npz", "--out", "bad2", "--device", "cuda"]) == 2
        assert "device" in capsys.readouterr().err
    assert run(["calibrate", "p.npz", "--out", "bad3", "--device", "tpu9"]) == 2
    assert "device" in capsys.readouterr().err
    assert not any((workdir / d).exists() for d in ("bad1", "bad2", "bad3"))


def _read_only_folder():
    """A folder this process cannot create entries in, even as root (sysfs refuses new files), or None."""
    from pathlib import Path

    folder = Path("/sys/kernel")
    try:
        (folder / "chemoscreen-probe").mkdir()
    except OSError:
        return folder if folder.is_dir() else None
    (folder / "chemoscreen-probe").rmdir()
    return None


@pytest.mark.parametrize("where", ["under-a-file", "read-only"])
def test_unwritable_out_exits_2_naming_it_before_any_work(workdir, capsys, where):
    """Issue 20: --out under a file or on a read-only file system raised OSError / FileExistsError after
    the work, not naming --out. Both commands now refuse it first (synth: nothing synthesized; calibrate:
    nothing fitted, no store touched)."""
    (workdir / "afile").write_text("x")
    if where == "read-only":
        folder = _read_only_folder()
        if folder is None:
            pytest.skip("no folder here refuses new entries to this user")
    else:
        folder = workdir / "afile" / "sub"
    assert run(["synth", "--out", str(folder / "p.npz"), "--size", "16"]) == 2
    assert "chemoscreen synth: error: --out: expected" in capsys.readouterr().err
    images = synthesize(size_px=16, oversample=1, seed=1, n_dislocations=0)
    save_images(images, workdir / "p.npz")
    assert run(["calibrate", "p.npz", "--out", str(folder / "cal"), "--bootstrap", "0"]) == 2
    captured = capsys.readouterr()
    assert "chemoscreen calibrate: error: --out: expected" in captured.err and "fit:" not in captured.out
    assert sorted(p.name for p in workdir.iterdir()) == ["afile", "p.npz"]


def _damaged(images, kind: str) -> dict:
    data = {k: np.asarray(v) for k, v in as_mapping(images).items()}
    inside = tuple(np.argwhere(images.mask)[len(np.argwhere(images.mask)) // 2])
    if kind == "inf-composition":
        data["composition"] = data["composition"].copy()
        data["composition"][inside] = np.inf
    elif kind == "sigma-1":
        data["composition_sigma"] = np.asarray(1.0)
    elif kind == "one-pixel-mask":
        data["mask"] = np.zeros_like(images.mask)
        data["mask"][inside] = True
    return data


@pytest.mark.parametrize(("kind", "field", "said"), [
    ("inf-composition", "composition", "infinite pixels"),
    ("sigma-1", "composition_sigma", "<= 0.1"),
    ("one-pixel-mask", "mask", "at least 9 particle pixels"),
    ("empty", "images", "empty file"),
    ("random-bytes", "images", "not a zip archive"),
])
def test_bad_image_files_exit_2_before_anything_is_written(workdir, capsys, kind, field, said):
    """Issue 20: +inf X was read as missing and promoted to champion; composition_sigma = 1 let X in
    [-1.7, 2.7] through; a one-pixel mask raised LinAlgError; empty or foreign .npz raised BadZipFile or
    were called "pickled objects". Each is exit 2 naming the field, with no store and no output."""
    path = workdir / "bad.npz"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(2048))
    else:
        np.savez(path, **_damaged(synthesize(size_px=16, oversample=1, seed=1, n_dislocations=0), kind))
    assert run(["calibrate", "bad.npz", "--out", "cal"]) == 2
    err = capsys.readouterr().err
    assert f"chemoscreen calibrate: error: {field}: expected" in err and said in err, err
    assert "pickle" not in err
    assert sorted(p.name for p in workdir.iterdir()) == ["bad.npz"]


def test_synth_refuses_a_law_table_with_nan(workdir, capsys):
    """Issue 20: NaN in a law CSV wrote an all-NaN file with exit 0."""
    (workdir / "law.csv").write_text("X,a,c\n0,0,0\n0.5,nan,0.01\n1,0.05,-0.02\n")
    assert run(["synth", "--out", "p.npz", "--size", "16", "--law", "law.csv"]) == 2
    assert "chemoscreen synth: error: law: expected finite numbers" in capsys.readouterr().err
    assert not (workdir / "p.npz").exists()
