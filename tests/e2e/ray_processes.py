"""Find a Ray worker process of one driver by its process title (Linux /proc), for fault-injection tests."""

from __future__ import annotations

from pathlib import Path


def parent_pid(pid: int) -> int:
    """The parent of ``pid`` (0 when the process is gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def busy_worker_of(root: int, title: bytes) -> int | None:
    """A process of ``root``'s tree whose title starts with ``title`` (Ray names a worker after the
    method it runs, e.g. ``b"ray::SimulatorActor.run_batch"``), or None."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if not cmdline.startswith(title):
            continue
        pid = ancestor = int(entry.name)
        while ancestor > 1:
            ancestor = parent_pid(ancestor)
            if ancestor == root:
                return pid
    return None
