import json
import os
import shutil

import lightning as L
import numpy as np
import pytest
import torch
from helpers import quiet_trainer
from PIL import Image
from torchvision.transforms import v2

from one_shui.data import audit, images
from one_shui.data.check_set import CheckSet, CheckSetError, take_check_set
from one_shui.data.datamodule import TEST_POOLS, IdentityDataModule, RequestBatch, build_transform
from one_shui.data.images import ImageError
from one_shui.data.sources import DataWarning
from one_shui.data.splits import SplitMismatchError
from one_shui.data.synthetic import SyntheticSpec
from one_shui.errors import SettingError

SPEC = SyntheticSpec(identities=40, image_size=16)


def make(tmp_path, dataset="celebahq", **kwargs):
    options = dict(
        dataset=dataset,
        root=str(tmp_path / "data"),
        request_size=4,
        seed=0,
        synthetic=SPEC,
        image_size=16,
        batch_size=8,
        cache_dir=str(tmp_path / "cache"),
    )
    return IdentityDataModule(**{**options, **kwargs})


def test_pools_and_loaders(tmp_path):
    data = make(tmp_path)
    data.setup("fit")
    summary = data.summary()
    assert summary["support"] == (4, 4) and summary["forget"][0] == 4
    assert summary["train"][1] == summary["retain"][1] + summary["forget"][1]
    assert sum(summary[p][1] for p in ("train", "support", "val", "test")) == len(data.table)

    images, ids, targets = next(iter(data.train_dataloader()))
    assert images.shape == (8, 3, 16, 16) and images.dtype == torch.float32
    assert images.min() >= -1.0 and images.max() <= 1.0  # normalised with mean = std = 0.5
    assert targets.shape == (8, 40) and targets.dtype == torch.float32 and ids.dtype == torch.long
    assert data.num_classes == 40 and data.task == "multilabel"

    support = data.loader("support")
    support_ids = torch.cat([batch[1] for batch in support]).tolist()
    assert sorted(support_ids) == sorted(data.identity_index[i] for i in data.split.forget)
    assert [len(loader.dataset) for loader in data.test_dataloader()] == [summary[p][1] for p in TEST_POOLS]


def test_an_identity_id_is_its_position_among_every_identity_of_the_split(tmp_path):
    data = make(tmp_path)
    ids, _ = data.row_labels
    assert data.split.identities == tuple(sorted(set(data.table.identities)))  # the split holds them all
    assert [data.split.identities[i] for i in ids.tolist()] == list(data.table.identities)


def test_mufac_targets_are_class_indices(tmp_path):
    data = make(tmp_path, dataset="mufac")
    images, ids, targets = next(iter(data.val_dataloader()))
    assert targets.dtype == torch.long and targets.ndim == 1 and targets.max() < 8
    assert data.num_classes == 8 and data.task == "classification"


def test_simulated_request_loader_serves_whole_requests(tmp_path):
    data = make(tmp_path, simulated_request_size=3)
    batches = list(data.simulated_request_loader(epoch=0))
    assert batches and all(isinstance(b, RequestBatch) for b in batches)
    real_support = {data.identity_index[i] for i in data.split.forget}
    for batch in batches:
        support_images, support_ids, _ = batch.support
        forget_images, forget_ids, forget_targets = batch.forget
        assert support_images.shape[0] == 3 == len(batch.identities)
        wanted = {data.identity_index[i] for i in batch.identities}
        assert set(forget_ids.tolist()) == set(support_ids.tolist()) == wanted
        assert forget_targets.shape == (len(forget_ids), 40)
    covered = {i for b in batches for i in b.identities}
    assert covered <= set(data.split.train)
    # real support images never serve as simulated data: their identities do, with their other images
    assert real_support & {data.identity_index[i] for i in covered}


def test_split_travels_in_state_dict_and_mismatch_is_refused(tmp_path):
    data = make(tmp_path)
    data.setup()
    state = data.state_dict()

    fresh = make(tmp_path)  # not yet set up: adopts the checkpoint's split
    fresh.load_state_dict(state)
    fresh.setup()
    assert fresh.split == data.split

    other = make(tmp_path, seed=1)
    other.setup()
    with pytest.raises(SplitMismatchError, match="seed 0"):
        other.load_state_dict(state)


def test_split_file_is_verified_against_the_data(tmp_path):
    data = make(tmp_path)
    path = data.save_split(tmp_path / "split.json")
    again = make(tmp_path, split_file=str(path))
    again.setup()
    assert again.split == data.split
    with pytest.raises(SplitMismatchError, match="seed 0 and request size 4"):
        make(tmp_path, split_file=str(path), seed=2)
    other_data = make(
        tmp_path,
        split_file=str(path),
        root=str(tmp_path / "other"),
        synthetic=SyntheticSpec(seed=5, identities=40, image_size=16),
    )
    with pytest.raises(SplitMismatchError, match="made for dataset 'celebahq'"):
        other_data.setup()


