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


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder this process cannot create files in (root ignores permission bits: then sysfs, where
    nobody can create a file)."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounts = Path("/proc/mounts").read_text() if Path("/proc/mounts").exists() else ""
    if not any(line.split()[1:3] == ["/sys", "sysfs"] for line in mounts.splitlines()):
        pytest.skip("running as root without sysfs on /sys: no folder here that root cannot write")
    yield Path("/sys")
