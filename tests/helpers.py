"""Test helpers: a quiet Trainer, and callbacks that tests hand to `one-shui fit` by class path
(``helpers.<Name>``)."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

EPOCHS_RUN: list[int] = []  # filled by RecordEpochs, read by the tests


def quiet_trainer(**options) -> L.Trainer:
    """A Trainer without logger, progress bar or model summary; ``options`` set the rest."""
    return L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, **options)


class Crash(Callback):
    """Dies at the start of ``epoch``, as a killed process would (after the previous epoch's checkpoint)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError(f"simulated kill at epoch {self.epoch}")


class RecordEpochs(Callback):
    """Appends every epoch that trains to :data:`EPOCHS_RUN`."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        EPOCHS_RUN.append(trainer.current_epoch)


class PoisonWeights(Callback):
    """Turns the model's first parameter into NaN at the start of ``epoch``, so the loss becomes NaN."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))
