"""UnlearningMethod: the one interface every unlearning method implements.

``fit`` is the method's preparation (it may read training data, before that data is gone);
``forget(support)`` is the unlearning step and receives only the support images, their targets and
identity ids; ``test`` runs ``forget`` on the datamodule's support pool, then the shared evaluation,
with ToW against the retrained model of the same split.
"""

from __future__ import annotations

from typing import ClassVar

import lightning as L
import torch

from ..checkpoints import checkpoint_split, load_checkpoint
from ..data.datamodule import TEST_SETS
from ..metrics.evaluation import Evaluation
from ..metrics.tow import POOLS
from .classifier import Classifier

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # images, identity ids, targets


class UnlearningMethod(L.LightningModule):
    """Holds the original model, loaded from a pretrain checkpoint, and unlearns it in place.

    Args:
        pretrain_ckpt: the original model; its split is the one every later step must use.
        retrain_ckpt: the retrained model of the same split, for ToW (optional).
        num_classes, task, image_size: linked from the data by the CLI; checked against the checkpoint.

    A method whose ``forget`` reads more than the support set says so in :attr:`reads`; the
    evaluation records it.
    """

    reads: ClassVar[tuple[str, ...]] = ("support",)  # what forget() reads: 1-SHUI allows the support set only

    def __init__(
        self,
        pretrain_ckpt: str,
        retrain_ckpt: str | None = None,
        num_classes: int | None = None,
        task: str | None = None,
        image_size: int | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        checkpoint = load_checkpoint(pretrain_ckpt)  # read once: the split and the model
        self.split = checkpoint_split(checkpoint, pretrain_ckpt)
        self.model = Classifier.from_record(checkpoint, pretrain_ckpt)
        expected = {"num_classes": num_classes, "task": task, "image_size": image_size}
        for name, value in expected.items():
            if value is not None and self.model.hparams[name] != value:
                raise ValueError(
                    f"{pretrain_ckpt} holds a model with {name} {self.model.hparams[name]!r}, but the data "
                    f"gives {value!r}: use the data the model was trained on"
                )
        self._retrained = {}  # not a submodule: kept out of this method's checkpoints
        self.evaluation = Evaluation(self.model.hparams.task, self.model.hparams.num_classes)

    @property
    def backbone(self) -> str:
        return self.model.hparams.backbone

    def forget(self, support: Batch) -> None:
        """Unlearn the people of ``support`` from ``self.model``, in place, reading nothing else."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule
        data.setup(stage)
        self.split.require_same(data.split, "the pretrain checkpoint")

    # --- test: forget, then the shared evaluation ---------------------------------------------

    def on_test_start(self) -> None:
        data = self.trainer.datamodule
        support = data.loader("support", batch_size=len(data.rows["support"]))
        # Lightning tests under inference mode; forget() differentiates, so its batch is made outside it.
        with torch.inference_mode(False), torch.enable_grad():
            self.forget(tuple(t.to(self.device) for t in next(iter(support))))
        for logger in self.loggers:
            logger.log_hyperparams({"forget_reads": ",".join(self.reads)})
        if self.hparams.retrain_ckpt:
            retrained = Classifier.from_checkpoint(self.hparams.retrain_ckpt, split=self.split)
            self._retrained = {
                "model": retrained.to(self.device),
                "evaluation": Evaluation(retrained.hparams.task, retrained.hparams.num_classes),
            }

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        images, identities, targets = batch
        pool = TEST_SETS[dataloader_idx]
        self.evaluation.update(pool, self.model(images), targets, identities)
        if self._retrained and pool in POOLS:
            self._retrained["evaluation"].update(pool, self._retrained["model"](images), targets, identities)

    def on_test_epoch_end(self) -> None:
        retrained = None
        if self._retrained:
            retrained = self._retrained["evaluation"].utilities()
        self.results = self.evaluation.log(self, retrained)
        self.results["reads"] = ",".join(self.reads)
