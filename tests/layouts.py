"""Writers of tiny datasets in the real on-disk layouts (CelebA-HQ, CelebA, MUFAC), for tests.

Each writer puts real JPEG files (8x8 by default, distinct random pixels per image) and the
annotation files, formatted as in the official releases, under ``root``, and returns the rows it
wrote in the order the readers list them, as :class:`Row` tuples. Tests that need broken layouts
write a good one and then edit the files (see the ``*_file`` helpers for where they are).

Plain functions, no fixtures: ``from layouts import write_celebahq`` (``tests`` is on pytest's
``pythonpath``).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
)
LANDMARK_COLUMNS = (
    "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y "
    "leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
)
MUFAC_SPLITS = ("train", "val", "test")
MUFAC_HEADER = "family_id,person_id,age_class,image_path"
# a representative age in years for each MUFAC age class, only used to build realistic file names
_MUFAC_YEARS = {"a": 5, "b": 12, "c": 18, "d": 25, "e": 33, "f": 43, "g": 53, "h": 65}
_TAGS = {"celebahq": 1, "celeba": 2, "mufac": 3}

DEFAULT_CELEBAHQ_IDENTITIES = {"7": 3, "9": 2, "12": 2}
DEFAULT_CELEBA_IDENTITIES = {"2880": 3, "17": 2, "1005": 2}
DEFAULT_MUFAC_SPLITS = {
    "train": {"F0001_D": "ab", "F0002_A": "cc"},
    "val": {"F0003_B": "d", "F0001_D": "e"},
    "test": {"F0004_C": "fh", "F0002_A": "g"},
}


class Row(NamedTuple):
    """One image as written: where the reader's ``Table.files`` puts it, and what it should read."""

    file: str  # path relative to the data root, as Table.files lists it
    identity: str
    target: tuple[int, ...] | int  # multi-hot in {0, 1} (CelebA, CelebA-HQ) or age class index (MUFAC)
    name: str  # bare image name, as the annotation files list it
    split: str | int | None = None  # CelebA partition (0, 1, 2) or MUFAC split; None for CelebA-HQ


# --- images --------------------------------------------------------------------------------------


Size = int | tuple[int, int]  # a square's side, or (width, height)


def jpeg_bytes(seed: int | tuple[int, ...], size: Size = 8) -> bytes:
    """An RGB JPEG of random pixels drawn from ``seed``: the same seed gives the same bytes. Above 8 x 8
    the 8 x 8 draw is enlarged (smooth, so that an image at a real dataset's size stays small)."""
    width, height = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(min(height, 8), min(width, 8), 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def write_image(path: str | Path, seed: int | tuple[int, ...], size: Size = 8) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(seed, size))
    return path


def _write_images(
    root: Path, rows: list[Row], dataset: str, seed: int, size: Size, duplicate_of: Mapping[int, int] | None
) -> None:
    """Row ``i`` gets its own random image, or the bytes of row ``duplicate_of[i]`` when asked."""
    duplicate_of = dict(duplicate_of or {})
    for i, row in enumerate(rows):
        source = duplicate_of.get(i, i)
        if not 0 <= source < len(rows):
            raise ValueError(f"duplicate_of[{i}] = {source} is not a row index")
        write_image(root / row.file, (seed, _TAGS[dataset], source), size)


def _signs(rng: np.random.Generator, count: int) -> np.ndarray:
    return rng.choice(np.array([-1, 1]), size=(count, len(CELEBA_ATTRIBUTES)))


def _attribute_lines(names: list[str], signs: np.ndarray, trailing_space: bool) -> list[str]:
    """``count``, the 40 names, then ``name.jpg -1  1 ...`` as in list_attr_celeba.txt."""
    header = " ".join(CELEBA_ATTRIBUTES) + (" " if trailing_space else "")
    rows = [
        f"{name} " + " ".join(f"{int(v):2d}" for v in values)
        for name, values in zip(names, signs, strict=True)
    ]
    return [str(len(names)), header, *rows]


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def _blocks(identities: Mapping[str, int]) -> list[str]:
    """One identity per image: ``{"7": 2, "9": 1}`` -> ``["7", "7", "9"]``."""
    out = []
    for identity, count in identities.items():
        if count < 1:
            raise ValueError(f"identity {identity!r} needs at least one image, got {count}")
        out += [str(identity)] * count
    return out


# --- CelebA-HQ -----------------------------------------------------------------------------------


def celebahq_folder(root: str | Path) -> Path:
    return Path(root) / "CelebAMask-HQ"


def write_celebahq(
    root: str | Path,
    identities: Mapping[str, int] | None = None,
    *,
    seed: int = 0,
    size: Size = 8,
    shuffle_identity_file: bool = False,
    duplicate_of: Mapping[int, int] | None = None,
) -> list[Row]:
    """CelebAMask-HQ with its identity file: images ``0.jpg, 1.jpg...`` in identity blocks.

    ``identities`` maps person id -> number of images. The identity file lists the images in
    attribute-file order, or in a shuffled order with ``shuffle_identity_file``.
    """
    root = Path(root)
    folder = celebahq_folder(root)
    people = _blocks(DEFAULT_CELEBAHQ_IDENTITIES if identities is None else identities)
    rng = np.random.default_rng((seed, _TAGS["celebahq"]))
    signs = _signs(rng, len(people))
    names = [f"{i}.jpg" for i in range(len(people))]
    rows = [
        Row(f"CelebAMask-HQ/CelebA-HQ-img/{name}", person, tuple(int(v == 1) for v in values), name)
        for name, person, values in zip(names, people, signs, strict=True)
    ]
    _write_images(root, rows, "celebahq", seed, size, duplicate_of)
    _write_lines(folder / "CelebAMask-HQ-attribute-anno.txt", _attribute_lines(names, signs, False))
    order = rng.permutation(len(rows)) if shuffle_identity_file else range(len(rows))
    _write_lines(folder / "CelebA-HQ-identity.txt", [f"{names[i]} {people[i]}" for i in order])
    return rows


