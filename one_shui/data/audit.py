"""Image audit: every image decodes, stays inside the data root, and no file is shared across identities.

Two identities holding the same bytes leak forget data into retain, so duplicates across identities
are found (by content hash) and reported, refused or dropped. The audit reads every file once; its
result is cached per listing (file names, identities, sizes and times) so later runs skip it.
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
AUDIT_FORMAT = 2  # 2: every image decoded whole and converted to RGB (1 only verified the files)


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
    table: Table, cache_dir: str | os.PathLike | None = None, workers: int = 8, progress: bool = True
) -> AuditReport:
    """Decode and hash every image of ``table``; raise :class:`ImageError` naming any bad file."""
    cache = Path(cache_dir) / f"audit-{_cache_key(table)}.json" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        with contextlib.suppress(ValueError, TypeError):  # a damaged cache is made again
            return AuditReport(**json.loads(cache.read_text()))
    root = table.root.resolve()
    with ThreadPoolExecutor(workers) as pool:
        jobs = pool.map(lambda name: _inspect(root, name), table.files)
        results = list(
            tqdm(
                jobs, total=len(table), desc=f"auditing {table.name} images", unit="img", disable=not progress
            )
        )
    bad = [f"{name} ({problem})" for name, (_, problem) in zip(table.files, results, strict=True) if problem]
    if bad:
        raise ImageError(f"{len(bad)} image(s) under {table.root} cannot be used: " + "; ".join(bad[:10]))
    owners: dict[str, list[int]] = defaultdict(list)
    for row, (digest, _) in enumerate(results):
        owners[digest].append(row)
    duplicates = sorted(
        sorted(table.files[r] for r in rows)
        for rows in owners.values()
        if len({table.identities[r] for r in rows}) > 1
    )
    content = hashlib.sha256()
    for name, (digest, _) in sorted(zip(table.files, results, strict=True)):
        content.update(f"{name}\t{digest}\n".encode())
    report = AuditReport(duplicates, content.hexdigest())
    if cache is not None:
        write_text_atomic(cache, json.dumps(asdict(report)))
    return report


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


def _cache_key(table: Table) -> str:
    digest = hashlib.sha256(f"{AUDIT_FORMAT}\n{table.listing_fingerprint()}".encode())
    for name in table.files:
        stat = (table.root / name).stat()
        digest.update(f"\n{stat.st_size} {stat.st_mtime_ns}".encode())
    digest.update(str(table.root.resolve()).encode())
    return digest.hexdigest()[:32]
