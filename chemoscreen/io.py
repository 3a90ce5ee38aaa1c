"""Atomic file writes: every file goes to a temporary sibling first and is renamed into place.

A reader never sees a half-written file, and a failed write (an exception in the writer, a full disk,
Ctrl-C) leaves the target as it was and no temporary file behind. A target that cannot be written
(its folder is missing, read-only, or lies under a file; the target is a folder) is an
:class:`~mechanics.errors.InputError` naming the option the path came from, before anything is
written.

```python
from chemoscreen.io import atomic_write
atomic_write("table.csv", lambda tmp: df.to_csv(tmp, index=False), field="--out")
```
Several files that belong together (a TIFF stack and its JSON sidecar) are staged with
:func:`atomic_files` and renamed together once all are written.

Temporary folders that outlive a step (a calibration's staging directory, a model's files on their way
to the store) are named by :func:`owner_prefix` (``PREFIX_HOST_PID_...``), so that a later command can
remove those whose process was killed (:func:`remove_stale`): SIGKILL leaves no chance to clean up.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from mechanics.errors import InputError


def _umask() -> int:
    try:  # Linux reports it without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode(target: Path) -> int:
    """The mode a plain ``open(target, "w")`` would give: the old file's, else 0o666 less the umask."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _nearest_existing(folder: Path) -> Path | None:
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return candidate
    return None


def _check_folder(target: Path, field: str, make_parents: bool) -> None:
    folder = target.parent
    if make_parents and not folder.is_dir():
        with contextlib.suppress(OSError):  # the checks below say what is wrong
            folder.mkdir(parents=True, exist_ok=True)
    if not folder.is_dir():
        existing = _nearest_existing(folder)
        if existing is not None and not existing.is_dir():
            raise InputError(field, f"a path in a folder ({existing} is a file)", str(target))
        if make_parents:
            raise InputError(field, f"a path whose folder can be created ({folder})", str(target))
        raise InputError(field, f"a path in an existing folder ({folder} does not exist)", str(target))
    if target.is_dir():
        raise InputError(field, "a file path (a folder of that name exists)", str(target))


class Staging:
    """Temporary files in the folders of their targets, renamed into place by :func:`atomic_files`."""

    def __init__(self, field: str, make_parents: bool) -> None:
        self.field = field
        self.make_parents = make_parents
        self.staged: list[tuple[Path, Path]] = []  # (temporary, target)

    def temp(self, target: str | os.PathLike) -> Path:
        """A new empty temporary file beside ``target``, to be renamed to it on success.

        Its name ends in the target's suffix, for writers that choose the format from it, and its mode
        is what a plain write would give (an existing target's, else 0o666 less the umask).

        Args:
            target: the final path.

        Returns:
            The temporary file's path.

        Raises:
            InputError: (field ``self.field``) the target's folder is missing (and not to be created),
                read-only or under a file, or the target is a folder.
        """
        target = Path(target)
        _check_folder(target, self.field, self.make_parents)
        try:
            fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                        suffix=f".tmp{target.suffix}")
        except OSError as exc:
            expected = f"a path in a writable folder ({target.parent}: {exc.strerror or exc})"
            raise InputError(self.field, expected, str(target)) from None
        os.close(fd)
        self.staged.append((Path(name), target))
        os.chmod(name, _file_mode(target))  # mkstemp makes it 0o600; the result is an ordinary file
        return Path(name)

    def _commit(self) -> None:
        # the first staged file (the main one) is renamed last: whoever sees it sees its companions
        for tmp, target in reversed(self.staged):
            os.replace(tmp, target)

    def _discard(self) -> None:
        for tmp, _ in self.staged:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


@contextlib.contextmanager
def atomic_files(*, field: str, make_parents: bool = False) -> Iterator[Staging]:
    """Stage files with ``staging.temp(target)``; all are renamed into place when the block succeeds.

    When the block raises, every temporary file is removed and the targets are untouched.

    Args:
        field: the option the paths came from (e.g. ``--out``), named in errors.
        make_parents: create missing folders of the targets (else a missing folder is an error).

    Yields:
        The :class:`Staging`.
    """
    staging = Staging(field, make_parents)
    try:
        yield staging
        staging._commit()
    except BaseException:
        staging._discard()
        raise


