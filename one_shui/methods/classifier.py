"""Classifier: the pretrain and retrain module (the datamodule decides which pool it trains on)."""

from __future__ import annotations

import contextvars
import math
import os
from dataclasses import asdict
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from .. import layout
from ..checkpoints import CheckpointError, load_checkpoint, verify_checkpoint
from ..data.datamodule import TEST_POOLS
from ..data.sources import Task
from ..data.splits import Split
from ..errors import SettingError, UserError, at_least, damaged_as
from ..metrics.evaluation import Evaluation
from ..metrics.utility import metric_name, task_loss, utility_metric
from ..models.backbones import create_backbone
from ..models.schedule import warmup_cosine
from ..models.stand_in import StandIn, stand_in_weights

NO_INITIAL_WEIGHTS = {"pretrained": False, "weights_file": None, "stand_in": None}  # a checkpoint has its own


class NonFiniteLossError(UserError, FloatingPointError):
    """The training loss became NaN or infinite."""


class Classifier(L.LightningModule):
    """A timm backbone with a new head (:attr:`network`), trained as in the paper (§3).

    SGD with momentum (or AdamW), linear warm-up then cosine decay (per step); the best epoch by the
    VAL metric is kept as ``checkpoints/best.ckpt`` and the latest as ``checkpoints/last.ckpt`` under
    the trainer's ``default_root_dir``. ``test`` runs the shared evaluation
    (:mod:`one_shui.metrics.evaluation`): ``retain/<metric>``, ``forget/<metric>``, ``test/<metric>``,
    the forget metric of each identity and the loss-based MIA.

    Args:
        backbone: timm model name or a one_shui preset (see :mod:`one_shui.models.backbones`).
        num_classes: outputs of the head; linked from the datamodule by the CLI.
        task: ``multilabel`` (BCE, macro mAP) or ``classification`` (CE, accuracy); linked likewise.
        pretrained: start from ImageNet weights; ``weights_file`` reads them from a local file.
        stand_in: start from a stand-in for ImageNet weights instead (the synthetic configs): the backbone
            trained once on a procedural corpus of other people, made on first use and cached
            (:mod:`one_shui.models.stand_in`).
        image_size: input side (ViTs); linked from the datamodule.
        optimizer: ``sgd`` as in the paper (fine-tuning from ImageNet weights), or ``adamw``, which
            trains a ViT from scratch far faster (the synthetic configs use it).
        lr, momentum, weight_decay: optimiser settings (``momentum`` is SGD's).
        warmup_epochs: epochs of linear warm-up before the cosine decay.
    """

    def __init__(
        self,
        backbone: str = "vit_base_patch16_224",
        num_classes: int = 40,
        task: Task = "multilabel",
        pretrained: bool = True,
        weights_file: str | None = None,
        stand_in: StandIn | None = None,
        image_size: int = 224,
        optimizer: Literal["sgd", "adamw"] = "sgd",
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 1e-3,
        warmup_epochs: float = 2.0,
    ):
        at_least(
            "model.init_args",
            0,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            warmup_epochs=warmup_epochs,
        )
        at_least("model.init_args", 1, num_classes=num_classes, image_size=image_size)
        if stand_in is not None and (pretrained or weights_file):
            raise SettingError(
                "model.init_args: a stand_in replaces ImageNet weights; set pretrained: false and no "
                "weights_file"
            )
        super().__init__()
        self.save_hyperparameters(ignore=["stand_in"])
        # A plain dict in the hyperparameters, so checkpoints load with weights_only=True.
        self.hparams["stand_in"] = asdict(stand_in) if stand_in is not None else None
        if stand_in is not None:
            weights_file = str(stand_in_weights(stand_in, backbone, image_size))
        self.network = create_backbone(
            backbone, num_classes, pretrained=pretrained, weights_file=weights_file, image_size=image_size
        )
        self.metric = metric_name(task)
        self.val_utility = utility_metric(task, num_classes)
        self.evaluation = Evaluation(task, num_classes)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, split: Split | None = None) -> Classifier:
        """The trained model of a checkpoint (read with weights_only; nothing downloaded), in eval mode.

        With ``split``, a checkpoint trained on another split is refused.
        """
        return cls.from_record(load_checkpoint(path), str(path), split)

    @classmethod
    def from_record(cls, checkpoint: dict, source: str, split: Split | None = None) -> Classifier:
        """:meth:`from_checkpoint` for a checkpoint already read by :func:`load_checkpoint`."""
        verify_checkpoint(checkpoint, source, split=split)
        with damaged_as(CheckpointError, f"{source}: not a whole pretrain or retrain model checkpoint"):
            hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
            # In a fresh context: inside another module's LightningCLI instantiation, Lightning would
            # otherwise give this model that module's hyperparameters.
            model = contextvars.Context().run(cls, **{**hparams, **NO_INITIAL_WEIGHTS})
            model.load_state_dict(checkpoint["state_dict"])
        return model.eval()

    @property
    def backbone(self) -> str:
        return self.hparams.backbone

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Before the weights are read: a checkpoint of another dataset is named as such, not a size mismatch.
        split = getattr(self._trainer and self._trainer.datamodule, "split", None)
        verify_checkpoint(checkpoint, "the checkpoint", split=split, backbone=self.hparams.backbone)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, _, targets = batch
        loss = task_loss(self.hparams.task, self(images), targets)
        self._stop_if_not_finite(loss, batch_idx)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, _, targets = batch
        logits = self(images).float()
        self.val_utility.update(logits, targets.long())
        self.log("val/loss", task_loss(self.hparams.task, logits, targets), batch_size=len(images))
        self.log(f"val/{self.metric}", self.val_utility, prog_bar=True, batch_size=len(images))

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        images, identities, targets = batch
        self.evaluation.update(TEST_POOLS[dataloader_idx], self(images), targets, identities)

    def on_test_epoch_end(self) -> None:
        self.results = self.evaluation.log(self, names=self.trainer.datamodule.split.identities)

    def configure_optimizers(self):
        hp = self.hparams
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(
                self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
            )
        else:
            optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        total = max(1, self.trainer.estimated_stepping_batches)
        warmup = min(total - 1, math.ceil(hp.warmup_epochs * total / max(1, self.trainer.max_epochs)))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": warmup_cosine(optimizer, warmup, total), "interval": "step"},
        }

    def configure_callbacks(self) -> list:
        """Keep the best epoch by the VAL metric and the latest one, under fixed names a resume can find
        (unless the trainer's checkpointing is off). The latest is a checkpoint of its own: Lightning's
        ``save_last`` only writes when the best one changes, and a resume would repeat epochs."""
        if not self.trainer.checkpoint_callbacks:
            return []
        folder = layout.checkpoint_dir(self.trainer.default_root_dir)
        best = ModelCheckpoint(
            folder, filename="best", monitor=f"val/{self.metric}", mode="max", enable_version_counter=False
        )
        return [best, ModelCheckpoint(folder, filename="last", enable_version_counter=False)]

    def _stop_if_not_finite(self, loss: torch.Tensor, batch_idx: int) -> None:
        # Decided on every rank alike, so that DDP processes stop together.
        if self.trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(loss)), all=True):
            return
        raise NonFiniteLossError(
            f"the training loss is {loss.item()} at epoch {self.current_epoch}, batch {batch_idx}; the run "
            f"stops before the update. The last good checkpoint is {self._last_checkpoint()}; lower model.lr "
            f"or check the data, then resume with --ckpt_path last"
        )

    def _last_checkpoint(self) -> str:
        last = layout.checkpoint_dir(self.trainer.default_root_dir) / layout.LAST
        return str(last) if last.is_file() else "none (no epoch finished)"
