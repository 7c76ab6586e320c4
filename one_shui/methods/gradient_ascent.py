"""Gradient ascent on the support images: NegGrad without its retain term, the simplest 1-SHUI baseline."""

from __future__ import annotations

from ..errors import at_least
from .base import Batch, UnlearningMethod, support_steps_


class GradientAscent(UnlearningMethod):
    """``steps`` steps of gradient ascent on the support images' mean task loss, theta <- theta + lr *
    grad L(support), all support images in every step (NegGrad, as in Golatkar et al., CVPR 2020 and
    the unlearning benchmarks since, without its retain term: 1-SHUI has no retain data).

    Choices where the method is silent: the model stays in eval mode (a few portraits do not move the
    BatchNorm statistics of a ResNet; a ViT computes the same either way) and the step is plain SGD
    without momentum, so that ``lr`` alone scales it (its strength). Reads the support images and
    their targets; nothing to prepare.

    Args:
        lr: the ascent's step size (chosen on VAL: docs/tuning.md).
        steps: ascent steps.
    """

    strength_option = "lr"

    def __init__(self, pretrain_ckpt: str | None = None, *, lr: float = 1e-3, steps: int = 1, **kwargs):
        at_least("model.init_args", 0, lr=lr)
        at_least("model.init_args", 1, steps=steps)
        super().__init__(pretrain_ckpt, **kwargs)

    def forget(self, support: Batch) -> None:
        images, _, targets = support
        # ascent: p <- p + lr * g
        support_steps_(self, images, targets, -self.at_strength(self.hparams.lr), self.hparams.steps)