def duplicate_one_image(tmp_path):
    """Copy one person's image over another person's image: the same bytes under two identities."""
    data = make(tmp_path, audit=False)
    table = data.table
    a = 0
    b = next(i for i, identity in enumerate(table.identities) if identity != table.identities[a])
    shutil.copyfile(table.path(a), table.path(b))
    return table.files[a], table.files[b]


@pytest.mark.parametrize("policy", ["warn", "drop", "error"])
def test_duplicates_across_identities(tmp_path, policy):
    first, second = duplicate_one_image(tmp_path)
    data = make(tmp_path, on_duplicates=policy)
    if policy == "error":
        with pytest.raises(ImageError, match=second.split("/")[-1]):
            _ = data.table
        return
    with pytest.warns(DataWarning, match="more than one identity"):
        table = data.table
    kept = {first, second} & set(table.files)
    assert kept == ({first, second} if policy == "warn" else set())


def test_unreadable_image_is_named_and_audit_is_cached(tmp_path, monkeypatch):
    data = make(tmp_path, audit=False)
    victim = data.table.path(3)
    _ = make(tmp_path).table  # a clean audit, cached
    monkeypatch.setattr(audit, "_inspect", lambda root, name: pytest.fail("audit cache not used"))
    _ = make(tmp_path).table
    monkeypatch.undo()

    victim.write_bytes(b"not a jpeg")  # size and time change: the cache no longer applies
    with pytest.raises(ImageError, match=victim.name):
        _ = make(tmp_path).table
    unaudited = make(tmp_path, audit=False)
    unaudited.setup()
    row = unaudited.table.files.index(data.table.files[3])
    images = unaudited.images("train")
    images.rows = [row]
    with pytest.raises(ImageError, match=victim.name):
        images[0]


class TinyModel(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(3 * 16 * 16, 40)

    def training_step(self, batch, _):
        images, _, targets = batch
        return torch.nn.functional.binary_cross_entropy_with_logits(self.head(images.flatten(1)), targets)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_split_is_saved_in_and_restored_from_lightning_checkpoints(tmp_path):
    data = make(tmp_path)
    trainer = quiet_trainer(max_steps=1, enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(TinyModel(), datamodule=data)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert checkpoint["IdentityDataModule"]["split"]["fingerprint"] == data.split.fingerprint

    resumed = quiet_trainer(max_steps=2, enable_checkpointing=False, default_root_dir=tmp_path)
    with pytest.raises(SplitMismatchError, match="checkpoint was made with split"):
        resumed.fit(TinyModel(), datamodule=make(tmp_path, seed=1), ckpt_path=tmp_path / "last.ckpt")


# --- hostile data ------------------------------------------------------------------------------------


def test_a_cached_hash_is_trusted_on_its_hint_until_rehash_reads_the_bytes(tmp_path):
    before = make(tmp_path).content_fingerprint  # audited, each file's hash cached with its hint
    (cache,) = (tmp_path / "cache").glob("hashes-*.json")
    record = json.loads(cache.read_text())
    name = sorted(record["files"])[0]
    record["files"][name][-1] = "0" * 64  # a stale hash behind an unchanged hint
    cache.write_text(json.dumps(record))
    for summary in (tmp_path / "cache").glob("audit-*.json"):
        summary.unlink()  # the report kept with the listing's hints: without it, the files' hashes are read
    assert make(tmp_path).content_fingerprint != before  # the hint trusted: the cached hash used
    assert make(tmp_path, rehash=True).content_fingerprint == before  # the bytes read again
    assert json.loads(cache.read_text())["files"][name][-1] != "0" * 64  # and the cache mended


def test_the_audit_decodes_only_the_files_that_changed(tmp_path, monkeypatch):
    data = make(tmp_path)
    _ = data.table
    changed = data.table.root / data.table.files[1]
    changed.write_bytes(changed.read_bytes())  # rewritten: its change time moves
    inspected = []
    real = audit._inspect
    monkeypatch.setattr(audit, "_inspect", lambda root, name: inspected.append(name) or real(root, name))
    assert make(tmp_path).content_fingerprint == data.content_fingerprint
    assert inspected == [data.table.files[1]]


def test_a_truncated_jpeg_is_named_by_the_audit_before_anything_trains(tmp_path):
    """Its header is whole, so PIL's verify() passed it; only decoding the whole file finds it."""
    data = make(tmp_path, audit=False)
    victim = data.table.path(5)
    victim.write_bytes(victim.read_bytes()[:-200])
    with pytest.raises(ImageError, match=rf"{victim.name}.*not a readable image"):
        _ = make(tmp_path).table


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (np.array([[0, 257, 65535]], dtype=np.uint16), [0, 1, 255]),  # 16-bit PNG
        (np.array([[0.0, 0.5, 1.0]], dtype=np.float32), [0, 128, 255]),  # float in [0, 1]
        (np.array([[0.0, 128.0, 255.0]], dtype=np.float32), [0, 128, 255]),  # float in [0, 255]
        (np.array([[0, 100, 255]], dtype=np.uint8), [0, 100, 255]),  # 8-bit, as before
    ],
)
def test_high_bit_depth_and_float_images_are_rescaled_not_clipped(tmp_path, values, expected):
    path = tmp_path / ("image.png" if values.dtype != np.float32 else "image.tiff")
    Image.fromarray(values).save(path)
    rgb = np.asarray(images.read_rgb(path, path))
    assert rgb.shape == (1, 3, 3) and rgb[0, :, 0].tolist() == expected
    assert (rgb[..., 0] == rgb[..., 2]).all()


