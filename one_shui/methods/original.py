"""The original model: the checkpoint a method unlearns, read once and handed to whatever needs it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import layout
from ..checkpoints import RECORD_KEY, checkpoint_split, read_checkpoint
from ..data.splits import Split
from .classifier import Classifier

# What an unlearned model's checkpoint keeps of its original's besides the record: what
# Classifier.from_checkpoint and `one-shui test` read.
KEPT = (
    "epoch",
    "global_step",
    "pytorch-lightning_version",
    "hyper_parameters",
    "datamodule_hyper_parameters",
)


@dataclass(frozen=True)
class OriginalModel:
    """Where the original model is, the SHA-256 of its bytes (hashed as they were read), its split, and
    its checkpoint less the weights (its record and data settings). Built with the method
    (:meth:`read`) and handed to serving, receipts, the guard and the bench: nothing opens the file again.
    """

    path: Path
    sha256: str
    split: Split
    header: Mapping[str, Any]  # the checkpoint less its weights

    @classmethod
    def read(cls, path: str | os.PathLike) -> tuple[OriginalModel, Classifier]:
        """The original model of the checkpoint ``path`` and its network, from one reading of the file."""
        checkpoint, digest = read_checkpoint(path)
        model = Classifier.from_record(checkpoint, str(path))
        header = {key: value for key, value in checkpoint.items() if key != "state_dict"}
        return cls(Path(path), digest, checkpoint_split(checkpoint, str(path)), header), model

    @property
    def dataset(self) -> str:
        """The dataset's name in the run layout (``synthetic_celebahq`` for the embedded data)."""
        synthetic = bool(self.header.get("datamodule_hyper_parameters", {}).get("synthetic"))
        return layout.dataset_name(self.split.dataset, synthetic)

    def run_dir(self, run: str) -> Path:
        """The folder of the run ``run`` in the layout of this model's setting (dataset, N, seed)."""
        return layout.run_dir(self.dataset, self.split.request_size, self.split.seed, run)

    def unlearned_checkpoint(self, state_dict: Mapping[str, torch.Tensor], record: dict) -> dict:
        """This model's checkpoint with the weights ``state_dict`` (read by
        :meth:`Classifier.from_checkpoint`), ``record`` added to its own (what was forgotten, how)."""
        checkpoint = {key: self.header[key] for key in KEPT if key in self.header}
        state = {key: value.cpu() for key, value in state_dict.items()}
        return {**checkpoint, "state_dict": state, RECORD_KEY: {**self.header[RECORD_KEY], **record}}
