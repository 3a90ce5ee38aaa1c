"""A folder per driver process for temporary files, and the removal of those that dead drivers left.

A driver killed with SIGKILL cannot remove its temporary files (PNGs waiting for their upload); they
used to stay in the system's temporary folder as ``chemoscreen-*`` for good. Every driver now keeps
them in ``<tmp>/chemoscreen-scratch-<uid>/<pid>-<random>/``, holding an ``flock`` on ``owner.lock`` in it
while it lives; the lock dies with the process, so the next driver removes every folder whose lock it
can take. Standard library only: the test's holder processes import it in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

SCRATCH_ROOT = f"chemoscreen-scratch-{os.getuid()}"  # one per user: the system's folder is shared


@contextlib.contextmanager
def scratch_folder(root: Path | None = None) -> Iterator[Path]:
    """A folder for this process's temporary files, removed at the end; leftovers of dead ones too.

    Args:
        root: where the per-process folders live (default ``<tmp>/chemoscreen-scratch-<uid>``).

    Yields:
        This process's folder.
    """
    root = Path(root) if root is not None else Path(tempfile.gettempdir()) / SCRATCH_ROOT
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    for folder in root.iterdir():
        if folder.name.startswith("."):
            continue  # a folder being set up (below)
        lock = folder / "owner.lock"
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue  # being created right now, or not ours to judge
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # its owner is alive
            continue
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)
    # locked under a hidden name first, so that no other driver can take it for a dead one's
    staging = Path(tempfile.mkdtemp(prefix=f".{os.getpid()}-", dir=root))
    fd = os.open(staging / "owner.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    own = staging.with_name(staging.name[1:])
    staging.rename(own)
    try:
        yield own
    finally:
        shutil.rmtree(own, ignore_errors=True)
        os.close(fd)
