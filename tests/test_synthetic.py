import hashlib
import json
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from one_shui.data.faces import before_coherence, coherent, draw_face, random_face
from one_shui.data.sources import read_table
from one_shui.data.synthetic import ATTRIBUTES, SyntheticSpec, mufac_face, write_synthetic

SMALL = SyntheticSpec(identities=60, image_size=16)


def digest(folder):
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for path in files:
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("layout", ["celebahq", "mufac"])
def test_same_spec_same_bytes_other_seed_other_bytes(tmp_path, layout):
    a = write_synthetic(tmp_path / "a", layout, SMALL, progress=False)
    b = write_synthetic(tmp_path / "b", layout, SMALL, progress=False)
    other = SyntheticSpec(seed=1, identities=60, image_size=16)
    c = write_synthetic(tmp_path / "c", layout, other, progress=False)
    assert digest(a) == digest(b) != digest(c)


def test_celebahq_layout_is_read_by_the_real_reader(tmp_path):
    write_synthetic(tmp_path, "celebahq", SMALL, progress=False)
    table = read_table("celebahq", tmp_path)
    assert table.task == "multilabel" and table.class_names == tuple(ATTRIBUTES)
    assert table.targets.shape == (len(table), 40)
    assert len(set(table.identities)) == 60
    with Image.open(table.path(0)) as image:
        assert image.size == (16, 16) and image.mode == "RGB"
    assert not list(tmp_path.glob(".synthetic-*")), "the staging folder must be gone"


def test_mufac_layout_is_read_by_the_real_reader(tmp_path):
    write_synthetic(tmp_path, "mufac", SMALL, progress=False)
    table = read_table("mufac", tmp_path)
    assert table.task == "classification" and table.num_classes == 8
    assert len(set(table.identities)) == 60
    assert set(np.unique(table.targets)) <= set(range(8)) and len(np.unique(table.targets)) >= 5
    assert {f.split("/")[1] for f in table.files} == {"train_images", "val_images", "test_images"}


def test_images_per_identity_are_long_tailed(tmp_path):
    write_synthetic(tmp_path, "celebahq", SyntheticSpec(image_size=8), progress=False)
    counts = Counter(read_table("celebahq", tmp_path).identities).values()
    assert min(counts) == 2 and max(counts) >= 30
    assert 6 <= np.mean(list(counts)) <= 12


def test_existing_folder_is_reused_only_for_the_same_spec(tmp_path):
    folder = write_synthetic(tmp_path, "celebahq", SMALL, progress=False)
    stamp = (folder / "CelebAMask-HQ-attribute-anno.txt").stat().st_mtime_ns
    assert write_synthetic(tmp_path, "celebahq", SMALL, progress=False) == folder
    assert (folder / "CelebAMask-HQ-attribute-anno.txt").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="identities: 60 there, 61 asked"):
        write_synthetic(tmp_path, "celebahq", SyntheticSpec(identities=61, image_size=16), progress=False)
    with pytest.raises(ValueError, match="celebahq or mufac layout"):
        write_synthetic(tmp_path, "celeba", SMALL, progress=False)


def label_agreement(table, seen_person: bool) -> float:
    """Label accuracy of 1-nearest-neighbour (pixels) over images whose person is / is not in the pool."""
    pixels = np.stack(
        [np.asarray(Image.open(table.path(i)), dtype=np.float32).ravel() for i in range(len(table))]
    )
    ids = np.array(table.identities)
    people = np.unique(ids)
    queries = np.flatnonzero(np.isin(ids, people[::2]))
    squares = (pixels**2).sum(1)
    dist = squares[queries, None] + squares[None] - 2 * pixels[queries] @ pixels.T
    dist[np.arange(len(queries)), queries] = np.inf  # never the image itself
    if not seen_person:
        dist[ids[queries][:, None] == ids[None]] = np.inf  # the person is unknown to the "model"
    nearest = dist.argmin(1)
    return float((table.targets[queries] == table.targets[nearest]).mean())


@pytest.mark.parametrize("layout", ["celebahq", "mufac"])
def test_a_person_seen_before_is_predicted_better(tmp_path, layout):
    """The memorisation signal: knowing a person's other images helps on their labels."""
    write_synthetic(tmp_path, layout, SyntheticSpec(identities=80), progress=False)
    table = read_table(layout, tmp_path)
    seen, unseen = label_agreement(table, True), label_agreement(table, False)
    assert seen - unseen > 0.05, (seen, unseen)


