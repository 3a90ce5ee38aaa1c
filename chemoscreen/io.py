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