# --- CelebA --------------------------------------------------------------------------------------


CELEBA_FILES = (
    "list_attr_celeba.txt",
    "identity_CelebA.txt",
    "list_eval_partition.txt",
    "list_bbox_celeba.txt",
    "list_landmarks_align_celeba.txt",
)


def celeba_folder(root: str | Path) -> Path:
    return Path(root) / "celeba"


def write_celeba(
    root: str | Path,
    identities: Mapping[str, int] | None = None,
    *,
    seed: int = 0,
    size: Size = 8,
    partitions: list[int] | None = None,
    duplicate_of: Mapping[int, int] | None = None,
) -> list[Row]:
    """The official CelebA folder as ``torchvision.datasets.CelebA`` reads it: ``000001.jpg...``.

    ``identities`` maps person id (an integer, as a string) -> number of images; ``partitions``
    gives each image's list_eval_partition value (default 0, 1, 2, 0, 1, 2...).
    """
    root = Path(root)
    folder = celeba_folder(root)
    people = _blocks(DEFAULT_CELEBA_IDENTITIES if identities is None else identities)
    for person in set(people):
        int(person)  # torchvision parses identities as integers
    count = len(people)
    partitions = [i % 3 for i in range(count)] if partitions is None else list(partitions)
    if len(partitions) != count:
        raise ValueError(f"{len(partitions)} partitions for {count} images")
    rng = np.random.default_rng((seed, _TAGS["celeba"]))
    signs = _signs(rng, count)
    names = [f"{i:06d}.jpg" for i in range(1, count + 1)]
    rows = [
        Row(
            f"celeba/img_align_celeba/{name}",
            str(int(person)),
            tuple(int(v == 1) for v in values),
            name,
            part,
        )
        for name, person, values, part in zip(names, people, signs, partitions, strict=True)
    ]
    _write_images(root, rows, "celeba", seed, size, duplicate_of)
    _write_lines(folder / "list_attr_celeba.txt", _attribute_lines(names, signs, trailing_space=True))
    _write_lines(
        folder / "identity_CelebA.txt",
        [f"{name} {person}" for name, person in zip(names, people, strict=True)],
    )
    _write_lines(
        folder / "list_eval_partition.txt",
        [f"{name} {part}" for name, part in zip(names, partitions, strict=True)],
    )
    boxes = rng.integers(0, 400, size=(count, 4))
    _write_lines(
        folder / "list_bbox_celeba.txt",
        [str(count), "image_id x_1 y_1 width height "]
        + [name + "".join(f"{v:5d}" for v in box) for name, box in zip(names, boxes, strict=True)],
    )
    marks = rng.integers(0, 218, size=(count, 10))
    _write_lines(
        folder / "list_landmarks_align_celeba.txt",
        [str(count), LANDMARK_COLUMNS]
        + [name + "".join(f"{v:5d}" for v in row) for name, row in zip(names, marks, strict=True)],
    )
    return rows


# --- MUFAC ---------------------------------------------------------------------------------------


def mufac_folder(root: str | Path) -> Path:
    return Path(root) / "mufac"


def mufac_csv(root: str | Path, split: str) -> Path:
    return mufac_folder(root) / f"custom_{split}_dataset.csv"


def write_mufac(
    root: str | Path,
    splits: Mapping[str, Mapping[str, str]] | None = None,
    *,
    seed: int = 0,
    size: Size = 8,
    duplicate_of: Mapping[int, int] | None = None,
) -> list[Row]:
    """MUFAC's three CSVs and image folders.

    ``splits`` maps split -> {``"F0001_D"`` (family_id + ``_`` + person_id): age classes, one letter
    per image}, e.g. ``{"train": {"F0001_D": "ab"}, "val": {...}, "test": {...}}``; every split in
    ("train", "val", "test") gets its CSV and folder, empty when not given. Rows come back in the
    readers' order: train, val, test, each in CSV order.
    """
    root = Path(root)
    folder = mufac_folder(root)
    splits = DEFAULT_MUFAC_SPLITS if splits is None else splits
    unknown = set(splits) - set(MUFAC_SPLITS)
    if unknown:
        raise ValueError(f"unknown MUFAC split(s) {sorted(unknown)}")
    rows: list[Row] = []
    lines: dict[str, list[str]] = {}
    for split in MUFAC_SPLITS:
        lines[split] = [MUFAC_HEADER]
        (folder / f"{split}_images").mkdir(parents=True, exist_ok=True)
        for identity, ages in splits.get(split, {}).items():
            family, person = identity.split("_")
            for k, age in enumerate(ages, start=1):
                name = f"{family}_AGE_{person}_{_MUFAC_YEARS[age]}_{age}{k}.jpg"
                rows.append(Row(f"mufac/{split}_images/{name}", identity, "abcdefgh".index(age), name, split))
                lines[split].append(f"{family},{person},{age},{name}")
    _write_images(root, rows, "mufac", seed, size, duplicate_of)
    for split in MUFAC_SPLITS:
        _write_lines(mufac_csv(root, split), lines[split])
    return rows
