"""The dataset readers on tiny folders in the real layouts: what they read, and every way they refuse."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from layouts import (
    CELEBA_ATTRIBUTES,
    CELEBA_FILES,
    MUFAC_SPLITS,
    celeba_folder,
    celebahq_folder,
    mufac_csv,
    mufac_folder,
    write_celeba,
    write_celebahq,
    write_mufac,
)

from one_shui.data.sources import (
    LAYOUTS,
    AnnotationError,
    DatasetLayoutError,
    DataWarning,
    Table,
    read_celeba,
    read_celebahq,
    read_mufac,
    read_table,
)

WRITERS = {"celebahq": write_celebahq, "celeba": write_celeba, "mufac": write_mufac}
TOP_FOLDERS = {"celebahq": "CelebAMask-HQ", "celeba": "celeba", "mufac": "mufac"}
OPTIONS = {"celebahq": {}, "celeba": {"verify_md5": False}, "mufac": {}}


@contextmanager
def raises_naming(exception: type[BaseException], *fragments):
    """``pytest.raises`` that also checks the message names every fragment (paths, values...)."""
    with pytest.raises(exception) as info:
        yield info
    message = str(info.value)
    for fragment in fragments:
        assert str(fragment) in message, f"{str(fragment)!r} not in the message:\n{message}"


def edit_lines(path: Path, edit) -> None:
    """Rewrite ``path`` with ``edit(lines)`` (a list of lines without their line ends)."""
    lines = path.read_text().splitlines()
    path.write_text("".join(line + "\n" for line in edit(lines)))


def set_line(path: Path, number: int, text: str) -> None:
    """Replace line ``number`` (1-based) of ``path``."""

    def edit(lines):
        lines[number - 1] = text
        return lines

    edit_lines(path, edit)


def assert_table(table: Table, rows, name: str, root: Path) -> None:
    assert table.name == name
    assert table.root == root
    assert len(table) == len(rows)
    assert table.files == tuple(row.file for row in rows)
    assert table.identities == tuple(row.identity for row in rows)
    if table.task == "multilabel":
        assert table.targets.dtype == np.uint8
        assert table.targets.shape == (len(rows), 40)
    else:
        assert table.targets.dtype == np.int64
        assert table.targets.shape == (len(rows),)
    np.testing.assert_array_equal(table.targets, np.array([row.target for row in rows]))
    assert all(table.path(i).is_file() for i in range(len(table)))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The data root, one level below ``tmp_path`` so that tests can put things outside it."""
    path = tmp_path / "data"
    path.mkdir()
    return path


# --- reading good folders ------------------------------------------------------------------------


@pytest.mark.parametrize("shuffled", [False, True])
def test_celebahq_reads_layout(root, shuffled):
    rows = write_celebahq(root, {"7": 3, "9": 2, "12": 2}, shuffle_identity_file=shuffled)
    table = read_celebahq(root)
    assert_table(table, rows, "celebahq", root)
    assert table.files[0] == "CelebAMask-HQ/CelebA-HQ-img/0.jpg"
    assert table.identities == ("7", "7", "7", "9", "9", "12", "12")
    assert table.task == "multilabel"
    assert table.class_names == CELEBA_ATTRIBUTES
    assert table.num_classes == 40
    # the targets really vary: both values in every file, and not all rows alike
    assert set(np.unique(table.targets)) == {0, 1}
    assert len({tuple(t) for t in table.targets}) > 1


def test_celeba_reads_layout(root):
    rows = write_celeba(root, {"2880": 3, "17": 2, "1005": 2})
    table = read_celeba(root, verify_md5=False)
    assert_table(table, rows, "celeba", root)
    assert table.files[0] == "celeba/img_align_celeba/000001.jpg"
    assert table.identities == ("2880", "2880", "2880", "17", "17", "1005", "1005")
    assert table.task == "multilabel"
    # the header of list_attr_celeba.txt ends with a space: no empty 41st class
    assert table.class_names == CELEBA_ATTRIBUTES
    # split="all": every partition is read, in list_eval_partition.txt order
    assert {row.split for row in rows} == {0, 1, 2}


