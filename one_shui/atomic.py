"""Atomic file writes: a file is either absent or whole, never half-written; a published file never
overwrites another; nothing is written through a link (temporary files are created exclusively under
names no one can guess, and written through their open handles); and a lock file that keeps two
processes off the same output."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import OutputExistsError, StorageError, UserError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


UMASK = os.umask(0o022)  # the process's file-mode mask, read (and put back at once) when imported
os.umask(UMASK)


class UnsafeOutputError(UserError, OSError):
    """An output's file is a link, or was replaced while it was written: never followed, never published."""


@contextlib.contextmanager
def temporary(path: str | os.PathLike) -> Iterator[tuple[BinaryIO, Path]]:
    """A new file beside ``path``, open for writing and reading (file, its path), removed when the block
    ends unless :func:`publish` moved it into place. It is created exclusively under a name no one can
    guess (``tempfile.mkstemp``): a file or link that is already at that name is never opened, and what
    is written goes through the open file, never through a name someone could have swapped meanwhile."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    if hasattr(os, "fchmod"):  # mkstemp's 0600 would make every output private: the umask's mode instead
        os.fchmod(fd, 0o666 & ~UMASK)
    try:
        with os.fdopen(fd, "w+b") as file:
            yield file, tmp
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a :func:`temporary` file beside ``path``, then rename it into place."""
    path = Path(path)
    with temporary(path) as (file, tmp):
        file.write(data)
        file.flush()
        _require_ours(file, tmp, tmp)
        tmp.replace(path)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically, as :func:`write_bytes_atomic`."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def publish(file: BinaryIO, tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Move the whole :func:`temporary` ``file`` (at ``tmp``) to ``path``, refused if ``path`` exists by
    then (a hard link cannot overwrite; where links are not supported, the check and the rename are as
    close as they can be), and refused, with nothing left at ``path``, if what was at ``tmp`` was not
    ``file`` any more."""
    tmp, path = Path(tmp), Path(path)
    file.flush()
    try:
        os.link(tmp, path, follow_symlinks=False)
    except FileExistsError:
        raise OutputExistsError(
            f"{path} was written meanwhile by another run; nothing of this one is kept"
        ) from None
    except OSError:  # a file system without hard links
        if path.exists():
            raise OutputExistsError(f"{path} was written meanwhile by another run") from None
        _require_ours(file, tmp, path)
        tmp.replace(path)
    try:
        _require_ours(file, path, path)
    except UnsafeOutputError:
        path.unlink(missing_ok=True)
        raise
    tmp.unlink(missing_ok=True)
    return path


def _require_ours(file: BinaryIO, at: Path, path: Path) -> None:
    """Refuse to go on when ``at`` is not the open ``file`` (replaced by another file or a link)."""
    found, ours = os.stat(at, follow_symlinks=False), os.fstat(file.fileno())
    if (found.st_dev, found.st_ino) != (ours.st_dev, ours.st_ino):
        raise UnsafeOutputError(
            f"{path}: its temporary file {at} was replaced by another file or a link while it was written; "
            "nothing is written: check who else writes to that folder"
        )


def writable_folder(folder: str | os.PathLike, what: str) -> Path:
    """Check, before any work, that files can be written in ``folder`` (made later where missing):
    every part of it that exists is a folder (not a file, nor a link that leads nowhere) and the
    deepest of them can be written in. ``what`` starts the message (the option that named it)."""
    folder = Path(folder)
    for part in (folder, *folder.parents):
        if part.is_dir():
            if not os.access(part, os.W_OK | os.X_OK):
                raise StorageError(
                    f"{what}: cannot write in {part} (permission denied); choose another folder"
                )
            return folder
        if os.path.lexists(part):
            kind = "a link that leads nowhere" if part.is_symlink() else "a file"
            raise UnsafeOutputError(f"{what}: {part} is {kind}, not a folder; choose another folder")
    return folder


@contextlib.contextmanager
def held(path: str | os.PathLike, busy: Callable[[], None]) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (made if missing, and left in place) while the block
    runs. If another process holds it, ``busy()`` is called first: it raises to give up, or returns to
    wait for the lock. The lock dies with its process; systems without ``fcntl`` (Windows) have none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise UnsafeOutputError(
            f"{path}: a link where a lock file belongs (never followed); remove it"
        ) from None
    with os.fdopen(fd, "r+b") as file:
        if fcntl is not None:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                busy()
                fcntl.flock(file, fcntl.LOCK_EX)
        yield
