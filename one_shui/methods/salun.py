"""SalUn, support-only: random-label fine-tuning of the weights most salient to the forget loss."""

from __future__ import annotations

import torch

from ..errors import at_most, positive
from .base import Batch, support_loss
from .random_labels import RandomLabels, RandomTargets


def saliency_mask(grads: list[torch.Tensor], share: float) -> list[torch.Tensor]:
    """1 where |g| is among the top ``share`` of all the weights' gradient magnitudes (one threshold
    over the whole network), else 0; the ties at the threshold are kept."""
    magnitudes = torch.cat([grad.abs().flatten() for grad in grads])
    kept = max(1, round(share * magnitudes.numel()))
    threshold = torch.topk(magnitudes, kept, sorted=False).values.min()
    return [(grad.abs() >= threshold).to(grad.dtype) for grad in grads]


class SalUn(RandomLabels):
    """SalUn (Fan et al., ICLR 2024), support-only: the weight saliency mask m = 1[|grad L_f(theta)| in
    the top share ``gamma``] (L_f the task loss of the support images against their own targets, one
    threshold over the whole network: :func:`saliency_mask`), then :class:`RandomLabels`' fine-tuning of
    the masked weights only, theta <- theta - lr * m * grad L(support, random targets).

    The published method adds a retain term to the fine-tuning (the cross-entropy on retain data); 1-SHUI
    has no retain data, so this variant drops it: its row's label says "support only". Reads the support
    images and their targets; nothing to prepare.

    Args:
        gamma: the share of weights the mask keeps (0.5, the paper's default).
        lr, steps, targets: as :class:`RandomLabels`.
    """

    def __init__(
        self,
        pretrain_ckpt: str | None = None,
        *,
        gamma: float = 0.5,
        lr: float = 1e-3,
        steps: int = 1,
        targets: RandomTargets = "prevalence",
        **kwargs,
    ):
        positive("model.init_args", gamma=gamma)
        at_most("model.init_args", 1, gamma=gamma)
        super().__init__(pretrain_ckpt, lr=lr, steps=steps, targets=targets, **kwargs)

    def mask(self, support: Batch) -> list[torch.Tensor]:
        images, _, targets = support
        params = list(self.model.network.parameters())
        grads = torch.autograd.grad(support_loss(self, images, targets), params)
        return saliency_mask(grads, self.hparams.gamma)