def test_celeba_maps_attributes_from_signs(root):
    write_celeba(root, {"1": 2})
    attr = celeba_folder(root) / "list_attr_celeba.txt"
    set_line(attr, 3, "000001.jpg " + " ".join(["-1", " 1"] * 20))
    set_line(attr, 4, "000002.jpg " + " ".join([" 1", "-1"] * 20))
    table = read_celeba(root, verify_md5=False)
    np.testing.assert_array_equal(table.targets, [[0, 1] * 20, [1, 0] * 20])


def test_celebahq_maps_attributes_from_signs(root):
    write_celebahq(root, {"1": 1})
    set_line(
        celebahq_folder(root) / "CelebAMask-HQ-attribute-anno.txt",
        3,
        "0.jpg  " + " ".join(["1", "-1", "-1", "1"] * 10),
    )
    np.testing.assert_array_equal(read_celebahq(root).targets, [[1, 0, 0, 1] * 10])


def test_mufac_reads_and_merges_the_three_csvs(root):
    splits = {
        "train": {"F0001_D": "ab", "F0002_A": "c"},
        "val": {"F0003_B": "d"},
        "test": {"F0001_D": "h", "F0004_C": "ef"},
    }
    rows = write_mufac(root, splits)
    table = read_mufac(root)
    assert_table(table, rows, "mufac", root)
    assert table.task == "classification"
    assert table.class_names == tuple("abcdefgh")
    assert table.num_classes == 8
    assert table.targets.tolist() == [0, 1, 2, 3, 7, 4, 5]
    assert table.identities == ("F0001_D", "F0001_D", "F0002_A", "F0003_B", "F0001_D", "F0004_C", "F0004_C")
    folders = [f.split("/")[1] for f in table.files]
    assert folders == ["train_images"] * 3 + ["val_images"] + ["test_images"] * 3
    assert table.files[0] == "mufac/train_images/F0001_AGE_D_5_a1.jpg"


def test_mufac_reads_csvs_without_header_and_empty_splits(root):
    rows = write_mufac(root, {"train": {"F0001_D": "ab"}, "test": {"F0002_A": "g"}})
    for split in MUFAC_SPLITS:
        edit_lines(mufac_csv(root, split), lambda lines: lines[1:])
    assert mufac_csv(root, "val").read_text() == ""
    assert_table(read_mufac(root), rows, "mufac", root)


def test_mufac_identity_joins_family_and_person(root):
    write_mufac(root, {"train": {"F0001_D": "a"}, "val": {"F0001_A": "a"}, "test": {"F0002_D": "a"}})
    assert read_mufac(root).identities == ("F0001_D", "F0001_A", "F0002_D")


@pytest.mark.parametrize("dataset", ["celebahq", "celeba", "mufac"])
def test_read_table_dispatches(root, dataset):
    rows = WRITERS[dataset](root)
    table = read_table(dataset, root, **OPTIONS[dataset])
    assert_table(table, rows, dataset, root)
    assert table.name == dataset


def test_read_table_accepts_string_root(root):
    rows = write_celebahq(root)
    assert_table(read_table("celebahq", str(root)), rows, "celebahq", root)


def test_read_table_rejects_unknown_dataset(root):
    with raises_naming(ValueError, "unknown dataset 'imagenet'", "celebahq, celeba, mufac"):
        read_table("imagenet", root)


def test_symlinked_folder_inside_root_is_accepted(root):
    rows = write_celebahq(root)
    images = celebahq_folder(root) / "CelebA-HQ-img"
    elsewhere = root / "store" / "hq"
    elsewhere.parent.mkdir()
    images.rename(elsewhere)
    images.symlink_to(elsewhere, target_is_directory=True)
    assert_table(read_celebahq(root), rows, "celebahq", root)


