"""Atomic file writes: a file is either absent or whole, never half-written; a published file never
overwrites another; and a lock file that keeps two processes off the same output."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import OutputExistsError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically, as :func:`write_bytes_atomic`."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Move the whole file ``tmp`` to ``path``, refused if ``path`` exists by then (a hard link cannot
    overwrite; where links are not supported, the check and the rename are as close as they can be)."""
    tmp, path = Path(tmp), Path(path)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputExistsError(
            f"{path} was written meanwhile by another run; nothing of this one is kept"
        ) from None
    except OSError:  # a file system without hard links
        if path.exists():
            raise OutputExistsError(f"{path} was written meanwhile by another run") from None
        tmp.replace(path)
    tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def held(path: str | os.PathLike, busy: Callable[[], None]) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (made if missing, and left in place) while the block
    runs. If another process holds it, ``busy()`` is called first: it raises to give up, or returns to
    wait for the lock. The lock dies with its process; systems without ``fcntl`` (Windows) have none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as file:
        if fcntl is not None:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                busy()
                fcntl.flock(file, fcntl.LOCK_EX)
        yield