@pytest.mark.parametrize(
    "values", [np.array([[-1.0, 0.5]]), np.array([[0.0, 300.0]]), np.array([[np.nan, 1.0]])]
)
def test_float_images_outside_every_range_are_refused_by_name(tmp_path, values):
    Image.fromarray(values.astype(np.float32)).save(tmp_path / "odd.tiff")
    with pytest.raises(ImageError, match="odd.tiff"):
        images.read_rgb(tmp_path / "odd.tiff", "odd.tiff")


def test_the_content_fingerprint_follows_the_labels_and_the_image_bytes(tmp_path):
    before = make(tmp_path).content_fingerprint
    assert make(tmp_path).content_fingerprint == before  # the same data, the same key
    anno = tmp_path / "data/CelebAMask-HQ/CelebAMask-HQ-attribute-anno.txt"
    lines = anno.read_text().splitlines()
    name, *values = lines[2].split()
    values[0] = "1" if values[0] == "-1" else "-1"  # one corrected annotation
    anno.write_text("\n".join([*lines[:2], " ".join([name, *values]), *lines[3:]]) + "\n")
    relabelled = make(tmp_path).content_fingerprint
    assert relabelled != before
    image = make(tmp_path).table.path(0)
    with Image.open(image) as picture:
        picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(image)  # one replaced image, same name
    assert make(tmp_path).content_fingerprint not in (before, relabelled)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("batch_size", -3),
        ("eval_batch_size", 0),
        ("request_size", -1),
        ("num_workers", -2),
        ("image_size", 0),
    ],
)
def test_sizes_out_of_range_are_one_setting_error(tmp_path, option, value):
    with pytest.raises(SettingError, match=f"data.init_args.{option} must be"):
        make(tmp_path, **{option: value})


def test_a_shadow_pool_is_served_from_its_pretrain_s_split_and_asked_for_with_its_number(tmp_path):
    data = make(tmp_path)
    data.save_split(tmp_path / "split.json")
    shadow = make(tmp_path, train_pool="shadow", shadow=1, split_file=str(tmp_path / "split.json"))
    shadow.setup("fit")
    assert shadow.split == data.split
    rows = sorted(shadow.train_dataloader().dataset.rows)
    assert rows == shadow.rows["shadow"] and set(data.rows["retain"]) < set(rows)
    with pytest.raises(SplitMismatchError, match="a shadow model .* must use the split of its pretrain"):
        make(tmp_path, train_pool="shadow", shadow=1)
    for options in ({"train_pool": "shadow"}, {"shadow": 0}):
        with pytest.raises(SettingError, match="set both or neither"):
            make(tmp_path, split_file=str(tmp_path / "split.json"), **options)
    with pytest.raises(SettingError, match="data.init_args.shadow must be"):
        make(tmp_path, train_pool="shadow", shadow=-1, split_file=str(tmp_path / "split.json"))


def test_the_check_set_is_a_fixed_sample_of_val_read_as_tested(tmp_path):
    data = make(tmp_path)
    check = take_check_set(data, 5)
    assert len(check) == 5 and check.images.dtype == torch.uint8
    assert torch.equal(take_check_set(make(tmp_path), 5).images, check.images)  # the same for every run
    val = list(data.images("val"))
    for image, target in zip(
        check.inputs(), check.targets, strict=True
    ):  # VAL as the test transform reads it
        assert any(torch.allclose(x, image, atol=1e-6) and torch.equal(t, target) for x, _, t in val)
    assert len(take_check_set(data, 10_000)) == len(data.rows["val"])  # all of VAL when it has fewer
    model = {"image_size": 16, "task": data.task, "num_classes": data.num_classes}
    assert CheckSet.from_record(check.to_record(), model, "x").sha256 == check.sha256