# --- errors common to every dataset --------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["celebahq", "celeba", "mufac"])
def test_missing_root_folder_shows_expected_layout(tmp_path, dataset):
    empty = tmp_path / "empty"
    empty.mkdir()
    with raises_naming(
        DatasetLayoutError,
        "missing folder",
        empty / TOP_FOLDERS[dataset],
        f"Expected layout of {dataset}",
        LAYOUTS[dataset],
    ) as info:
        read_table(dataset, empty, **OPTIONS[dataset])
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("dataset", ["celebahq", "celeba", "mufac"])
def test_root_that_does_not_exist(tmp_path, dataset):
    with raises_naming(DatasetLayoutError, tmp_path / "nowhere" / TOP_FOLDERS[dataset]):
        read_table(dataset, tmp_path / "nowhere", **OPTIONS[dataset])


ANNOTATION_FILES = (
    [
        ("celebahq", "CelebAMask-HQ/CelebAMask-HQ-attribute-anno.txt"),
        ("celebahq", "CelebAMask-HQ/CelebA-HQ-identity.txt"),
    ]
    + [("celeba", f"celeba/{n}") for n in CELEBA_FILES]
    + [("mufac", f"mufac/custom_{split}_dataset.csv") for split in MUFAC_SPLITS]
)


@pytest.mark.parametrize(("dataset", "relative"), ANNOTATION_FILES)
def test_missing_annotation_file(root, dataset, relative):
    WRITERS[dataset](root)
    (root / relative).unlink()
    with raises_naming(
        DatasetLayoutError, f"missing file {root / relative}", f"Expected layout of {dataset}"
    ):
        read_table(dataset, root, **OPTIONS[dataset])


IMAGE_FOLDERS = [
    ("celebahq", "CelebAMask-HQ/CelebA-HQ-img"),
    ("celeba", "celeba/img_align_celeba"),
    *[("mufac", f"mufac/{split}_images") for split in MUFAC_SPLITS],
]


@pytest.mark.parametrize(("dataset", "relative"), IMAGE_FOLDERS)
def test_missing_image_folder(root, dataset, relative):
    WRITERS[dataset](root)
    shutil.rmtree(root / relative)
    with raises_naming(DatasetLayoutError, f"missing folder {root / relative}"):
        read_table(dataset, root, **OPTIONS[dataset])


@pytest.mark.parametrize("dataset", ["celebahq", "celeba", "mufac"])
def test_listed_image_missing_on_disk(root, dataset):
    rows = WRITERS[dataset](root)
    for gone in (rows[2], rows[-1]):
        (root / gone.file).unlink()
    with raises_naming(
        DatasetLayoutError, "2 listed image(s) are missing", root, rows[2].file, rows[-1].file
    ):
        read_table(dataset, root, **OPTIONS[dataset])


@pytest.mark.parametrize(
    ("dataset", "relative"),
    [*IMAGE_FOLDERS, ("celebahq", "CelebAMask-HQ"), ("celeba", "celeba"), ("mufac", "mufac")],
)
def test_symlinked_folder_leading_outside_root_is_refused(root, dataset, relative):
    WRITERS[dataset](root)
    outside = root.parent / "outside"
    (root / relative).rename(outside)
    (root / relative).symlink_to(outside, target_is_directory=True)
    with raises_naming(DatasetLayoutError, root / relative, "leads outside the data root"):
        read_table(dataset, root, **OPTIONS[dataset])


# --- CelebA-HQ errors ----------------------------------------------------------------------------


@pytest.fixture
def hq(root):
    """A CelebA-HQ folder: (root, rows, attribute file, identity file)."""
    rows = write_celebahq(root, {"7": 3, "9": 2, "12": 2})
    folder = celebahq_folder(root)
    return root, rows, folder / "CelebAMask-HQ-attribute-anno.txt", folder / "CelebA-HQ-identity.txt"


def test_celebahq_image_without_identity(hq):
    root, _, anno, ident = hq
    edit_lines(ident, lambda lines: [line for line in lines if not line.startswith(("3.jpg", "5.jpg"))])
    with raises_naming(ValueError, "2 image(s)", anno, ident, "3.jpg, 5.jpg"):
        read_celebahq(root)


