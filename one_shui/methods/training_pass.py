"""TrainingPass: a method whose preparation is one pass over the training data that sums a statistic of
every parameter, batch by batch (SSD's and LFSSD's importances, SLUG's retain gradient)."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

import torch
from torch.nn.utils import parameters_to_vector

from .base import Batch, MethodSetupError, UnlearningMethod, support_loss


class TrainingPass(UnlearningMethod, metaclass=ABCMeta):
    """``fit`` reads the training data once, as it is tested (no augmentation), with the model in eval
    mode, and sums :meth:`batch_importance` over the batches (``importance_sum``, over ``batches``, summed
    over every process); the sum is kept in the prepared checkpoint, so that ``forget`` needs only the
    support set and reads the mean through :attr:`training_mean`. Nothing of the model changes in fit."""

    train_pool = "train"  # fit: one pass over the training data
    augment_train_pool = False  # the statistic of the images as they are tested, as SSD's authors do

    def __init__(self, pretrain_ckpt: str | None = None, **kwargs):
        super().__init__(pretrain_ckpt, **kwargs)
        self.automatic_optimization = False  # fit measures; it never updates the model
        size = sum(p.numel() for p in self.model.network.parameters())
        self.register_buffer("importance_sum", torch.zeros(size))  # over the training batches seen
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))
        self._epoch_sum: torch.Tensor | None = None  # made at each epoch start, on the module's device
        self._epoch_batches = 0

    @abstractmethod
    def batch_importance(self, batch: Batch) -> torch.Tensor:
        """The statistic of one batch, a vector over every parameter of the network."""

    def gradient_of(self, value: torch.Tensor) -> torch.Tensor:
        """The gradient of ``value`` over every parameter of the network, one vector (0 for a parameter
        it does not reach, as SSD's authors do)."""
        params = list(self.model.network.parameters())
        grads = torch.autograd.grad(value, params, allow_unused=True, materialize_grads=True)
        return parameters_to_vector(grads)

    def loss_gradient(self, batch: Batch) -> torch.Tensor:
        """The gradient of the batch's mean task loss (:meth:`gradient_of`)."""
        images, _, targets = batch
        return self.gradient_of(support_loss(self, images, targets))

    @property
    def training_mean(self) -> torch.Tensor:
        """The statistic's mean over the training batches; refused before ``fit``."""
        if self.batches == 0:
            raise MethodSetupError(
                f"{type(self).__name__} has no statistics of the training data: run its `one-shui fit` "
                "first and give the checkpoints/last.ckpt it writes"
            )
        return self.importance_sum / self.batches

    def on_train_epoch_start(self) -> None:
        self.model.eval()  # the trained function, as it is served
        self._epoch_sum = torch.zeros_like(self.importance_sum)
        self._epoch_batches = 0

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        self._epoch_sum += self.batch_importance(batch)
        self._epoch_batches += 1

    def on_train_epoch_end(self) -> None:
        # Summed over every process before the epoch's checkpoint is written.
        strategy = self.trainer.strategy
        self.importance_sum += strategy.reduce(self._epoch_sum, reduce_op="sum")
        self.batches += int(
            strategy.reduce(torch.tensor(self._epoch_batches, device=self.device), reduce_op="sum")
        )

    def configure_optimizers(self) -> None:
        return None
