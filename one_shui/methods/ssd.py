"""SSD, selective synaptic dampening: dampen the parameters far more important to the support set than to
the training data."""

from __future__ import annotations

import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from ..errors import at_least
from ..metrics.utility import task_loss
from .base import Batch, MethodSetupError, UnlearningMethod


def dampened(
    weights: torch.Tensor,
    train_importance: torch.Tensor,
    support_importance: torch.Tensor,
    *,
    selection_weighting: float,
    dampening_constant: float,
) -> torch.Tensor:
    """The SSD rule: where I_S > alpha * I_D, theta * min(1, lambda * I_D / I_S); elsewhere theta."""
    selected = support_importance > selection_weighting * train_importance
    factor = (dampening_constant * train_importance / support_importance).clamp(max=1)
    return torch.where(selected, weights * factor, weights)


class SSD(UnlearningMethod):
    """Importance I = squared gradient of the batch's mean task loss, per parameter, averaged over batches,
    with the model in eval mode. ``fit`` computes I_D in one pass over the training data, read with the test
    transform (no augmentation) in batches of ``train_batch_size`` (128 in the paper); it is kept
    in the prepared checkpoint, so that ``forget`` needs only the support set. ``forget`` computes I_S over
    the support images in batches of ``support_batch_size`` and dampens every parameter by :func:`dampened`.

    Args:
        dampening_constant: lambda.
        selection_weighting: alpha.
        support_batch_size: support images per batch of I_S (128 in the paper).
        train_batch_size: training images per batch of I_D (128 in the paper): the data's batch size in
            fit (:meth:`~one_shui.methods.base.UnlearningMethod.data_options`).
    """

    train_pool = "train"  # fit: one pass over the training data
    augment_train_pool = False  # as published: I_D is measured on the images as they are tested
    # alpha, the selection threshold: a stronger SSD selects more, so it serves alpha / strength
    strength_option = "selection_weighting"

    def __init__(
        self,
        pretrain_ckpt: str | None = None,
        *,
        dampening_constant: float = 0.1,
        selection_weighting: float = 50.0,
        support_batch_size: int = 128,
        train_batch_size: int = 128,
        **kwargs,
    ):
        at_least(
            "model.init_args",
            0,
            dampening_constant=dampening_constant,
            selection_weighting=selection_weighting,
        )
        at_least(
            "model.init_args", 1, support_batch_size=support_batch_size, train_batch_size=train_batch_size
        )
        super().__init__(pretrain_ckpt, **kwargs)
        self.automatic_optimization = False  # fit measures; it never updates the model
        size = sum(p.numel() for p in self.model.network.parameters())
        self.register_buffer("importance_sum", torch.zeros(size))  # over the training batches seen
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))
        self._epoch_sum: torch.Tensor | None = None  # made at each epoch start, on the module's device
        self._epoch_batches = 0

    def batch_importance(self, batch: Batch) -> torch.Tensor:
        """A batch's importance of every parameter: the squared gradient of its mean task loss."""
        images, _, targets = batch
        params = list(self.model.network.parameters())
        loss = task_loss(self.model.hparams.task, self.model(images), targets)
        # A parameter the loss does not reach has no importance (0), as in the authors' code.
        grads = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
        return parameters_to_vector(grads).square()

    # --- fit: I_D over the training data -------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        self.model.eval()  # the importance of the trained function, as it is served
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

    # --- forget: I_S on the support set, then dampening ------------------------------------------

    def support_importance(self, support: Batch) -> torch.Tensor:
        """I_S: the importance of each batch of ``support_batch_size`` support images, averaged over the
        batches."""
        batches = list(zip(*(part.split(self.hparams.support_batch_size) for part in support), strict=True))
        return sum(self.batch_importance(batch) for batch in batches) / len(batches)

    def forget(self, support: Batch) -> None:
        if self.batches == 0:
            raise MethodSetupError(
                f"{type(self).__name__} has no importances of the training data: run its `one-shui fit` "
                "first and give the checkpoints/last.ckpt it writes"
            )
        self.model.eval()
        params = list(self.model.network.parameters())
        weights = dampened(
            parameters_to_vector(params).detach(),
            self.importance_sum / self.batches,
            self.support_importance(support),
            selection_weighting=self.hparams.selection_weighting / self.strength,
            dampening_constant=self.hparams.dampening_constant,
        )
        with torch.no_grad():
            vector_to_parameters(weights, params)