def test_celebahq_identity_entries_without_attributes_warn_and_name_dropped_identities(hq):
    root, rows, _, ident = hq
    edit_lines(ident, lambda lines: [*lines, "50.jpg 4242", "51.jpg 7", "52.jpg 4242"])
    with pytest.warns(DataWarning) as record:
        table = read_celebahq(root)
    assert len(record) == 1
    message = str(record[0].message)
    assert str(ident) in message
    assert "3 image(s) have no attributes" in message
    assert "50.jpg, 51.jpg, 52.jpg" in message
    # 7 still has images; 4242 has none left
    assert message.endswith("identities with no image left, dropped: 4242")
    assert record[0].filename == __file__  # points at the caller of the reader
    assert_table(table, rows, "celebahq", root)


def test_celebahq_identity_entries_without_attributes_of_kept_identity(hq):
    root, _, _, ident = hq
    edit_lines(ident, lambda lines: [*lines, "70.jpg 9"])
    with pytest.warns(DataWarning, match=r"1 image\(s\) have no attributes and are ignored: 70\.jpg$"):
        table = read_celebahq(root)
    assert "9" in table.identities


def test_celebahq_unlisted_identities_are_an_error_under_the_test_settings(hq):
    """pyproject turns DataWarning into an error in the tests: nothing can warn unnoticed."""
    root, _, _, ident = hq
    edit_lines(ident, lambda lines: [*lines, "70.jpg 9"])
    with pytest.raises(DataWarning):
        read_celebahq(root)


def test_celebahq_image_with_two_identities(hq):
    root, _, _, ident = hq
    edit_lines(ident, lambda lines: [*lines, "0.jpg 99"])
    with raises_naming(ValueError, f"{ident}:8", "0.jpg is given two identities (7, 99)"):
        read_celebahq(root)


def test_celebahq_same_identity_listed_twice_is_fine(hq):
    root, rows, _, ident = hq
    edit_lines(ident, lambda lines: [*lines, "0.jpg 7", ""])
    assert_table(read_celebahq(root), rows, "celebahq", root)


ATTRIBUTE_ROW = "0.jpg " + " ".join(["1"] * 40)


@pytest.mark.parametrize(
    "row",
    [
        ATTRIBUTE_ROW.replace(" 1", " 0", 1),  # a value outside {-1, 1}
        ATTRIBUTE_ROW.replace(" 1", " 2", 1),
        ATTRIBUTE_ROW.replace(" 1", " x", 1),
        ATTRIBUTE_ROW.rsplit(" ", 1)[0],  # 39 values
        ATTRIBUTE_ROW + " 1",  # 41 values
        "0.jpg",
    ],
    ids=["zero", "two", "letter", "39-values", "41-values", "no-values"],
)
def test_celebahq_malformed_attribute_row(hq, row):
    root, _, anno, _ = hq
    set_line(anno, 4, row)
    with raises_naming(DatasetLayoutError, f"{anno}:4:", "40 values in {-1, 1}"):
        read_celebahq(root)


def test_celebahq_malformed_identity_row(hq):
    root, _, _, ident = hq
    set_line(ident, 2, "1.jpg 7 extra")
    with raises_naming(DatasetLayoutError, f"{ident}:2:", "'1.jpg 7 extra'"):
        read_celebahq(root)


def test_celebahq_count_line_mismatch(hq):
    root, _, anno, _ = hq
    set_line(anno, 1, "30000")
    with raises_naming(DatasetLayoutError, f"{anno}:1: says 30000 images but lists 7"):
        read_celebahq(root)


def test_celebahq_count_line_not_a_number(hq):
    root, _, anno, _ = hq
    set_line(anno, 1, "seven")
    with raises_naming(DatasetLayoutError, f"{anno}:1:", "'seven'"):
        read_celebahq(root)


def test_celebahq_attribute_file_without_header(hq):
    root, _, anno, _ = hq
    anno.write_text("0\n")
    with raises_naming(DatasetLayoutError, anno, "count line and a header line"):
        read_celebahq(root)


def test_celebahq_image_listed_twice(hq):
    root, _, anno, _ = hq

    def edit(lines):
        return ["8", *lines[1:], lines[4].replace("2.jpg", "0.jpg", 1)]

    edit_lines(anno, edit)
    with raises_naming(DatasetLayoutError, anno, "lists an image twice: 0.jpg"):
        read_celebahq(root)


