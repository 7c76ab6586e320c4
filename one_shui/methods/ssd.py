"""SSD, selective synaptic dampening: dampen the parameters far more important to the support set than to
the training data."""

from __future__ import annotations

import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from ..errors import at_least
from .base import Batch
from .training_pass import TrainingPass


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


class SSD(TrainingPass):
    """Importance I = squared gradient of the batch's mean task loss, per parameter, averaged over batches,
    with the model in eval mode. ``fit`` computes I_D in one pass over the training data
    (:class:`~one_shui.methods.training_pass.TrainingPass`), in batches of ``train_batch_size`` (128 in the
    paper), read as tested, as published. ``forget`` computes I_S over
    the support images in batches of ``support_batch_size`` and dampens every parameter by :func:`dampened`.

    Args:
        dampening_constant: lambda.
        selection_weighting: alpha.
        support_batch_size: support images per batch of I_S (128 in the paper).
        train_batch_size: training images per batch of I_D (128 in the paper): the data's batch size in
            fit (:meth:`~one_shui.methods.base.UnlearningMethod.data_options`).
    """

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

    def batch_importance(self, batch: Batch) -> torch.Tensor:
        """A batch's importance of every parameter: the squared gradient of its mean task loss."""
        return self.loss_gradient(batch).square()

    # --- forget: I_S on the support set, then dampening ------------------------------------------

    def support_importance(self, support: Batch) -> torch.Tensor:
        """I_S: the importance of each batch of ``support_batch_size`` support images, averaged over the
        batches."""
        batches = list(zip(*(part.split(self.hparams.support_batch_size) for part in support), strict=True))
        return sum(self.batch_importance(batch) for batch in batches) / len(batches)

    def forget(self, support: Batch) -> None:
        train_importance = self.training_mean
        self.model.eval()
        params = list(self.model.network.parameters())
        weights = dampened(
            parameters_to_vector(params).detach(),
            train_importance,
            self.support_importance(support),
            selection_weighting=self.hparams.selection_weighting / self.strength,
            dampening_constant=self.hparams.dampening_constant,
        )
        with torch.no_grad():
            vector_to_parameters(weights, params)
