"""Boundary Shrink: fine-tune each portrait toward its nearest wrong label, found by one adversarial step."""

from __future__ import annotations

from typing import Literal

import torch

from ..errors import at_least
from .base import Batch, UnlearningMethod, support_loss, support_steps_

Neighbour = Literal["wrong", "predicted"]


class BoundaryShrink(UnlearningMethod):
    """Boundary Shrink (Chen et al., "Boundary Unlearning", CVPR 2023), on the support images: each image's
    neighbour label is the model's prediction at x' = x + eps * sign(grad_x L(x, y)), one fast-gradient
    step toward its decision boundary; then ``steps`` SGD steps (``lr``, its strength) on the task loss of
    the images x against their neighbour labels, so the boundary moves past the forgotten people.

    The paper forgets whole classes. Classification: the neighbour is the most likely class at x' other
    than y (``neighbour: wrong``, the paper's "nearest but incorrect" class); ``predicted`` takes the plain
    prediction at x', which may be y itself when the step does not cross the boundary. Attributes
    (multi-label): each attribute is a binary decision, so the neighbour label is the model's thresholded
    prediction at x' per attribute: the attributes whose boundary the step crossed are flipped, the others
    keep the model's own value; the fine-tuning then shrinks the boundary only where it lies near the
    person (``wrong`` and ``predicted`` are the same). Images are not clamped after the step (the
    normalised pixel space). Eval mode, plain SGD, as the other support-only baselines. Reads the support
    images and their targets; nothing to prepare.

    Args:
        eps: the fast-gradient step's size in the normalised pixel space.
        lr: the fine-tuning's step size (chosen on VAL: docs/tuning.md).
        steps: fine-tuning steps, all support images in each.
        neighbour: ``wrong`` or ``predicted`` (classification only; see above).
    """

    strength_option = "lr"

    def __init__(
        self,
        pretrain_ckpt: str | None = None,
        *,
        eps: float = 0.1,
        lr: float = 1e-3,
        steps: int = 1,
        neighbour: Neighbour = "wrong",
        **kwargs,
    ):
        at_least("model.init_args", 0, eps=eps, lr=lr)
        at_least("model.init_args", 1, steps=steps)
        super().__init__(pretrain_ckpt, **kwargs)

    def neighbour_labels(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Each image's label at x' = x + eps * sign(grad_x L(x, y)) (see the class)."""
        task = self.model.hparams.task
        images = images.detach().requires_grad_(True)
        (gradient,) = torch.autograd.grad(support_loss(self, images, targets), [images])
        with torch.no_grad():
            logits = self.model(images + self.hparams.eps * gradient.sign()).float()
        if task == "multilabel":
            return (logits > 0).to(targets.dtype)
        if self.hparams.neighbour == "wrong":
            logits = logits.scatter(1, targets.long().unsqueeze(1), float("-inf"))
        return logits.argmax(dim=1)

    def forget(self, support: Batch) -> None:
        images, _, targets = support
        neighbours = self.neighbour_labels(images, targets)
        support_steps_(self, images, neighbours, self.at_strength(self.hparams.lr), self.hparams.steps)