FACES = SyntheticSpec(identities=24, image_size=16, style="faces")


@pytest.mark.parametrize("layout", ["celebahq", "mufac"])
def test_faces_are_written_from_the_spec_alone_and_read_by_the_real_reader(tmp_path, layout):
    a = write_synthetic(tmp_path / "a", layout, FACES, progress=False)
    b = write_synthetic(tmp_path / "b", layout, FACES, progress=False)
    textures = write_synthetic(tmp_path / "c", layout, replace(FACES, style="textures"), progress=False)
    assert digest(a) == digest(b) != digest(textures)
    table = read_table(layout, tmp_path / "a")
    assert len(set(table.identities)) == 24


def test_a_face_shows_each_of_its_attributes_where_it_is_drawn():
    """Glasses darken the eyes' band, a hat the top of the head, a necktie the chest: same person, pose
    and light (the same random draws), with and without the attribute."""
    face = random_face(np.random.default_rng(0))

    def photo(*shown: str) -> np.ndarray:
        return draw_face(face, "Black_Hair", frozenset(shown), 0.3, np.random.default_rng(1), 64).astype(
            float
        )

    plain = photo()
    for attribute, rows in (
        ("Eyeglasses", slice(22, 40)),
        ("Wearing_Hat", slice(0, 24)),
        ("Wearing_Necktie", slice(48, 64)),
    ):
        change = np.abs(photo(attribute) - plain).sum(axis=2)
        assert change.sum() > 0, attribute
        assert change[rows].sum() > 0.8 * change.sum(), attribute  # localised


def test_each_mufac_age_group_looks_older_than_the_one_before():
    """Same person, pose and light: every step up an age group changes the photo, the young groups the
    head (its outline grows), the old ones its inside (lines, bags, grey hair, a receding hairline)."""
    face, looks = random_face(np.random.default_rng(0)), coherent({"Black_Hair", "Smiling"})
    photos = [
        mufac_face(face, looks, group, np.random.default_rng(1), 64).astype(float) for group in range(8)
    ]
    for group in range(1, 8):
        change = np.abs(photos[group] - photos[group - 1]).sum(axis=2)
        assert change.mean() > 3, group  # a grey level of 1 per channel and pixel on average


def test_photos_show_what_a_person_can_show_together():
    assert coherent({"Bald", "Bangs", "Black_Hair"}) == {"Bald", "No_Beard"}
    assert coherent({"Black_Hair", "Blond_Hair", "Wavy_Hair", "Straight_Hair", "Male"}) == {
        "Black_Hair",
        "Wavy_Hair",
        "Male",
    }
    assert coherent({"Goatee", "Mustache", "Wearing_Lipstick"}) == {"Wearing_Lipstick", "No_Beard"}
    assert coherent({"Male", "Goatee", "Heavy_Makeup"}) == {"Male", "Goatee"}


def test_attributes_show_as_often_as_asked_once_incoherent_ones_are_dropped():
    """A beard only on men, one hair colour: drawn more often, each still shows with its prevalence."""
    rng = np.random.default_rng(0)
    asked = dict(zip(ATTRIBUTES, rng.uniform(0.1, 0.25, len(ATTRIBUTES)), strict=True)) | {"Male": 0.4}
    drawn = before_coherence(asked)
    odds = np.array([drawn[name] for name in ATTRIBUTES])
    photos = [
        coherent({a for a, v in zip(ATTRIBUTES, row, strict=True) if v})
        for row in rng.random((20000, 40)) < odds
    ]
    for name in ("Sideburns", "Gray_Hair", "Straight_Hair", "Wearing_Lipstick", "Smiling"):
        shown = np.mean([name in photo for photo in photos])
        assert abs(shown - asked[name]) < 0.015, (name, shown, asked[name])
    assert drawn["Sideburns"] == pytest.approx(asked["Sideburns"] / 0.4)  # on the 40 % who are men


def test_a_folder_written_before_faces_existed_is_the_textures_one(tmp_path):
    folder = write_synthetic(tmp_path, "celebahq", SMALL, progress=False)
    stamp = json.loads((folder / "synthetic.json").read_text())
    del stamp["style"]  # as written before the option existed
    (folder / "synthetic.json").write_text(json.dumps(stamp))
    assert write_synthetic(tmp_path, "celebahq", SMALL, progress=False) == folder
    with pytest.raises(FileExistsError, match="style"):
        write_synthetic(tmp_path, "celebahq", replace(SMALL, style="faces"), progress=False)