def check_writable(path: str | os.PathLike, *, field: str, make_parents: bool = False) -> Path:
    """Check, before any work, that ``path`` can be written: an empty temporary file is created beside it
    and removed again.

    Args:
        path: the target file.
        field: the option ``path`` came from (e.g. ``--out``), named in errors.
        make_parents: create missing folders (they stay; the write that follows needs them).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: the folder of ``path`` is missing (and not to be created), read-only or under a
            file, or ``path`` is a folder.
    """
    with atomic_files(field=field, make_parents=make_parents) as staging:
        staging.temp(path)
        staging._discard()
        staging.staged.clear()
    return Path(path)


def atomic_write(path: str | os.PathLike, write_fn: Callable[[Path], object], *, field: str,
                 make_parents: bool = False) -> Path:
    """Write one file atomically: ``write_fn(tmp)`` fills a temporary sibling, which then replaces ``path``.

    Args:
        path: the target file.
        write_fn: called with the temporary file's path (an existing empty file) and writes the content;
            whatever it raises propagates after the temporary file is removed.
        field: the option ``path`` came from (e.g. ``--out``), named in errors.
        make_parents: create missing folders (else a missing folder is an error).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: the folder of ``path`` is missing (and not to be created), read-only or under a
            file, or ``path`` is a folder.
    """
    target = Path(path)
    with atomic_files(field=field, make_parents=make_parents) as staging:
        write_fn(staging.temp(target))
    return target


# ---------------------------------------------------------------------------------------------------
# temporary folders that name their owner, so a later command can remove what a killed one left behind


def host_name() -> str:
    """This host's name with characters other than letters, digits, ``.`` and ``-`` replaced by ``-``."""
    import re
    import socket

    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "localhost"


def owner_prefix(prefix: str, pid: int | None = None) -> str:
    """``PREFIX_HOST_PID_``: the start of a temporary folder's name that says which process owns it.

    Args:
        prefix: what the folder is (e.g. ``.cal.tmp`` or ``chemoscreen-model``).
        pid: the owning process (default: this one).

    Returns:
        The name prefix, for ``tempfile.mkdtemp(prefix=...)``.
    """
    return f"{prefix}_{host_name()}_{os.getpid() if pid is None else pid}_"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (a zombie, killed but not yet reaped, does not).

    Args:
        pid: the process id.

    Returns:
        False when no such process exists or it is a zombie; True otherwise, also when it belongs to
        another user (a reused pid errs on the safe side: its leftovers are kept).
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: state after the command name in /proc/PID/stat
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def stale_owned(folder: str | os.PathLike, prefix: str) -> list[Path]:
    """Entries of ``folder`` named by :func:`owner_prefix` for ``prefix`` whose owner on this host is gone.

    Args:
        folder: where to look.
        prefix: as given to :func:`owner_prefix`.

    Returns:
        The paths (entries of other hosts, of live processes or of other names are left out).
    """
    head = f"{prefix}_{host_name()}_"
    found = []
    with contextlib.suppress(OSError):
        for entry in Path(folder).iterdir():
            if not entry.name.startswith(head):
                continue
            pid = entry.name[len(head):].split("_", 1)[0]
            if pid.isdigit() and not process_alive(int(pid)):
                found.append(entry)
    return found


def remove_stale(folder: str | os.PathLike, prefix: str) -> list[Path]:
    """Remove the entries :func:`stale_owned` finds (folders with their content).

    Args:
        folder: where to look.
        prefix: as given to :func:`owner_prefix`.

    Returns:
        What was removed.
    """
    import shutil

    removed = []
    for entry in stale_owned(folder, prefix):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        if not entry.exists():
            removed.append(entry)
    return removed
