"""Python examples users copy run as written: the first ```python block of README.md and docs/screening.md."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def first_python_block(path: Path) -> str | None:
    if not path.exists():
        return None
    match = BLOCK.search(path.read_text(encoding="utf-8"))
    return match.group(1) if match else None


def _examples() -> list:
    seen, params = set(), []
    for name in ("README.md", "docs/screening.md"):
        code = first_python_block(REPO / name)
        if code is not None and code not in seen:
            seen.add(code)
            params.append(pytest.param(name, code, id=name))
    return params or [pytest.param("README.md", None, id="README.md")]


@pytest.mark.parametrize(("name", "code"), _examples())
def test_python_example_runs(name, code, tmp_path, chemoscreen, e2e_env):
    if code is None:
        pytest.skip(f"{name} has no ```python block")
    if "particle.npz" in code:  # the README's calibration example reads a synthetic image set
        made = chemoscreen(["synth", "--out", "particle.npz"], tmp_path)
        assert made.returncode == 0, made.stderr
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=e2e_env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, f"{name} example failed:\n{result.stdout}\n{result.stderr}"
