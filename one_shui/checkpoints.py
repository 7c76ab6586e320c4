"""Checkpoints that carry their Split and config: written by :class:`RunRecord`, read with
``weights_only=True`` and verified against the run that uses them."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import BinaryIO

import lightning as L
import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from . import __version__, layout
from .atomic import write_text_atomic
from .data.splits import Split, SplitMismatchError
from .errors import MissingFileError, UserError

RECORD_KEY = "one_shui"
RECORD_FORMAT = 2  # 2: the classifier's network is saved as `network.*` (it was `model.*`)


class CheckpointError(UserError, ValueError):
    """A file is not a one_shui checkpoint, or not the one this run needs."""


def load_checkpoint(path: str | os.PathLike, mmap: bool = False) -> dict:
    """Read a checkpoint with ``weights_only=True`` (no arbitrary unpickling) and check it is ours.

    With ``mmap``, tensors are read from the file only when used (cheap when only the record is
    needed); they are then valid only while the file is left as it is.
    """
    path = _existing(path)
    require_archive(path)
    return _load(path, path, mmap)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, str]:
    """:func:`load_checkpoint`'s checkpoint and the SHA-256 of the file's bytes, from one opening of the
    file: its bytes are read once, hashed, then loaded from memory (for a while both are in memory)."""
    path = _existing(path)
    data = path.read_bytes()
    require_archive(path, io.BytesIO(data))
    return _load(io.BytesIO(data), path), hashlib.sha256(data).hexdigest()


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint {path} does not exist")
    return path


def _not_a_checkpoint(path: Path) -> CheckpointError:
    # A zip archive is what torch.save writes; anything else is not a checkpoint of ours.
    return CheckpointError(f"{path}: not a PyTorch checkpoint (damaged, or another kind of file)")


def require_archive(path: Path, data: io.BytesIO | None = None) -> None:
    """Refuse, before anything is inflated, a file (``path``, or its bytes ``data`` when read already)
    that torch.save did not write: a zip archive that stores every member as it is (uncompressed), so
    that their declared sizes add up to no more than the file itself."""
    archive = path if data is None else data
    size = path.stat().st_size if data is None else len(data.getbuffer())
    if not zipfile.is_zipfile(archive):
        raise _not_a_checkpoint(path)
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = zipped.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({err})") from None
    compressed = [m.filename for m in members if m.compress_type != zipfile.ZIP_STORED]
    declared = sum(m.file_size for m in members)
    if compressed:
        reason = f"its member {compressed[0]} is compressed"
    elif declared > size:
        reason = f"its members declare {declared:,} bytes in a file of {size:,}"
    else:
        return
    raise CheckpointError(
        f"{path}: refused, not a checkpoint as torch.save writes one ({reason}); nothing inflated"
    )


def _load(source: Path | io.BytesIO, path: Path, mmap: bool = False) -> dict:
    try:
        checkpoint = torch.load(source, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused, it holds objects other than tensors and plain data, which could run code "
            f"when loaded ({str(err).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError) as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({err})") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: not a one_shui checkpoint (it has no {RECORD_KEY!r} record)")
    _check_record(checkpoint, str(path))
    return checkpoint


def sha256_of(source: str | os.PathLike | BinaryIO) -> str:
    """The SHA-256 of a file's bytes (a path, or an open binary file read from its start), read in chunks
    (checkpoints can be large)."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as file:
            return sha256_of(file)
    source.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: source.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def checkpoint_split(checkpoint: dict, source: str = "the checkpoint") -> Split:
    """The Split a checkpoint's model was trained with."""
    return Split.from_dict(checkpoint[RECORD_KEY].get("split"), source=f"{source}'s split")


def verify_checkpoint(
    checkpoint: dict, source: str, *, split: Split | None = None, backbone: str | None = None
) -> None:
    """Refuse a checkpoint made on another dataset or split, or with another backbone; say which."""
    record = _check_record(checkpoint, source)
    if backbone is not None and record.get("backbone") != backbone:
        raise CheckpointError(
            f"{source} holds a {record.get('backbone')!r} model, but this run uses backbone {backbone!r}; "
            f"set the model's backbone to {record.get('backbone')!r} or use a checkpoint of {backbone!r}"
        )
    if split is not None:
        split.require_same(checkpoint_split(checkpoint, source), source)


def _check_record(checkpoint: dict, source: str) -> dict:
    """The checkpoint's one_shui record, refused when absent or of another format."""
    record = checkpoint.get(RECORD_KEY)
    if not isinstance(record, dict):
        raise CheckpointError(f"{source}: not a one_shui checkpoint (it has no {RECORD_KEY!r} record)")
    if record.get("format") != RECORD_FORMAT:
        raise CheckpointError(
            f"{source}: written by another version of one_shui (record format {record.get('format')}, this "
            f"version reads {RECORD_FORMAT}); make it again with this version"
        )
    return record


class RandomState(Callback):
    """Every random generator's state (torch, CUDA, numpy, Python) in each checkpoint, restored when a fit
    resumes from it: the resumed fit draws the same shuffles, augmentations and dropout masks as an
    uninterrupted one, so it ends with the same weights."""

    def state_dict(self) -> dict:
        kind, keys, position, has_gauss, gauss = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": [kind, keys.tolist(), position, has_gauss, gauss],
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        random.setstate(state["python"])
        kind, keys, *rest = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class RunRecord(Callback):
    """The record of a run: ``config.yaml`` in the run folder and ``split.json`` beside the checkpoints
    (a fit refuses a folder that holds another split's run), both logged to every logger (W&B
    included) and embedded with the backbone in every checkpoint."""

    def __init__(self, config: dict | None = None):
        self.config = config

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        split = _split_of(trainer)
        summary = {
            "split/fingerprint": split.fingerprint,
            "split/dataset": split.dataset,
            "split/seed": split.seed,
            "split/request_size": split.request_size,
        }
        for logger in trainer.loggers:
            logger.log_hyperparams({**summary, "config": self.config} if self.config else summary)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the checkpoint callback's set-up, so that it finds its folder as the last run left it.
        if not trainer.fast_dev_run:
            self._claim_run_dir(trainer, _split_of(trainer))

    def _claim_run_dir(self, trainer: L.Trainer, split: Split) -> None:
        path = layout.checkpoint_dir(trainer.default_root_dir) / layout.SPLIT
        if path.is_file():
            split.require_same(
                Split.load(path),
                f"the run in {Path(trainer.default_root_dir)}",
                fix="set trainer.default_root_dir to a folder of its own",
            )
        if trainer.is_global_zero:
            split.save(path)
            if self.config is not None:
                write_text_atomic(Path(trainer.default_root_dir) / "config.yaml", yaml.safe_dump(self.config))

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[RECORD_KEY] = {
            "format": RECORD_FORMAT,
            "version": __version__,
            "split": _split_of(trainer).to_dict(),
            "backbone": getattr(pl_module, "backbone", None),
            "config": self.config,
        }


def _split_of(trainer: L.Trainer) -> Split:
    split = getattr(trainer.datamodule, "split", None)
    if split is None:
        raise SplitMismatchError("this run has no 1-SHUI split: train through a one_shui IdentityDataModule")
    return split
