"""Project-wide test settings: headless plotting and reproducible torch on a small shared CPU."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
    yield


E2E = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(config, items):
    """Mark everything under tests/e2e as `e2e`; skip `gpu` tests when no CUDA device is present."""
    for item in items:
        if E2E in Path(item.path).parents:
            item.add_marker(pytest.mark.e2e)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
