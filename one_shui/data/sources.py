"""Readers of the on-disk datasets: CelebA-HQ, CelebA (through torchvision) and MUFAC.

Each reader turns a data root into a :class:`Table` of (image file, identity, target) plus the task
kind and class names. Readers check the listing (every listed image exists, every image has an
identity, names stay inside the root) and fail with one error that names the file and the layout
they expected; decoding every image and finding duplicate files is the job of :mod:`.audit`.
"""

from __future__ import annotations

import csv
import hashlib
import os
import unicodedata
import warnings
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torchvision

from ..errors import SettingError, UserError

Task = Literal["multilabel", "classification"]  # the kind of target a dataset has; every module uses this one
DATASETS = ("celebahq", "celeba", "mufac")
MUFAC_SPLITS = ("train", "val", "test")
AGE_GROUPS = "abcdefgh"

LAYOUTS = {
    "celebahq": """<root>/CelebAMask-HQ/
    CelebA-HQ-img/{i}.jpg
    CelebAMask-HQ-attribute-anno.txt   line 1: image count, line 2: 40 attribute names,
                                       then `name.jpg` and 40 values in {-1, 1}
    CelebA-HQ-identity.txt             `name.jpg person_id` per line""",
    "celeba": """<root>/celeba/   (the official folder, as torchvision.datasets.CelebA reads it)
    img_align_celeba/*.jpg
    list_attr_celeba.txt  identity_CelebA.txt  list_eval_partition.txt
    list_bbox_celeba.txt  list_landmarks_align_celeba.txt""",
    "mufac": """<root>/mufac/
    custom_train_dataset.csv  custom_val_dataset.csv  custom_test_dataset.csv
        header `family_id,person_id,age_class,image_path`; age_class in a..h
    train_images/  val_images/  test_images/""",
}


class DatasetLayoutError(UserError, FileNotFoundError):
    """A dataset file or folder is missing or malformed; the message shows the expected layout."""

    def __init__(self, dataset: str, problem: str):
        super().__init__(f"{problem}\nExpected layout of {dataset}:\n{LAYOUTS[dataset]}")


class AnnotationError(UserError, ValueError):
    """An annotation file contradicts itself or the image files (the message names the file and line)."""


class DataWarning(UserWarning):
    """Something in the data that the run survives but the user should know (dropped identities...)."""


def identity_key(name: str) -> str:
    """What names one person whatever its Unicode form: ``name`` in NFKC (composed, and compatibility
    characters such as full-width letters or ligatures folded), as requests are matched."""
    return unicodedata.normalize("NFKC", name)


def identity_clashes(names: Iterable[str]) -> list[list[str]]:
    """The groups of distinct ``names`` that :func:`identity_key` makes one."""
    spellings: dict[str, set[str]] = defaultdict(set)
    for name in set(names):
        spellings[identity_key(name)].add(name)
    return sorted(sorted(group) for group in spellings.values() if len(group) > 1)


@dataclass(frozen=True, eq=False)
class Table:
    """One dataset as a table: image files (relative to ``root``), identities and targets."""

    name: str
    root: Path
    files: tuple[str, ...]
    identities: tuple[str, ...]
    targets: np.ndarray = field(repr=False)  # (n, C) uint8 multi-hot, or (n,) int64 class indices
    task: Task
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if not (len(self.files) == len(self.identities) == len(self.targets)):
            raise ValueError("files, identities and targets must have the same length")
        clashes = identity_clashes(self.identities)
        if clashes:
            shown = "; ".join(" and ".join(map(ascii, group)) for group in clashes[:5])
            raise AnnotationError(
                f"{self.name} under {self.root}: {len(clashes)} identity name(s) differ only in their "
                f"Unicode form (equal once normalised, NFKC), so a request for one would forget the other: "
                f"{shown}. Give each person one spelling in the identity file"
            )

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def path(self, index: int) -> Path:
        return self.root / self.files[index]

    def listing_fingerprint(self) -> str:
        """SHA-256 of the dataset's name and its (file, identity) listing, sorted by file."""
        digest = hashlib.sha256(self.name.encode())
        for name, identity in sorted(zip(self.files, self.identities, strict=True)):
            digest.update(f"\n{name}\t{identity}".encode())
        return digest.hexdigest()

    def subset(self, keep: np.ndarray) -> Table:
        """The rows where ``keep`` (a boolean mask) is true."""
        rows = np.flatnonzero(keep)
        return Table(
            self.name,
            self.root,
            tuple(self.files[i] for i in rows),
            tuple(self.identities[i] for i in rows),
            self.targets[rows],
            self.task,
            self.class_names,
        )


