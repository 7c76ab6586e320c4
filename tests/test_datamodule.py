import shutil

import lightning as L
import pytest
import torch
from helpers import quiet_trainer

from one_shui.data import audit
from one_shui.data.audit import ImageError
from one_shui.data.datamodule import TEST_POOLS, IdentityDataModule, RequestBatch
from one_shui.data.sources import DataWarning
from one_shui.data.splits import SplitMismatchError
from one_shui.data.synthetic import SyntheticSpec

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
