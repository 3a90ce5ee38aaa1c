"""The safe model format: round trips, and nothing from the store is ever unpickled or executed."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from chemoscreen import models
from mechanics.errors import InputError
from mechanics.laws import PiecewiseLinearLaw, VegardLaw


class _Payload:
    """Unpickling this writes a file: proof that code from the store ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code from the store ran"))


def _law(monotone: bool = False) -> PiecewiseLinearLaw:
    knots = np.linspace(0, 1, 6)
    values = np.stack([0.052 * knots + 0.004 * knots * (1 - knots), 0.038 * knots, -0.02 * knots])
    return PiecewiseLinearLaw(knots, values, monotone=monotone)


def test_law_round_trip_with_samples(tmp_path):
    law = _law(monotone=True)
    samples = law.values().detach().numpy()[None] * np.array([0.98, 1.0, 1.02])[:, None, None]
    models.write_model(law, tmp_path, samples=samples, metadata={"source": "test"})
    stored = models.read_model(tmp_path)
    x = torch.linspace(-0.05, 1.05, 23, dtype=torch.float64)
    assert stored.kind == "eigenstrain-law/piecewise-linear"
    assert stored.model.monotone
    assert torch.equal(stored.model(x), law(x))
    assert len(stored.samples) == 3
    assert torch.allclose(stored.samples[2](x), 1.02 * law(x), rtol=0, atol=1e-15)
    assert stored.metadata == {"source": "test"}
    manifest = json.loads((tmp_path / models.MANIFEST).read_text())
    assert manifest["n_samples"] == 3 and manifest["schema"] == models.SCHEMA


def test_vegard_round_trip(tmp_path):
    law = VegardLaw([0.05, 0.03, -0.02])
    models.write_model(law, tmp_path)
    x = torch.rand(7, dtype=torch.float64)
    assert torch.equal(models.read_model(tmp_path).model(x), law(x))


def test_an_object_array_is_refused_and_never_unpickled(tmp_path):
    models.write_model(_law(), tmp_path)
    marker = tmp_path / "ran.txt"
    # a crafted tensors.npz holding a pickled object, with the manifest's checksum updated to match
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload(marker)
    with open(tmp_path / models.TENSORS, "wb") as fh:
        np.savez(fh, knots_X=np.linspace(0, 1, 6), values=payload)
    manifest = json.loads((tmp_path / models.MANIFEST).read_text())
    manifest["tensors_sha256"] = models._sha256(tmp_path / models.TENSORS)
    (tmp_path / models.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="model"):
        models.read_model(tmp_path)
    assert not marker.exists()


def test_a_changed_file_fails_its_checksum(tmp_path):
    models.write_model(_law(), tmp_path)
    with open(tmp_path / models.TENSORS, "wb") as fh:
        np.savez(fh, knots_X=np.linspace(0, 1, 6), values=np.zeros((3, 6)))
    with pytest.raises(InputError, match="checksum"):
        models.read_model(tmp_path)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("kind", "python/pickle", "kind"),
    ("schema", "chemoscreen.model/0", "schema"),
])
def test_unknown_kind_or_schema_is_refused(tmp_path, key, value, message):
    models.write_model(_law(), tmp_path)
    manifest = json.loads((tmp_path / models.MANIFEST).read_text())
    manifest[key] = value
    (tmp_path / models.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=message):
        models.read_model(tmp_path)


def test_a_declared_shape_that_does_not_match_is_refused(tmp_path):
    models.write_model(_law(), tmp_path)
    manifest = json.loads((tmp_path / models.MANIFEST).read_text())
    manifest["tensors"]["values"]["shape"] = [3, 7]
    (tmp_path / models.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="values"):
        models.read_model(tmp_path)


@pytest.fixture()
def client(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    experiment = client.create_experiment("models", artifact_location=(tmp_path / "mlartifacts").as_uri())
    return client, uri, experiment


def test_registered_version_loads_by_alias_without_pickle(client):
    client, uri, experiment = client
    run = client.create_run(experiment)
    law = _law()
    version = models.log_model(client, run.info.run_id, law, artifact_path="law", register="lfp-test")
    client.set_registered_model_alias("lfp-test", "champion", version)
    stored = models.load_model("models:/lfp-test@champion", tracking_uri=uri)
    x = torch.linspace(0, 1, 9, dtype=torch.float64)
    assert torch.equal(stored.model(x), law(x))
    tags = client.get_model_version("lfp-test", version).tags
    assert tags[models.FORMAT_TAG] == models.SCHEMA
    with pytest.raises(InputError, match="model"):
        models.load_model("models:/lfp-test/7", tracking_uri=uri)


def test_a_pickled_version_planted_in_the_store_does_not_run(client, tmp_path):
    """An MLmodel + data/model.pth with a payload (the old pickle format) is refused unless opted in."""
    client, uri, experiment = client
    run = client.create_run(experiment)
    marker = tmp_path / "ran.txt"
    planted = tmp_path / "planted"
    (planted / "data").mkdir(parents=True)
    (planted / "MLmodel").write_text("flavors:\n  pytorch:\n    model_data: data\n    pytorch_version: 2.0\n")
    (planted / "data" / "model.pth").write_bytes(pickle.dumps(_Payload(marker)))
    client.log_artifacts(run.info.run_id, str(planted), artifact_path="law")
    client.create_registered_model("lfp-test")
    source = f"{run.info.artifact_uri}/law"
    client.create_model_version("lfp-test", source=source, run_id=run.info.run_id)
    with pytest.raises(InputError, match="allow-pickle-model"):
        models.load_model("models:/lfp-test/1", tracking_uri=uri)
    assert not marker.exists()


def test_old_pickled_versions_load_behind_the_opt_in(client):
    import mlflow
    import mlflow.pytorch

    client, uri, experiment = client
    run = client.create_run(experiment)
    law = _law()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with mlflow.start_run(run_id=run.info.run_id):
        mlflow.pytorch.log_model(law, name="law", serialization_format="pickle", pip_requirements=["torch"],
                                 registered_model_name="lfp-old", await_registration_for=0)
    with pytest.raises(InputError, match="pickle"):
        models.load_model("models:/lfp-old/1", tracking_uri=uri)
    stored = models.load_model("models:/lfp-old/1", tracking_uri=uri, allow_pickle=True)
    x = torch.linspace(0, 1, 9, dtype=torch.float64)
    assert stored.kind == "legacy-pickle" and torch.equal(stored.model(x), law(x))