def read_table(dataset: str, root: str | os.PathLike, **options) -> Table:
    """Read ``dataset`` (one of :data:`DATASETS`) from ``root``."""
    readers = {"celebahq": read_celebahq, "celeba": read_celeba, "mufac": read_mufac}
    if dataset not in readers:
        raise SettingError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    return readers[dataset](root, **options)


def read_celebahq(root: str | os.PathLike) -> Table:
    """CelebA-HQ (CelebAMask-HQ with the identity file): 40 binary attributes."""
    root = Path(root)
    folder = _require_dir("celebahq", root, root / "CelebAMask-HQ")
    images = _require_dir("celebahq", root, folder / "CelebA-HQ-img")
    anno = _require_file("celebahq", folder / "CelebAMask-HQ-attribute-anno.txt")
    ident = _require_file("celebahq", folder / "CelebA-HQ-identity.txt")

    names, attributes, values = _parse_attribute_file("celebahq", anno)
    identity_of = _parse_identity_file("celebahq", ident)
    missing = [name for name in names if name not in identity_of]
    if missing:
        raise AnnotationError(
            f"{len(missing)} image(s) in {anno} have no identity in {ident}: {_first(missing)}. "
            "Add them to the identity file or remove them from the attribute file."
        )
    _warn_unlisted(set(identity_of) - set(names), identity_of, ident)
    prefix = images.relative_to(root).as_posix()
    files = tuple(f"{prefix}/{name}" for name in names)
    table = Table(
        "celebahq", root, files, tuple(identity_of[n] for n in names), values, "multilabel", attributes
    )
    return _check_files_exist("celebahq", table)


def read_celeba(root: str | os.PathLike, verify_md5: bool = True) -> Table:
    """CelebA through ``torchvision.datasets.CelebA(split="all")``: 40 binary attributes.

    ``verify_md5=False`` accepts annotation files whose checksums differ from the official ones
    (a subset of CelebA, or re-encoded files); the listing is still checked.
    """
    root = Path(root)
    folder = _require_dir("celeba", root, root / "celeba")
    _require_dir("celeba", root, folder / "img_align_celeba")
    for name in (
        "list_attr_celeba.txt",
        "identity_CelebA.txt",
        "list_eval_partition.txt",
        "list_bbox_celeba.txt",
        "list_landmarks_align_celeba.txt",
    ):
        _require_file("celeba", folder / name)
    if not verify_md5:
        # torchvision maps any integer v to (v + 1) // 2 (-3 -> 255 as uint8) and checks neither the
        # count line nor the columns: check the files whose checksums were not verified, with file:line
        _parse_attribute_file("celeba", folder / "list_attr_celeba.txt")
        _parse_identity_file("celeba", folder / "identity_CelebA.txt")

    cls = torchvision.datasets.CelebA if verify_md5 else _CelebAUnverified
    try:
        ds = cls(str(root), split="all", target_type=["attr", "identity"], download=False)
    except RuntimeError as err:
        raise DatasetLayoutError(
            "celeba",
            f"torchvision rejected {folder}: {err}. The annotation files' MD5 checksums differ from the "
            "official release; pass verify_md5=False (data.verify_md5: false) to read them anyway.",
        ) from err
    except (ValueError, IndexError) as err:
        raise DatasetLayoutError("celeba", f"malformed annotation file in {folder}: {err}") from err
    _check_celeba_alignment(folder, list(ds.filename))
    for name in ds.filename:
        _require_bare_name("celeba", name, folder / "list_eval_partition.txt")
    files = tuple(f"celeba/img_align_celeba/{name}" for name in ds.filename)
    identities = tuple(str(int(i)) for i in ds.identity.view(-1))
    targets = ds.attr.numpy().astype(np.uint8)
    class_names = tuple(name for name in ds.attr_names if name)
    table = Table("celeba", root, files, identities, targets, "multilabel", class_names)
    return _check_files_exist("celeba", table)


