"""IdentityDataModule: the dataset, its 1-SHUI Split and every loader the methods need."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from .. import layout
from ..errors import SettingError, at_least, at_most, positive
from .audit import AuditReport, OnDuplicates, apply_duplicate_policy, audit_images
from .images import IMAGES
from .sources import Table, read_table
from .splits import (
    SimulatedRequest,
    Split,
    SplitMismatchError,
    make_split,
    sequential_pools,
    shadow_rows,
    simulated_requests,
)
from .synthetic import SyntheticSpec, write_synthetic

# every pool the datamodule serves (``shadow`` with data.shadow only)
POOLS = ("train", "retain", "forget", "support", "val", "test", "shadow")
TEST_POOLS = ("retain", "forget", "test", "val")  # the order of test_dataloader(); VAL for the MIA
TrainPool = Literal["train", "retain", "simulated", "shadow"]
MEAN = STD = (0.5, 0.5, 0.5)


def build_transform(
    image_size: int, train: bool, crop_scale: tuple[float, float] = (0.08, 1.0)
) -> v2.Compose:
    """The paper's transforms: random resized crop + flip to train, resize to test; mean = std = 0.5."""
    resize = (
        [v2.RandomResizedCrop(image_size, scale=crop_scale, antialias=True), v2.RandomHorizontalFlip()]
        if train
        else [v2.Resize((image_size, image_size), antialias=True)]
    )
    return v2.Compose([*resize, v2.ToImage(), scale_and_normalize()])


