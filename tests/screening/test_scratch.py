"""screening.scratch: a killed driver's temporary files are found and removed by the next."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from screening.scratch import scratch_folder

REPO = Path(__file__).resolve().parents[2]

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from screening.scratch import scratch_folder
    with scratch_folder(Path(sys.argv[1])) as own:
        (own / "composition.png").write_bytes(b"png")
        print(own, flush=True)
        time.sleep(600)
""")


def _holder(root: Path) -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(root)], env=env, text=True,
                               stdout=subprocess.PIPE)
    return process, Path(process.stdout.readline().strip())


def test_a_killed_drivers_scratch_folder_is_removed_by_the_next_one(tmp_path):
    """Before: a SIGKILLed driver's ``chemoscreen-*`` folders stayed in /tmp for good."""
    root = tmp_path / "scratch"
    killed, killed_folder = _holder(root)
    alive, alive_folder = _holder(root)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        assert (killed_folder / "composition.png").exists()  # nobody cleaned up after SIGKILL
        with scratch_folder(root) as own:
            assert own.is_dir() and own.parent == root
            assert not killed_folder.exists()  # its owner is dead: removed
            assert (alive_folder / "composition.png").exists()  # its owner lives: kept
        assert not own.exists()  # removed on the way out
    finally:
        alive.kill()
        alive.wait(timeout=30)
    time.sleep(0.1)
    with scratch_folder(root):
        assert not alive_folder.exists()
    assert list(root.iterdir()) == []
