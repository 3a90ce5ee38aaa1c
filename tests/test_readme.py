"""The README's stand-alone mechanics example runs as written (the sweep example is run by tests/e2e)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_mechanics_example_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.DOTALL)
    mechanics_blocks = [b for b in blocks if b.lstrip().startswith("import torch")]
    assert mechanics_blocks, "README.md lost its mechanics example"
    script = tmp_path / "example.py"
    script.write_text(mechanics_blocks[0] + "\nassert res.stress.isfinite().all()\nassert float(B) > 0\n")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