def scale_and_normalize() -> v2.Compose:
    """The last steps of every transform: uint8 images to float in [0, 1], then mean = std = 0.5."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])


class IdentityImages(Dataset):
    """Rows of a Table as (image, identity index, target) samples, seen as tested (the test transform at
    ``image_size``) or, given ``augment``, through that training transform; the images and their test
    view are read through :data:`~one_shui.data.images.IMAGES` (once per process).

    ``labels`` holds the identity index and the target of every table row, made once per datamodule
    and shared by all its datasets.
    """

    def __init__(
        self,
        table: Table,
        rows: Sequence[int],
        labels: tuple[torch.Tensor, torch.Tensor],
        image_size: int,
        augment: v2.Compose | None = None,
    ):
        self.table, self.rows, self.augment = table, list(rows), augment
        self.identity_ids, self.targets = labels
        self.tested = ("tested", image_size)  # the test view's name
        self.test_transform = build_transform(image_size, False)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        row = self.rows[i]
        return self.load(row), int(self.identity_ids[row]), self.targets[row]

    def load(self, row: int) -> torch.Tensor:
        path = self.table.path(row)
        if self.augment is not None:
            return self.augment(IMAGES(path))
        return IMAGES(path, self.tested, self.test_transform)


@dataclass  # not frozen: Lightning moves a batch to the device by setting its fields
class RequestBatch:
    """One simulated forget request: its support batch and its forget batch, each (images, ids, targets)."""

    identities: tuple[str, ...]
    support: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    forget: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class SimulatedRequestSet(Dataset):
    """The simulated requests of one meta-training epoch, one item per request."""

    def __init__(self, images: IdentityImages, requests: list[SimulatedRequest]):
        self.images, self.requests = images, requests

    def __len__(self) -> int:
        return len(self.requests)

    def __getitem__(self, i: int) -> RequestBatch:
        request = self.requests[i]
        return RequestBatch(request.identities, self._stack(request.support), self._stack(request.forget))

    def _stack(self, rows: Sequence[int]):
        images, ids, targets = zip(*(self.images[i] for i in rows), strict=True)
        return torch.stack(images), torch.tensor(ids), torch.stack(targets)


class IdentityDataModule(L.LightningDataModule):
    """Builds (or loads) the Split of one dataset and serves the 1-SHUI loaders.

    Args:
        dataset: ``celebahq``, ``celeba`` or ``mufac``: the on-disk layout read under ``root``.
        root: the data root; nothing outside it is read.
        request_size: N, the number of identities that ask to be forgotten.
        requests: serve the forget request as this many requests one after another, of
            ``request_size / requests`` people each (the sequential bench); 1: one request.
        request: which of them this run is at (1 to ``requests``; default the last): the people of the
            requests up to it are forgotten (the forget pool, left out of a retrain's retain pool), and
            its portraits are the support pool.
        seed: the split seed (identity shuffles, forget request, support images).
        split_file: a Split to use instead of making one: its JSON file (a run writes it beside its
            checkpoints, ``checkpoints/split.json``). It must match the data.
        train_pool: what ``fit`` trains on: ``train`` (pretrain), ``retain`` (retrain, which needs
            ``split_file`` so that it is bound to its pretrain), ``simulated`` (the simulated
            requests of meta-training, anew each epoch) or ``shadow`` (a shadow model of the per-person
            attack: the retain pool and the half of the forget and TEST people that ``shadow`` names,
            :func:`one_shui.data.splits.shadow_rows`; with ``split_file``, as a retrain). An unlearning
            method declares its own, and the CLI builds the data with it
            (:meth:`UnlearningMethod.data_options`).
        shadow: which shadow model (0, 1, ...) the ``shadow`` pool is of.
        augment_train: read ``fit``'s pool with the training transform (else the test one; shuffled
            either way).
        synthetic: when given, the embedded synthetic dataset is written to ``root`` in the
            ``dataset`` layout (celebahq or mufac) before reading.
        image_size: side of the square images fed to the model.
        crop_scale: scale range of the training random resized crop.
        batch_size: training batch size; ``eval_batch_size`` defaults to it.
        simulated_request_size: identities per simulated request (N_sim); defaults to ``request_size``.
        simulation_seed: the seed of the simulated requests (who, in which order, which portrait);
            defaults to ``seed``, the split's (the bench's unlearning seeds set another).
        verify_md5: CelebA only: check torchvision's MD5 sums of the annotation files.
        audit: decode and hash every image once (cached) to catch bad files and duplicates.
        rehash: the audit reads and hashes every image's bytes again, whatever its cached hint (size,
            times, inode) says; the bench's data does, once per run, before it reuses cells.
        on_duplicates: what to do with images shared across identities: warn, error or drop.
        cache_dir: where audits are cached; defaults to ``$XDG_CACHE_HOME/one_shui``.
    """

    def __init__(
        self,
        dataset: str = "celebahq",
        root: str = "data/synthetic",
        request_size: int = 20,
        requests: int = 1,
        request: int | None = None,
        seed: int = 0,
        split_file: str | None = None,
        train_pool: TrainPool = "train",
        shadow: int | None = None,
        augment_train: bool = True,
        synthetic: SyntheticSpec | None = None,
        image_size: int = 224,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        simulated_request_size: int | None = None,
        simulation_seed: int | None = None,
        verify_md5: bool = True,
        audit: bool = True,
        rehash: bool = False,
        on_duplicates: OnDuplicates = "warn",
        cache_dir: str | None = None,
    ):
        sizes = dict(request_size=request_size, batch_size=batch_size, eval_batch_size=eval_batch_size)
        at_least(
            "data.init_args", 1, **sizes, image_size=image_size, simulated_request_size=simulated_request_size
        )
        at_least("data.init_args", 0, num_workers=num_workers, shadow=shadow)
        at_least("data.init_args", 1, requests=requests, request=request)
        at_most("data.init_args", requests, request=request)
        if request_size % requests:
            raise SettingError(
                f"data.init_args.requests {requests} must divide data.init_args.request_size {request_size}: "
                "the requests are of equal size"
            )
        positive("data.init_args", crop_scale=min(crop_scale))
        at_most("data.init_args", 1, crop_scale=max(crop_scale))
        super().__init__()
        self.save_hyperparameters(ignore=["synthetic"])
        # A plain dict in the hyperparameters, so checkpoints load with weights_only=True.
        self.hparams["synthetic"] = asdict(synthetic) if synthetic is not None else None
        self.synthetic = synthetic
        if train_pool in ("retain", "shadow") and not split_file:
            run = "a retrain" if train_pool == "retain" else "a shadow model"
            raise SplitMismatchError(
                f"{run} (data.train_pool: {train_pool}) must use the split of its pretrain: set "
                "data.split_file to the split.json beside the pretrain's checkpoints"
            )
        if (train_pool == "shadow") != (shadow is not None):
            raise SettingError(
                "data.shadow names the shadow model of data.train_pool: shadow; set both or neither "
                f"(got train_pool {train_pool} and shadow {shadow})"
            )
        self.split: Split | None = None
        if split_file:
            if Path(split_file).suffix != ".json":
                raise SettingError(
                    f"data.split_file {split_file} is not a split JSON: give the split.json that the run "
                    "wrote beside its checkpoints"
                )
            self.use_split(Split.load(split_file), split_file)
        self.rows: dict[str, list[int]] = {}
        self.audit_report: AuditReport | None = None  # made with the table

    # --- data and split ----------------------------------------------------------------------

    def prepare_data(self) -> None:
        if self.synthetic is not None:
            write_synthetic(self.hparams.root, self.hparams.dataset, self.synthetic)

    @cached_property
    def table(self) -> Table:
        """The dataset listing (read once; the synthetic data is written first when asked for)."""
        hp = self.hparams
        self.prepare_data()
        options = {"verify_md5": hp.verify_md5} if hp.dataset == "celeba" else {}
        table = read_table(hp.dataset, hp.root, **options)
        if hp.audit:
            cache = hp.cache_dir or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "one_shui")
            self.audit_report = audit_images(table, Path(cache).expanduser(), rehash=hp.rehash)
            table = apply_duplicate_policy(table, self.audit_report, hp.on_duplicates)
        return table

    @property
    def content_fingerprint(self) -> str:
        """SHA-256 of what the data holds: its listing, every target and (when audited) every image's
        bytes. Corrected annotations or images change it; the split's fingerprint covers the listing only."""
        table = self.table
        digest = hashlib.sha256(table.listing_fingerprint().encode())
        digest.update(np.ascontiguousarray(table.targets).tobytes())
        digest.update(self.audit_report.content.encode() if self.audit_report else b"not audited")
        return digest.hexdigest()

    @property
    def name(self) -> str:
        """The dataset's name in the run layout (:func:`one_shui.layout.dataset_name`)."""
        return layout.dataset_name(self.hparams.dataset, self.synthetic is not None)

    @property
    def num_classes(self) -> int:
        return self.table.num_classes

    @property
    def task(self) -> str:
        return self.table.task

    @cached_property
    def identity_index(self) -> dict[str, int]:
        """Identity -> integer id: its position in :attr:`Split.identities`."""
        self.setup()
        return {identity: i for i, identity in enumerate(self.split.identities)}

    @cached_property
    def row_labels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Identity index and target of every table row, as tensors (shared by every loader)."""
        ids = torch.tensor([self.identity_index[i] for i in self.table.identities], dtype=torch.long)
        dtype = torch.float32 if self.task == "multilabel" else torch.long
        return ids, torch.as_tensor(self.table.targets, dtype=dtype)

    def setup(self, stage: str | None = None) -> None:
        if self.rows:
            return
        table, hp = self.table, self.hparams
        fingerprint = table.listing_fingerprint()
        if self.split is None:
            self.split = make_split(
                table.files,
                table.identities,
                dataset=table.name,
                dataset_fingerprint=fingerprint,
                seed=hp.seed,
                request_size=hp.request_size,
            )
        else:
            self.split.verify(table.name, fingerprint, source=hp.split_file or "the checkpoint's split")
        served = hp.request or hp.requests
        self.rows = sequential_pools(self.split, table.files, table.identities, hp.requests, served)
        if hp.shadow is not None:
            self.rows["shadow"] = shadow_rows(self.split, table.files, table.identities, hp.shadow)

    def use_split(self, split: Split, source: str) -> None:
        """Serve ``split``, the one ``source`` was trained with, instead of making one (the guard builds
        the data of a model it holds); refused when it is not the split of this data, seed and N."""
        if self.split is not None:
            self.split.require_same(split, source)
            return
        self._check_made_here(split, source)
        self.split = split  # verified against the data in setup()

    def _check_made_here(self, split: Split, source: str) -> None:
        seed, size = self.hparams.seed, self.hparams.request_size
        if (split.seed, split.request_size) != (seed, size):
            raise SplitMismatchError(
                f"{source} was made with seed {split.seed} and request size {split.request_size}; "
                f"set data.seed and data.request_size to those (they are {seed} and {size})"
            )

    def state_dict(self) -> dict:
        """The Split travels in Lightning checkpoints."""
        return {"split": self.split.to_dict()} if self.split is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if "split" not in state:
            return
        self.use_split(Split.from_dict(state["split"], source="the checkpoint's split"), "the checkpoint")

    def save_split(self, path: str | os.PathLike) -> Path:
        self.setup()
        return self.split.save(path)

    # --- loaders -----------------------------------------------------------------------------

    def images(self, pool: str, train: bool = False) -> IdentityImages:
        """The samples of ``pool`` (one of :data:`POOLS`) with the train or test transform."""
        self.setup()
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; choose one of {', '.join(POOLS)}")
        hp = self.hparams
        augment = build_transform(hp.image_size, True, tuple(hp.crop_scale)) if train else None
        return IdentityImages(self.table, self.rows[pool], self.row_labels, hp.image_size, augment)

    def loader(
        self,
        pool: str,
        train: bool = False,
        batch_size: int | None = None,
        shuffle: bool | None = None,
        augment: bool | None = None,
    ) -> DataLoader:
        """A loader over ``pool``: for training (``train``) shuffled with the train transform, else in order
        with the test one; ``shuffle`` and ``augment`` override either."""
        hp = self.hparams
        size = batch_size or (hp.batch_size if train else hp.eval_batch_size or hp.batch_size)
        shuffle = train if shuffle is None else shuffle
        images = self.images(pool, train if augment is None else augment)
        return DataLoader(images, batch_size=size, shuffle=shuffle, **self._workers())

    def train_dataloader(self) -> DataLoader:
        if self.hparams.train_pool == "simulated":
            return self.simulated_request_loader(self.trainer.current_epoch if self.trainer else 0)
        return self.loader(self.hparams.train_pool, train=True, augment=self.hparams.augment_train)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> list[DataLoader]:
        return [self.loader(pool) for pool in TEST_POOLS]

    def simulated_request_loader(self, epoch: int) -> DataLoader:
        """One loader per meta-training epoch; each item is a whole :class:`RequestBatch`."""
        self.setup()
        size = self.hparams.simulated_request_size or self.hparams.request_size
        requests = simulated_requests(
            self.split,
            self.table.files,
            self.table.identities,
            size=size,
            epoch=epoch,
            seed=self.hparams.simulation_seed,
        )
        # Requests hold table rows; portraits and forget images both get the test transform, as served.
        every_row = IdentityImages(
            self.table, range(len(self.table)), self.row_labels, self.hparams.image_size
        )
        return DataLoader(
            SimulatedRequestSet(every_row, requests), batch_size=None, collate_fn=_keep, **self._workers()
        )

    def summary(self) -> dict[str, tuple[int, int]]:
        """(identities, images) of every pool."""
        self.setup()
        return {
            pool: (len({self.table.identities[r] for r in rows}), len(rows))
            for pool, rows in self.rows.items()
        }

    def _workers(self) -> dict:
        workers = self.hparams.num_workers
        return {"num_workers": workers, "persistent_workers": workers > 0}


def _keep(item):
    return item