def read_mufac(root: str | os.PathLike) -> Table:
    """MUFAC: 8 age groups (a..h); the three official CSVs are merged (1-SHUI re-splits by identity)."""
    root = Path(root)
    folder = _require_dir("mufac", root, root / "mufac")
    files, identities, ages, owners = [], [], [], {}
    for split in MUFAC_SPLITS:
        sheet = _require_file("mufac", folder / f"custom_{split}_dataset.csv")
        images = _require_dir("mufac", root, folder / f"{split}_images")
        for line, row in _read_mufac_rows(sheet):
            if len(row) < 4:
                raise DatasetLayoutError("mufac", f"{sheet}:{line}: expected at least 4 columns, got {row}")
            age = row[2].strip().lower()
            if len(age) != 1 or age not in AGE_GROUPS:
                raise DatasetLayoutError("mufac", f"{sheet}:{line}: age class {row[2]!r} is not one of a..h")
            name = _require_bare_name("mufac", row[-1].strip(), sheet, line)
            if not (row[0].strip() and row[1].strip()):
                raise AnnotationError(f"{sheet}:{line}: {name} has no identity (family_id and person_id)")
            files.append(f"{images.relative_to(root).as_posix()}/{name}")
            identities.append(f"{row[0].strip()}_{row[1].strip()}")
            ages.append(AGE_GROUPS.index(age))
            if owners.setdefault(files[-1], identities[-1]) != identities[-1]:
                raise AnnotationError(
                    f"{sheet}:{line}: {name} is given two identities ({owners[files[-1]]}, {identities[-1]})"
                )
    table = Table(
        "mufac",
        root,
        tuple(files),
        tuple(identities),
        np.asarray(ages, dtype=np.int64),
        "classification",
        tuple(AGE_GROUPS),
    )
    return _check_files_exist("mufac", table)


# --- helpers -------------------------------------------------------------------------------------


class _CelebAUnverified(torchvision.datasets.CelebA):
    """torchvision's CelebA without the MD5 check of the annotation files (see ``read_celeba``)."""

    def _check_integrity(self) -> bool:
        return os.path.isdir(os.path.join(self.root, self.base_folder, "img_align_celeba"))


def _require_dir(dataset: str, root: Path, path: Path) -> Path:
    if not path.is_dir():
        raise DatasetLayoutError(dataset, f"missing folder {path}")
    if not path.resolve().is_relative_to(root.resolve()):
        raise DatasetLayoutError(dataset, f"{path} leads outside the data root {root} (a link?); refusing it")
    return path


def _require_file(dataset: str, path: Path) -> Path:
    if not path.is_file():
        raise DatasetLayoutError(dataset, f"missing file {path}")
    return path