IMAGES = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)


@pytest.mark.parametrize(
    ("record", "task", "wrong"),
    [
        (None, "multilabel", "images are not a uint8 tensor but NoneType"),
        ({"images": torch.zeros(2, 3, 16, 16), "targets": torch.zeros(2, 40)}, "multilabel", "torch.float32"),
        ({"images": IMAGES[..., :8, :8], "targets": torch.zeros(2, 40)}, "multilabel", "shape (2, 3, 8, 8)"),
        ({"images": IMAGES[:0], "targets": torch.zeros(0, 40)}, "multilabel", "with n > 0"),
        ({"images": IMAGES, "targets": None}, "multilabel", "targets are NoneType, not a tensor"),
        ({"images": IMAGES, "targets": torch.zeros(2, 39)}, "multilabel", "shape (2, 39), not (2, 40)"),
        ({"images": IMAGES, "targets": torch.zeros(3)}, "classification", "shape (3,), not (2,)"),
        ({"images": IMAGES, "targets": torch.full((2, 40), 2.0)}, "multilabel", "other than 0 or 1"),
        ({"images": IMAGES, "targets": torch.tensor([0, 40])}, "classification", "whole classes in 0..39"),
        ({"images": IMAGES, "targets": torch.tensor([0.0, 1.5])}, "classification", "whole classes in 0..39"),
    ],
    ids=[
        "missing",
        "float",
        "other size",
        "empty",
        "no targets",
        "wrong width",
        "wrong count",
        "not 0 or 1",
        "class out of range",
        "float classes",
    ],  # fmt: skip
)
def test_a_damaged_check_set_is_one_line_saying_what_is_wrong(record, task, wrong):
    model = {"image_size": 16, "task": task, "num_classes": 40}
    with pytest.raises(CheckSetError, match="method.ckpt: its check set is damaged") as error:
        CheckSet.from_record(record, model, "method.ckpt")
    assert wrong in str(error.value) and "\n" not in str(error.value)


def test_an_image_is_decoded_once_for_every_datamodule_and_read_as_the_transforms_read_the_file(tmp_path):
    """The cells of a bench build their datamodules anew in one process, and a fit reads its pool every
    epoch: each image is decoded once (images.IMAGES), its test view made once, to the same values."""
    images.IMAGES.clear()
    first, before = make(tmp_path), images.IMAGES.decoded
    read = [list(loader) for loader in first.test_dataloader()]
    decoded = images.IMAGES.decoded
    assert decoded - before == sum(len(first.rows[pool]) for pool in TEST_POOLS)
    again = [list(loader) for loader in make(tmp_path).test_dataloader()]
    torch.manual_seed(0)
    augmented = list(make(tmp_path).loader("retain", train=True))
    assert images.IMAGES.decoded == decoded  # none decoded again
    for batches, others in zip(read, again, strict=True):
        for batch, other in zip(batches, others, strict=True):
            assert all(torch.equal(x, y) for x, y in zip(batch, other, strict=True))
    path = first.table.path(first.rows["test"][0])
    tested = build_transform(16, train=False)(Image.open(path).convert("RGB"))  # from the file itself
    assert torch.equal(first.images("test")[0][0], tested)
    images.IMAGES.clear()  # the training transform on images read from the files: the same draws
    torch.manual_seed(0)
    for batch, other in zip(augmented, make(tmp_path).loader("retain", train=True), strict=True):
        assert all(torch.equal(x, y) for x, y in zip(batch, other, strict=True))


def test_a_rewritten_image_is_decoded_again_and_beyond_the_budget_nothing_is_kept(tmp_path):
    memory = images.ImageMemory(budget=3 * 20 * 20)  # one decoded 20 x 20 image
    paths = []
    for k, colour in enumerate(((255, 0, 0), (0, 255, 0))):
        paths.append(tmp_path / f"{k}.png")
        Image.new("RGB", (20, 20), colour).save(paths[-1])
    red = memory(paths[0])
    assert memory(paths[0]) is red and memory.decoded == 1 and red.getpixel((0, 0)) == (255, 0, 0)
    assert memory(paths[1]).getpixel((0, 0)) == (0, 255, 0) == memory(paths[1]).getpixel((0, 0))
    assert memory.decoded == 3 and memory.held == 3 * 20 * 20  # the second image is not kept
    to_tensor = v2.Compose([v2.ToImage()])
    assert memory(paths[0], "tensor", to_tensor)[0].eq(255).all() and memory.decoded == 3  # not kept
    Image.new("RGB", (20, 20), (0, 0, 255)).save(paths[0])
    os.utime(paths[0], ns=(1, 1))  # a new modification time, as a rewritten file has
    assert memory(paths[0]).getpixel((0, 0)) == (0, 0, 255) and memory.decoded == 4
