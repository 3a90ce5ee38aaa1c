"""Shared synthetic data: made on a 2× finer grid than the fit, with noise, PSFs, a registration offset,
an unknown reference offset, a rotated crystal and planted dislocations."""

from __future__ import annotations

import pytest

from inverse import calibrate, synthesize


@pytest.fixture(scope="session")
def lfp96():
    """96² image set of an LFP platelet (Vegard truth), synthesised on 192² and area-averaged."""
    return synthesize(size_px=96, oversample=2, seed=4, crystal_angle_deg=25.0, composition_sigma=0.03,
                      strain_sigma=5e-4, strain_reference="unknown")


@pytest.fixture(scope="session")
def cal96(lfp96):
    return calibrate(lfp96, n_bootstrap=32)


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory):
    """An empty MLflow SQLite database with its schema: creating one takes seconds (8 s on a busy 2-core
    machine), copying it milliseconds; tests that need a fresh store copy this file."""
    from chemoscreen import store

    path = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    store.open_store(f"sqlite:///{path}")
    return path
