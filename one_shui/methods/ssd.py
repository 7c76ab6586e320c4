"""SSD, selective synaptic dampening: dampen the parameters far more important to the support set than to
the training data."""

from __future__ import annotations

import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from ..errors import at_least
from ..metrics.utility import task_loss
from .base import Batch, MethodSetupError, UnlearningMethod


class SSD(UnlearningMethod):
    """Importance I = mean squared gradient of the task loss, per parameter. ``fit`` computes I_D over the
    training data (one pass, one gradient per batch; kept in the prepared checkpoint, so that ``forget``
    needs only the support set); ``forget`` computes I_S on the support batch and, where
    I_S > alpha * I_D, multiplies the parameter by min(1, lambda * I_D / I_S).

    Args:
        dampening_constant: lambda.
        selection_weighting: alpha.
    """

    train_pool = "train"  # fit: one pass over the training data

    def __init__(
        self,
        pretrain_ckpt: str | None = None,
        *,
        dampening_constant: float = 0.1,
        selection_weighting: float = 50.0,
        **kwargs,
    ):
        at_least(
            "model.init_args",
            0,
            dampening_constant=dampening_constant,
            selection_weighting=selection_weighting,
        )
        super().__init__(pretrain_ckpt, **kwargs)
        self.automatic_optimization = False  # fit measures; it never updates the model
        size = sum(p.numel() for p in self.model.network.parameters())
        self.register_buffer("importance_sum", torch.zeros(size))  # over the training batches seen
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))
        self._epoch_sum: torch.Tensor | None = None  # made at each epoch start, on the module's device
        self._epoch_batches = 0

    def _squared_gradient(self, batch: Batch) -> torch.Tensor:
        images, _, targets = batch
        params = list(self.model.network.parameters())
        loss = task_loss(self.model.hparams.task, self.model(images), targets)
        return parameters_to_vector(torch.autograd.grad(loss, params)).square()

    # --- fit: I_D over the training data -------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        self.model.eval()  # the importance of the trained function, as it is served
        self._epoch_sum = torch.zeros_like(self.importance_sum)
        self._epoch_batches = 0

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        self._epoch_sum += self._squared_gradient(batch)
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

    def forget(self, support: Batch) -> None:
        if self.batches == 0:
            raise MethodSetupError(
                "SSD has no importances of the training data: run its `one-shui fit` first and give the "
                "checkpoints/last.ckpt it writes"
            )
        self.model.eval()
        train = self.importance_sum / self.batches
        forget = self._squared_gradient(support)
        selected = forget > self.hparams.selection_weighting * train
        factor = (self.hparams.dampening_constant * train / forget).clamp(max=1)
        weights = parameters_to_vector(self.model.network.parameters()).detach()
        with torch.no_grad():
            vector_to_parameters(
                torch.where(selected, weights * factor, weights), self.model.network.parameters()
            )
