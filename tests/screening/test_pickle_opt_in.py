"""The sweep loads a law stored with pickle by an older chemoscreen only behind --allow-pickle-model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chemoscreen import store
from mechanics.errors import InputError
from mechanics.laws import PiecewiseLinearLaw
from screening.api import resolve_law
from screening.cli import build_parser
from screening.driver import SweepOptions


def test_the_sweep_path_loads_a_pickled_version_only_when_asked(tmp_path):
    import mlflow
    import mlflow.pytorch

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = store.open_store(uri)
    experiment = client.create_experiment("old", artifact_location=(tmp_path / "mlartifacts").as_uri())
    knots = np.linspace(0, 1, 6)
    law = PiecewiseLinearLaw(knots, np.stack([0.052 * knots, 0.038 * knots, -0.02 * knots]))
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with mlflow.start_run(experiment_id=experiment):
        mlflow.pytorch.log_model(law, name="law", serialization_format="pickle", pip_requirements=["torch"],
                                 registered_model_name="lfp-old", await_registration_for=0)
    with pytest.raises(InputError, match="allow-pickle-model"):
        resolve_law("models:/lfp-old/1", uri, client)
    module, pinned = resolve_law("models:/lfp-old/1", uri, client, allow_pickle=True)
    x = torch.linspace(0, 1, 5, dtype=torch.float64)
    assert pinned == "models:/lfp-old/1" and torch.equal(module(x), law(x))


def test_the_opt_in_is_a_flag_and_a_checked_option():
    args = build_parser().parse_args(["sweep", "--allow-pickle-model"])
    assert args.allow_pickle_model is True
    assert build_parser().parse_args(["sweep"]).allow_pickle_model is False
    with pytest.raises(InputError, match="--allow-pickle-model"):
        SweepOptions(allow_pickle_model="yes")
