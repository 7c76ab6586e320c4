"""The embedded default dataset: small synthetic "faces" with identities, written to disk in the exact
CelebA-HQ layout (40 attributes) or MUFAC layout (8 age groups), so the real readers load them.

Images are sums of horizontally symmetric cosine patterns (symmetric, so a flip augmentation keeps
their meaning). Three disjoint sets of patterns carry:

* the identity's appearance: fixed coefficients per person, jittered per image (pose, light), so a
  person is recognisable across their images;
* the visible labels: one pattern per attribute (or per age group), present or absent per image;
* nothing else: per-image brightness, a one-pixel shift and pixel noise.

Identity unlearning must be measurable, so each person also carries *idiosyncratic labels*: on a few
attributes (CelebA-HQ) or on the age group (MUFAC) their label disagrees with what the image shows,
consistently across all their images. A model can only fit those labels by memorising the person,
so a model trained on someone scores better on that person's images than a model that never saw them.
Images per identity are long-tailed (2 to ``max_images``), like CelebA.
"""

from __future__ import annotations

import csv
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..errors import OutputExistsError, SettingError
from . import faces
from .sources import AGE_GROUPS

# 2: the procedural faces; 3: bolder, MUFAC age signs, prevalence as shown. The textures write the bytes of 1.
SYNTHETIC_FORMAT = 3
STAMP = "synthetic.json"
Layout = Literal["celebahq", "mufac"]
LAYOUT_FOLDER = {"celebahq": "CelebAMask-HQ", "mufac": "mufac"}
# The 40 CelebA attribute names, in the official order.
ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
# Attributes that change from photo to photo of the same person; the others belong to the person.
PER_IMAGE = frozenset(
    "Blurry Mouth_Slightly_Open Smiling Eyeglasses Wearing_Hat Wearing_Earrings Wearing_Necklace "
    "Wearing_Necktie Wearing_Lipstick Heavy_Makeup Bangs Narrow_Eyes".split()
)


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines the synthetic dataset; the same spec writes the same bytes."""

    seed: int = 0
    identities: int = 300
    image_size: int = 32
    mean_images: float = 9.0  # mean images per identity (long-tailed, at least 2)
    max_images: int = 40
    quirks: int = 4  # CelebA-HQ: attributes whose label each person contradicts
    quirky_share: float = 0.6  # MUFAC: share of people whose age label differs from their looks
    identity_strength: float = 1.5  # amplitude of the identity's appearance
    label_strength: float = 0.3  # amplitude of a visible label's pattern
    jitter: float = 0.25  # per-image change of the appearance, relative to identity_strength
    noise: float = 0.04  # pixel noise (images in [0, 1])
    style: Literal["textures", "faces"] = "textures"  # cosine textures, or procedural faces (data/faces.py)


def write_synthetic(
    root: str | Path, layout: Layout, spec: SyntheticSpec = SyntheticSpec(), progress=True
) -> Path:
    """Write the dataset under ``root`` in ``layout`` unless the same spec is already there.

    Returns the dataset folder. The folder is written in a temporary place and renamed when
    complete, so an interrupted run leaves nothing half-written. A folder written from another spec
    is an error (delete it or choose another root), never silently reused.
    """
    if layout not in LAYOUT_FOLDER:
        raise SettingError(f"synthetic data is written in the celebahq or mufac layout, not {layout!r}")
    root = Path(root)
    folder = root / LAYOUT_FOLDER[layout]
    stamp = {"format": SYNTHETIC_FORMAT, "layout": layout, **asdict(spec)}
    if folder.exists():
        found = _read_stamp(folder)
        if found is not None:  # a field added since the folder was written has its default there
            found = {**asdict(SyntheticSpec()), **found}
        if found == stamp:
            return folder
        raise OutputExistsError(
            f"{folder} exists but was not written from this synthetic spec ({_difference(found, stamp)}); "
            "delete it or choose another data root"
        )
    root.mkdir(parents=True, exist_ok=True)
    people = _people(spec)
    with tempfile.TemporaryDirectory(dir=root, prefix=".synthetic-") as tmp:
        staging = Path(tmp) / folder.name
        staging.mkdir()
        writer = _write_celebahq if layout == "celebahq" else _write_mufac
        writer(staging, people, spec, progress)
        (staging / STAMP).write_text(json.dumps(stamp, indent=1))
        try:
            staging.rename(folder)
        except OSError:  # another process (a DDP rank) finished first: keep its copy if it is ours
            if _read_stamp(folder) != stamp:
                raise
    return folder


# --- the people and their images ---------------------------------------------------------------


@dataclass
class _People:
    appearance: np.ndarray  # (P, K_id) coefficients of the identity patterns
    counts: np.ndarray  # (P,) images per person
    rng: np.random.Generator
    faces: list[faces.Face] | None = None  # style "faces": each person's fixed look


def _people(spec: SyntheticSpec) -> _People:
    if spec.identities < 4 or spec.max_images < 2 or spec.mean_images < 2:
        raise SettingError("a synthetic dataset needs at least 4 identities and 2 images per identity")
    rng = np.random.default_rng(spec.seed)
    extra = rng.lognormal(np.log(max(spec.mean_images - 2, 0.5)) - 0.9**2 / 2, 0.9, spec.identities)
    counts = np.clip(np.round(2 + extra), 2, spec.max_images).astype(int)
    appearance = rng.standard_normal((spec.identities, len(_identity_patterns(spec.image_size))))
    looks = [faces.random_face(rng) for _ in range(spec.identities)] if spec.style == "faces" else None
    return _People(appearance, counts, rng, looks)


def _basis(size: int, u: int, v: int) -> np.ndarray:
    """A cosine pattern, symmetric under horizontal flip when ``u`` is even; unit RMS."""
    x = (np.arange(size) + 0.5) / size
    pattern = np.outer(np.cos(np.pi * v * x), np.cos(np.pi * u * x))  # rows: y, columns: x
    return pattern / np.sqrt(np.mean(pattern**2))


def _patterns(size: int, frequencies: list[tuple[int, int]], channels: np.ndarray) -> np.ndarray:
    """(len(frequencies), 3, size, size): one spatial pattern per frequency, tinted by a colour."""
    return np.stack(
        [c[:, None, None] * _basis(size, u, v) for (u, v), c in zip(frequencies, channels, strict=True)]
    )


def _identity_patterns(size: int) -> np.ndarray:
    # Low frequencies in each colour channel separately: the person's look.
    freqs = [(u, v) for u in (0, 2) for v in range(4)]
    eye = np.eye(3)
    return np.concatenate(
        [_patterns(size, freqs, np.repeat(eye[c : c + 1], len(freqs), 0)) for c in range(3)]
    )


def _label_patterns(size: int, count: int, seed: int) -> np.ndarray:
    # Higher frequencies, disjoint from the identity's, one per visible label, each with its own tint.
    freqs = [(u, v) for v in range(4, 12) for u in (0, 2, 4, 6, 8)][:count]
    tints = np.random.default_rng([seed, 7]).normal(size=(count, 3))
    tints /= np.linalg.norm(tints, axis=1, keepdims=True) / np.sqrt(3)
    return _patterns(size, freqs, tints)


def _render(
    people: _People,
    person: int,
    visible: np.ndarray,
    spec: SyntheticSpec,
    labels_bank: np.ndarray,
    identity_bank: np.ndarray,
) -> np.ndarray:
    """Images of one person, (n, size, size, 3) uint8, given their visible labels (n, L) in {0, 1}."""
    rng, n = people.rng, len(visible)
    looks = people.appearance[person] + spec.jitter * rng.standard_normal((n, identity_bank.shape[0]))
    scale = spec.identity_strength / np.sqrt(identity_bank.shape[0])
    image = np.einsum("nk,kchw->nchw", looks * scale, identity_bank)
    image += spec.label_strength * np.einsum("nl,lchw->nchw", 2.0 * visible - 1.0, labels_bank) / 2
    image = 0.5 + 0.12 * image + rng.uniform(-0.05, 0.05, (n, 1, 1, 1))
    shifts = rng.integers(-1, 2, (n, 2))
    image = np.stack([np.roll(img, tuple(s), axis=(1, 2)) for img, s in zip(image, shifts, strict=True)])
    image += spec.noise * rng.standard_normal(image.shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)


def _save(images: np.ndarray, paths: list[Path]) -> None:
    for image, path in zip(images, paths, strict=True):
        Image.fromarray(image).save(path, quality=95)


# --- CelebA-HQ layout ----------------------------------------------------------------------------


def _write_celebahq(folder: Path, people: _People, spec: SyntheticSpec, progress: bool) -> None:
    rng, size = people.rng, spec.image_size
    n_people, n_attr = len(people.counts), len(ATTRIBUTES)
    labels_bank, identity_bank = _label_patterns(size, n_attr, spec.seed), _identity_patterns(size)
    per_image = np.array([a in PER_IMAGE for a in ATTRIBUTES])
    # Long-tailed, like CelebA's; faces keep at least 10 % (a few positives of every person-level attribute
    # in a pool of 60 people, whose AP is otherwise a coin toss).
    floor = 0.04 if people.faces is None else 0.1
    prevalence = np.clip(rng.beta(0.8, 2.0, n_attr), floor, 0.8)
    drawn = prevalence
    if people.faces is not None:  # what a photo cannot show is dropped, so drawn more often to show as often
        drawn = np.array(
            list(faces.before_coherence(dict(zip(ATTRIBUTES, prevalence, strict=True))).values())
        )
    propensity = rng.beta(drawn * 4, (1 - drawn) * 4, (n_people, n_attr))
    person_level = rng.random((n_people, n_attr)) < drawn
    quirk_choices = np.flatnonzero(~per_image)
    # Faces: annotators disagree on the ambiguous attributes, a person's quirks fall on attributes in
    # proportion to min(p, 1 - p), as a contradicted rare attribute would bury its few true positives.
    ambiguity = np.minimum(prevalence, 1 - prevalence)[quirk_choices]
    quirk_odds = None if people.faces is None else ambiguity / ambiguity.sum()
    if spec.quirks > len(quirk_choices):
        raise SettingError(
            f"quirks={spec.quirks}: at most {len(quirk_choices)} attributes belong to a person"
        )

    total = int(people.counts.sum())
    order = rng.permutation(total)  # file names do not reveal who is who
    images_dir = folder / "CelebA-HQ-img"
    images_dir.mkdir()
    rows, identity_rows, start = [None] * total, [None] * total, 0
    for person in tqdm(range(n_people), desc="synthetic CelebA-HQ", disable=not progress, unit="id"):
        n = people.counts[person]
        visible = np.where(per_image, rng.random((n, n_attr)) < propensity[person], person_level[person])
        if people.faces is not None:
            shown = [
                faces.coherent({a for a, v in zip(ATTRIBUTES, row, strict=True) if v}) for row in visible
            ]
            visible = np.array([[a in photo for a in ATTRIBUTES] for photo in shown])
        # drawn before the images, as always
        quirks = rng.choice(quirk_choices, spec.quirks, replace=False, p=quirk_odds)
        labels = visible.copy()
        labels[:, quirks] = ~labels[:, quirks]
        if people.faces is not None:
            images = np.stack(
                [faces.draw_face(people.faces[person], faces.hair_of(photo), photo,
                                 0.3 if "Young" in photo else 0.8, rng, size) for photo in shown]
            )  # fmt: skip
        else:
            images = _render(people, person, visible, spec, labels_bank, identity_bank)
        names = [f"{k}.jpg" for k in order[start : start + n]]
        _save(images, [images_dir / m for m in names])
        for name, k, row in zip(names, order[start : start + n], labels, strict=True):
            rows[k] = f"{name} " + " ".join("1" if v else "-1" for v in row)
            identity_rows[k] = f"{name} {person}"
        start += n
    (folder / "CelebAMask-HQ-attribute-anno.txt").write_text(
        f"{total}\n{' '.join(ATTRIBUTES)}\n" + "\n".join(rows) + "\n"
    )
    (folder / "CelebA-HQ-identity.txt").write_text("\n".join(identity_rows) + "\n")


# --- MUFAC layout --------------------------------------------------------------------------------


# A MUFAC person's own looks leave out what tells an age or changes the head's shape, which the age group
# shows in: the head's size (a to d), lines (e on), bags under the eyes (f on), grey hair (g, h) and a
# receding hairline (h).
MUFAC_LOOKS = sorted(set(ATTRIBUTES) - {"Young", "Blurry", "Chubby", "Oval_Face", "Double_Chin", "Bald",
                                        "Gray_Hair", "Bags_Under_Eyes", "Receding_Hairline"})  # fmt: skip
AGE_SIGNS = {"Bags_Under_Eyes": 5, "Receding_Hairline": 7}  # the first group that shows each
GREY_FROM = 6
ADULT_FROM = 3  # d (20 to 30): the younger groups wear no beard and no make-up


def mufac_face(face: faces.Face, looks: frozenset[str], group: int, rng, size: int) -> np.ndarray:
    """One photo of a MUFAC person with their ``looks``, in age group ``group`` (0: a, 7: h)."""
    signs = frozenset(name for name, first in AGE_SIGNS.items() if group >= first)
    if group < ADULT_FROM:
        looks = looks - set(faces.FACIAL_HAIR) - set(faces.MAKEUP) | {"No_Beard"}
    hair = "Gray_Hair" if group >= GREY_FROM else faces.hair_of(looks)
    return faces.draw_face(face, hair, looks | signs, group / (len(AGE_GROUPS) - 1), rng, size)


def _write_mufac(folder: Path, people: _People, spec: SyntheticSpec, progress: bool) -> None:
    rng, size = people.rng, spec.image_size
    groups = len(AGE_GROUPS)
    labels_bank, identity_bank = _label_patterns(size, groups, spec.seed), _identity_patterns(size)
    n_people = len(people.counts)
    base_age = rng.integers(0, groups, n_people)
    quirky = rng.random(n_people) < spec.quirky_share
    offset = rng.choice([1, 2], n_people) * np.where(base_age < groups // 2, 1, -1)  # stays in a..h
    sheet_of = rng.choice(3, n_people, p=[0.7, 0.15, 0.15])  # which official CSV lists the person
    sheets: dict[str, list[list[str]]] = {name: [] for name in ("train", "val", "test")}
    for name in sheets:
        (folder / f"{name}_images").mkdir()
    counter = 0
    for person in tqdm(range(n_people), desc="synthetic MUFAC", disable=not progress, unit="id"):
        n = people.counts[person]
        ages = np.clip(base_age[person] + rng.choice([-1, 0, 0, 0, 1], n), 0, groups - 1)
        labels = ages + offset[person] * quirky[person]
        family, role = f"F{person // 3:04d}", ("D", "M", "S")[person % 3]
        sheet = ("train", "val", "test")[sheet_of[person]]
        names = [f"img_{counter + j:05d}.jpg" for j in range(n)]
        counter += n
        paths = [folder / f"{sheet}_images" / m for m in names]
        if people.faces is not None:
            looks = faces.coherent(set(rng.choice(MUFAC_LOOKS, 5, replace=False)))
            images = np.stack([mufac_face(people.faces[person], looks, age, rng, size) for age in ages])
        else:
            images = _render(
                people, person, np.eye(groups, dtype=bool)[ages], spec, labels_bank, identity_bank
            )
        _save(images, paths)
        sheets[sheet] += [[family, role, AGE_GROUPS[age], m] for age, m in zip(labels, names, strict=True)]
    for name, rows in sheets.items():
        with (folder / f"custom_{name}_dataset.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["family_id", "person_id", "age_class", "image_path"])
            writer.writerows(rows)


def _read_stamp(folder: Path) -> dict | None:
    try:
        return json.loads((folder / STAMP).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _difference(found: dict | None, wanted: dict) -> str:
    if found is None:
        return f"no readable {STAMP}"
    changed = [k for k in wanted if found.get(k) != wanted[k]]
    return ", ".join(f"{k}: {found.get(k)!r} there, {wanted[k]!r} asked" for k in changed)
