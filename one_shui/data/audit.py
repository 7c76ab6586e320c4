"""Image audit: every image decodes, stays inside the data root, and no file is shared across identities.

Two identities holding the same bytes leak forget data into retain, so duplicates across identities
are found (by content hash) and reported, refused or dropped. The audit reads every file once; each file's
hash is cached with its size, times and inode, so later runs decode only what changed (and the bench
re-hashes every file's bytes once per run: a hint can be faked).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from ..atomic import write_text_atomic
from ..errors import SettingError
from .images import ImageError, read_rgb
from .sources import DataWarning, Table

OnDuplicates = Literal["warn", "error", "drop"]
AUDIT_FORMAT = 3  # 3: a cache per root, each file's hash with its hint; 2: every image decoded whole


@dataclass(frozen=True)
class AuditReport:
    """What the audit found: groups of files with identical bytes that belong to different identities,
    and a SHA-256 of every image's bytes (by file name): the images' content."""

    duplicates: list[list[str]]
    content: str

    @property
    def duplicate_files(self) -> set[str]:
        return {name for group in self.duplicates for name in group}


def audit_images(
    table: Table,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 8,
    progress: bool = True,
    rehash: bool = False,
) -> AuditReport:
    """Decode and hash every image of ``table``; raise :class:`ImageError` naming any bad file.

    Each file's hash is cached with its hint (size, modification and change times, inode), and the
    report with the hints of the whole listing: when no hint changed the report is read back, else only
    the files whose hint changed are decoded. A hint can be faked (same size, modification time put
    back), so with ``rehash`` every file's bytes are read and hashed again whatever its hint says, and a
    file whose bytes differ from the cache is decoded again: the bench does that once per run, before it
    reuses any cell, so the content its cells are keyed on is the images' bytes."""
    root = table.root.resolve()
    hints = {name: _hint(root / name) for name in table.files}
    cache = Path(cache_dir) if cache_dir is not None else None
    summary = cache / f"audit-{_summary_key(table, root, hints)}.json" if cache is not None else None
    if summary is not None and summary.is_file() and not rehash:
        with contextlib.suppress(ValueError, TypeError):  # a damaged cache is made again
            return AuditReport(**json.loads(summary.read_text()))
    hashes = cache / f"hashes-{_root_key(root)}.json" if cache is not None else None
    known = _read_hashes(hashes)
    digests = {
        name: known[name][-1]
        for name in table.files
        if hints[name] and known.get(name, [])[:-1] == hints[name]
    }
    with ThreadPoolExecutor(workers) as pool:
        if rehash:  # the hint is not trusted alone: the bytes of every file it vouched for hashed again
            trusted = list(digests)
            for name, digest in zip(
                trusted, pool.map(lambda name: _sha256(root / name), trusted), strict=True
            ):
                if digest != digests[name]:
                    del digests[name]
        todo = [name for name in table.files if name not in digests]
        jobs = pool.map(lambda name: _inspect(root, name), todo)
        inspected = list(
            tqdm(
                jobs, total=len(todo), desc=f"auditing {table.name} images", unit="img", disable=not progress
            )
        )
    bad = [f"{name} ({problem})" for name, (_, problem) in zip(todo, inspected, strict=True) if problem]
    if bad:
        raise ImageError(f"{len(bad)} image(s) under {table.root} cannot be used: " + "; ".join(bad[:10]))
    digests.update((name, digest) for name, (digest, _) in zip(todo, inspected, strict=True))
    report = _report(table, [digests[name] for name in table.files])
    if cache is not None:
        if todo:
            found = {name: [*hints[name], digests[name]] for name in todo if hints[name]}
            write_text_atomic(hashes, json.dumps({"format": AUDIT_FORMAT, "files": {**known, **found}}))
        write_text_atomic(summary, json.dumps(asdict(report)))
    return report


def _report(table: Table, digests: list[str]) -> AuditReport:
    """The duplicates across identities and the content hash, from every file's SHA-256."""
    owners: dict[str, list[int]] = defaultdict(list)
    for row, digest in enumerate(digests):
        owners[digest].append(row)
    duplicates = sorted(
        sorted(table.files[r] for r in rows)
        for rows in owners.values()
        if len({table.identities[r] for r in rows}) > 1
    )
    content = hashlib.sha256()
    for name, digest in sorted(zip(table.files, digests, strict=True)):
        content.update(f"{name}\t{digest}\n".encode())
    return AuditReport(duplicates, content.hexdigest())


def apply_duplicate_policy(table: Table, report: AuditReport, policy: OnDuplicates) -> Table:
    """Warn about, refuse, or drop every copy of the images shared across identities."""
    if not report.duplicates:
        return table
    shown = "; ".join(" = ".join(group) for group in report.duplicates[:5])
    message = (
        f"{len(report.duplicates)} image(s) appear under more than one identity in {table.root}, "
        f"which leaks forget data into retain: {shown}"
    )
    if policy == "error":
        raise ImageError(message + ". Remove the copies, or set on_duplicates to 'drop' or 'warn'.")
    if policy == "warn":
        warnings.warn(message + ". Kept (on_duplicates='warn').", DataWarning, stacklevel=2)
        return table
    if policy != "drop":
        raise SettingError(f"on_duplicates must be 'warn', 'error' or 'drop', not {policy!r}")
    drop = report.duplicate_files
    warnings.warn(
        message + f". Dropped all {len(drop)} copies (on_duplicates='drop').", DataWarning, stacklevel=2
    )
    return table.subset(np.array([name not in drop for name in table.files]))


def _inspect(root: Path, name: str) -> tuple[str, str]:
    """(content hash, problem or '') of one image."""
    path = root / name
    if not path.resolve().is_relative_to(root):
        return "", "leads outside the data root"
    try:
        data = path.read_bytes()
        read_rgb(data, name)  # decoded whole and converted, as the loaders will
    except ImageError as err:
        return "", str(err).removeprefix(f"{name}: ")
    except OSError as err:
        return "", f"{type(err).__name__}: {err}"
    return hashlib.sha256(data).hexdigest(), ""


def _hint(path: Path) -> list[int]:
    """What says a file may be unchanged (size, modification and change times, inode); empty when it
    cannot be read (the audit then names the problem)."""
    try:
        stat = path.stat()
    except OSError:
        return []
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""  # not the cached hash: the file is inspected, which names the problem


def _read_hashes(cache: Path | None) -> dict[str, list]:
    """The cached files of a root (name -> hint and SHA-256); empty when missing, damaged or of another
    format (then every file is inspected again)."""
    if cache is None or not cache.is_file():
        return {}
    with contextlib.suppress(ValueError, TypeError, AttributeError, OSError):
        record = json.loads(cache.read_text())
        if record.get("format") == AUDIT_FORMAT and isinstance(record.get("files"), dict):
            return record["files"]
    return {}


def _summary_key(table: Table, root: Path, hints: dict[str, list[int]]) -> str:
    """The key of a report: the format, the listing and every file's hint."""
    digest = hashlib.sha256(f"{AUDIT_FORMAT}\n{table.listing_fingerprint()}\n{root}".encode())
    for name in table.files:
        digest.update(f"\n{hints[name]}".encode())
    return digest.hexdigest()[:32]


def _root_key(root: Path) -> str:
    return hashlib.sha256(str(root).encode()).hexdigest()[:32]