BAD_NAMES = ["../x.jpg", "a/b.jpg", "/tmp/x.jpg", "..", "a\\b.jpg", "../../../etc/passwd"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_celebahq_image_name_leaving_the_root(hq, bad):
    root, _, anno, ident = hq
    edit_lines(anno, lambda lines: [line.replace("2.jpg", bad, 1) for line in lines])
    edit_lines(ident, lambda lines: [line.replace("2.jpg", bad, 1) for line in lines])
    with raises_naming(DatasetLayoutError, f"{anno}:5:", f"image name {bad!r} is not a plain file name"):
        read_celebahq(root)


# --- CelebA errors -------------------------------------------------------------------------------


@pytest.fixture
def celeba(root):
    """A CelebA folder: (root, rows, folder)."""
    rows = write_celeba(root, {"2880": 3, "17": 2, "1005": 2})
    return root, rows, celeba_folder(root)


@pytest.mark.parametrize("through_read_table", [False, True])
def test_celeba_md5_check_on_by_default(celeba, through_read_table):
    root, _, folder = celeba
    with raises_naming(DatasetLayoutError, f"torchvision rejected {folder}", "MD5", "verify_md5=False"):
        read_table("celeba", root) if through_read_table else read_celeba(root)


def test_celeba_md5_check_explicit(celeba):
    root, _, _ = celeba
    with raises_naming(DatasetLayoutError, "verify_md5"):
        read_celeba(root, verify_md5=True)


@pytest.mark.parametrize(("name", "first"), [("identity_CelebA.txt", 1), ("list_attr_celeba.txt", 3)])
def test_celeba_rows_out_of_order_name_the_line(celeba, name, first):
    root, _, folder = celeba

    def swap(lines):
        lines[first], lines[first + 1] = lines[first + 1], lines[first]  # rows 000002 and 000003
        return lines

    edit_lines(folder / name, swap)
    expected = f"{folder / name}:{first + 1}: lists 000003.jpg where list_eval_partition.txt has 000002.jpg"
    with raises_naming(DatasetLayoutError, expected):
        read_celeba(root, verify_md5=False)


def test_celeba_partition_order_differs_from_identities(celeba):
    root, _, folder = celeba
    edit_lines(folder / "list_eval_partition.txt", lambda lines: lines[::-1])
    ident = folder / "identity_CelebA.txt"
    with raises_naming(DatasetLayoutError, f"{ident}:1: lists 000001.jpg", "has 000007.jpg"):
        read_celeba(root, verify_md5=False)


def test_celeba_identity_file_shorter_than_partition(celeba):
    root, _, folder = celeba
    edit_lines(folder / "identity_CelebA.txt", lambda lines: lines[:-1])
    with raises_naming(
        DatasetLayoutError, folder / "identity_CelebA.txt", "lists 6 images, list_eval_partition.txt 7"
    ):
        read_celeba(root, verify_md5=False)


ATTR_ROW = "000002.jpg " + " ".join([" 1"] * 40)


@pytest.mark.parametrize(
    "row",
    [
        ATTR_ROW.replace(" 1", " 0", 1),
        ATTR_ROW.replace(" 1", " 2", 1),
        ATTR_ROW.replace(" 1", "-3", 1),
        ATTR_ROW.rsplit(" ", 1)[0],
        ATTR_ROW + "  1",
    ],
    ids=["zero", "two", "minus-three", "39-values", "41-values"],
)
def test_celeba_malformed_attribute_row(celeba, row):
    root, _, folder = celeba
    attr = folder / "list_attr_celeba.txt"
    set_line(attr, 4, row)
    with raises_naming(DatasetLayoutError, f"{attr}:4:", "40 values in {-1, 1}"):
        read_celeba(root, verify_md5=False)


def test_celeba_count_line_mismatch(celeba):
    root, _, folder = celeba
    attr = folder / "list_attr_celeba.txt"
    set_line(attr, 1, "202599")
    with raises_naming(DatasetLayoutError, f"{attr}:1: says 202599 images but lists 7"):
        read_celeba(root, verify_md5=False)


def test_celeba_identity_row_with_extra_column(celeba):
    root, _, folder = celeba
    ident = folder / "identity_CelebA.txt"
    edit_lines(ident, lambda lines: [line + " 5" for line in lines])
    with raises_naming(DatasetLayoutError, f"{ident}:1:", "'000001.jpg 2880 5'"):
        read_celeba(root, verify_md5=False)


@pytest.mark.parametrize(
    ("name", "line", "text"),
    [
        ("identity_CelebA.txt", 2, "000002.jpg someone"),
        ("list_eval_partition.txt", 1, "000001.jpg train"),
        ("list_bbox_celeba.txt", 3, "000001.jpg 1 2 3"),
        ("list_landmarks_align_celeba.txt", 4, "000002.jpg 1 2 3 4 5 6 7 8 9 ten"),
    ],
)
def test_celeba_malformed_file_torchvision_rejects(celeba, name, line, text):
    root, _, folder = celeba
    set_line(folder / name, line, text)
    with raises_naming(
        DatasetLayoutError, f"malformed annotation file in {folder}", "Expected layout of celeba"
    ):
        read_celeba(root, verify_md5=False)


@pytest.mark.parametrize("bad", ["../x.jpg", "a/b.jpg", "/tmp/x.jpg"])
def test_celeba_image_name_leaving_the_root(celeba, bad):
    root, _, folder = celeba
    for name in CELEBA_FILES:
        edit_lines(folder / name, lambda lines: [line.replace("000003.jpg", bad, 1) for line in lines])
    with raises_naming(DatasetLayoutError, f"image name {bad!r} is not a plain file name"):
        read_celeba(root, verify_md5=False)


# --- MUFAC errors --------------------------------------------------------------------------------


@pytest.fixture
def mufac(root):
    """A MUFAC folder: (root, rows)."""
    return root, write_mufac(root)


@pytest.mark.parametrize("age", ["i", "z", "ab", "", "1", "A1"])
@pytest.mark.parametrize("split", MUFAC_SPLITS)
def test_mufac_bad_age_class(mufac, split, age):
    root, _ = mufac
    sheet = mufac_csv(root, split)
    set_line(sheet, 2, f"F0009,Z,{age},F0009_AGE_Z_5_a1.jpg")
    with raises_naming(DatasetLayoutError, f"{sheet}:2:", f"age class {age!r} is not one of a..h"):
        read_mufac(root)


def test_mufac_bad_age_class_further_down(mufac):
    root, _ = mufac
    sheet = mufac_csv(root, "train")
    edit_lines(sheet, lambda lines: [lines[0], lines[1], lines[2].replace(",b,", ",q,")])
    with raises_naming(DatasetLayoutError, f"{sheet}:3:", "'q'"):
        read_mufac(root)


@pytest.mark.parametrize("row", ["F0001,D,a", "F0001,D", "F0001"])
def test_mufac_too_few_columns(mufac, row):
    root, _ = mufac
    sheet = mufac_csv(root, "val")
    set_line(sheet, 3, row)
    with raises_naming(DatasetLayoutError, f"{sheet}:3: expected at least 4 columns"):
        read_mufac(root)


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_mufac_image_name_leaving_the_root(mufac, bad):
    root, _ = mufac
    sheet = mufac_csv(root, "test")
    set_line(sheet, 3, f"F0004,C,h,{bad}")
    with raises_naming(DatasetLayoutError, f"{sheet}:3:", f"image name {bad!r} is not a plain file name"):
        read_mufac(root)


def test_mufac_image_in_the_wrong_split_folder(mufac):
    root, rows = mufac
    moved = rows[0]
    (root / moved.file).rename(mufac_folder(root) / "val_images" / moved.name)
    with raises_naming(DatasetLayoutError, moved.file):
        read_mufac(root)


# --- Table ---------------------------------------------------------------------------------------


def small_table(files=("a.jpg", "b.jpg", "c.jpg"), identities=("1", "1", "2"), name="celebahq") -> Table:
    targets = np.arange(len(files), dtype=np.int64)
    return Table(
        name, Path("/data"), tuple(files), tuple(identities), targets, "classification", ("x", "y", "z")
    )


def test_fingerprint_changes_when_an_identity_changes():
    changed = small_table(identities=("1", "2", "2"))
    assert small_table().listing_fingerprint() != changed.listing_fingerprint()


def test_fingerprint_changes_with_files_and_dataset_name():
    base = small_table().listing_fingerprint()
    assert base != small_table(files=("a.jpg", "b.jpg", "d.jpg")).listing_fingerprint()
    assert base != small_table(files=("a.jpg", "b.jpg"), identities=("1", "1")).listing_fingerprint()
    assert base != small_table(name="mufac").listing_fingerprint()


def test_fingerprint_independent_of_row_order():
    table = small_table()
    order = [2, 0, 1]
    shuffled = Table(
        table.name,
        table.root,
        tuple(table.files[i] for i in order),
        tuple(table.identities[i] for i in order),
        table.targets[order],
        table.task,
        table.class_names,
    )
    assert shuffled.listing_fingerprint() == table.listing_fingerprint()
    assert len(table.listing_fingerprint()) == 64


def test_fingerprint_of_read_tables(tmp_path):
    write_celebahq(tmp_path / "a", shuffle_identity_file=False)
    write_celebahq(tmp_path / "b", shuffle_identity_file=True)
    write_celebahq(tmp_path / "c", {"7": 3, "9": 2, "13": 2})
    a, b, c = (read_celebahq(tmp_path / x).listing_fingerprint() for x in "abc")
    assert a == b  # same listing, whatever the identity file's order
    assert a != c


def test_subset_keeps_the_masked_rows(root):
    rows = write_mufac(root)
    table = read_mufac(root)
    keep = np.array([i % 2 == 0 for i in range(len(table))])
    part = table.subset(keep)
    kept = [row for row, k in zip(rows, keep, strict=True) if k]
    assert_table(part, kept, "mufac", root)
    assert (part.task, part.class_names) == (table.task, table.class_names)


def test_subset_of_multilabel_table(root):
    rows = write_celebahq(root)
    table = read_celebahq(root)
    keep = np.array([identity == "9" for identity in table.identities])
    part = table.subset(keep)
    assert_table(part, [row for row in rows if row.identity == "9"], "celebahq", root)
    assert part.targets.shape == (2, 40)
    empty = table.subset(np.zeros(len(table), dtype=bool))
    assert len(empty) == 0 and empty.targets.shape == (0, 40)
    assert table.subset(np.ones(len(table), dtype=bool)).listing_fingerprint() == table.listing_fingerprint()


def test_table_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="same length"):
        Table(
            "mufac",
            Path("/data"),
            ("a.jpg",),
            ("1", "2"),
            np.zeros(1, dtype=np.int64),
            "classification",
            tuple("abcdefgh"),
        )


@pytest.mark.parametrize(
    ("first", "second"),
    [("Jos\u00e9", "Jose\u0301"), ("\ufb01ona", "fiona"), ("\uff2a\uff4f", "Jo")],
    ids=["NFC and NFD", "a ligature", "full-width letters"],
)
def test_identity_names_equal_once_normalised_are_refused_naming_both(tmp_path, first, second):
    """Two spellings of one name would be one person to a request: refused, both shown (escaped, so the
    difference can be seen)."""
    with pytest.raises(AnnotationError, match="differ only in their Unicode form") as error:
        Table(
            "toy",
            tmp_path,
            ("a.jpg", "b.jpg"),
            (first, second),
            np.zeros((2, 1), np.uint8),
            "multilabel",
            ("x",),
        )
    assert ascii(first) in str(error.value) and ascii(second) in str(error.value)
    assert len(Table("toy", tmp_path, ("a.jpg", "b.jpg"), (first, first), np.zeros((2, 1), np.uint8),
                     "multilabel", ("x",))) == 2  # fmt: skip