def _require_bare_name(dataset: str, name: str, source: Path, line: int | None = None) -> str:
    """Image names in the annotation files are bare file names: nothing that could leave the root."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or os.path.isabs(name):
        where = f"{source}:{line}" if line is not None else str(source)
        raise DatasetLayoutError(dataset, f"{where}: image name {name!r} is not a plain file name")
    return name


def _parse_attribute_file(dataset: str, path: Path) -> tuple[list[str], tuple, np.ndarray]:
    """A CelebA-style attribute file: the image count, the attribute names, then `name v1 .. vC` rows."""
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise DatasetLayoutError(dataset, f"{path}: expected a count line and a header line")
    attributes = tuple(lines[1].split())
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise DatasetLayoutError(dataset, f"{path}:1: expected the image count, got {lines[0]!r}") from None
    body = [(line, row.split()) for line, row in enumerate(lines[2:], start=3) if row.strip()]
    if count != len(body):
        raise DatasetLayoutError(dataset, f"{path}:1: says {count} images but lists {len(body)}")
    names, values = [], np.empty((len(body), len(attributes)), dtype=np.uint8)
    for i, (line, parts) in enumerate(body):
        if len(parts) != len(attributes) + 1 or any(v not in ("1", "-1") for v in parts[1:]):
            raise DatasetLayoutError(
                dataset, f"{path}:{line}: expected a file name and {len(attributes)} values in {{-1, 1}}"
            )
        names.append(_require_bare_name(dataset, parts[0], path, line))
        values[i] = [v == "1" for v in parts[1:]]
    if len(set(names)) != len(names):
        raise DatasetLayoutError(dataset, f"{path}: lists an image twice: {_first(_repeated(names))}")
    return names, attributes, values


def _parse_identity_file(dataset: str, path: Path) -> dict[str, str]:
    identity_of: dict[str, str] = {}
    for line, row in enumerate(path.read_text().splitlines(), start=1):
        if not row.strip():
            continue
        parts = row.split()
        if len(parts) != 2:
            raise DatasetLayoutError(dataset, f"{path}:{line}: expected `name.jpg person_id`, got {row!r}")
        name, identity = parts
        if identity_of.setdefault(name, identity) != identity:
            raise AnnotationError(
                f"{path}:{line}: {name} is given two identities ({identity_of[name]}, {identity})"
            )
    return identity_of


def _warn_unlisted(unlisted: set[str], identity_of: dict[str, str], source: Path) -> None:
    """Identity-file entries whose image is not in the dataset are dropped; say which people vanish."""
    if not unlisted:
        return
    kept = {identity_of[n] for n in identity_of if n not in unlisted}
    lost = sorted({identity_of[n] for n in unlisted} - kept)
    message = (
        f"{source}: {len(unlisted)} image(s) have no attributes and are ignored: {_first(sorted(unlisted))}"
    )
    if lost:
        message += f"; identities with no image left, dropped: {_first(lost)}"
    warnings.warn(message, DataWarning, stacklevel=3)


def _read_mufac_rows(sheet: Path):
    with sheet.open(newline="") as handle:
        rows = list(csv.reader(handle))
    has_header = bool(rows) and len(rows[0]) >= 3 and rows[0][2].strip().lower() == "age_class"
    start = 1 if has_header else 0
    for line, row in enumerate(rows[start:], start=start + 1):
        if any(cell.strip() for cell in row):
            yield line, row


def _check_celeba_alignment(folder: Path, filenames: list[str]) -> None:
    """torchvision pairs annotation rows with images by position; make sure the files agree."""
    for name, skip in (("identity_CelebA.txt", 0), ("list_attr_celeba.txt", 2)):
        rows = (folder / name).read_text().splitlines()[skip:]
        listed = [row.split()[0] for row in rows if row.strip()]
        if len(listed) != len(filenames):
            raise DatasetLayoutError(
                "celeba",
                f"{folder / name} lists {len(listed)} images, list_eval_partition.txt {len(filenames)}",
            )
        for line, (ours, theirs) in enumerate(zip(filenames, listed, strict=True), start=skip + 1):
            if ours != theirs:
                raise DatasetLayoutError(
                    "celeba",
                    f"{folder / name}:{line}: lists {theirs} where list_eval_partition.txt has {ours}",
                )


def _check_files_exist(dataset: str, table: Table) -> Table:
    missing = [name for name in table.files if not (table.root / name).is_file()]
    if missing:
        raise DatasetLayoutError(
            dataset, f"{len(missing)} listed image(s) are missing under {table.root}: {_first(missing)}"
        )
    return table


def _repeated(items: list[str]) -> list[str]:
    seen: set[str] = set()
    return sorted({x for x in items if x in seen or seen.add(x)})


def _first(items: list[str], shown: int = 10) -> str:
    more = f" (and {len(items) - shown} more)" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more
