"""LFSSD, label-free selective synaptic dampening: SSD whose importances need no targets."""

from __future__ import annotations

import torch

from .base import Batch
from .ssd import SSD


class LFSSD(SSD):
    """LFSSD (Foster, Schoepf and Brintrup, "Loss-Free Machine Unlearning", ICLR 2024 Tiny Paper): SSD
    with the importance of a batch taken from the model's outputs instead of its loss, |grad of the batch's
    mean squared l2 norm of the outputs| (the absolute gradient, where SSD squares the loss's gradient, as
    the authors' code does), so neither ``fit`` nor ``forget`` reads a target. Everything else is
    :class:`~one_shui.methods.ssd.SSD`'s: I_D over the training data in ``fit``, I_S over the support
    images in ``forget``, the same selection (alpha, its strength) and dampening (lambda), with the same
    options. The outputs are the logits (the 40 attributes' or the classes').
    """

    reads_targets = False  # forget is served zeros in place of the support targets

    def batch_importance(self, batch: Batch) -> torch.Tensor:
        """|d/d theta of the mean over the batch of ||f(x)||_2^2|, per parameter."""
        output_norm = self.model(batch[0]).float().square().sum(dim=1).mean()
        return self.gradient_of(output_norm).abs()
