"""JiT (just in time), Lipschitz unlearning: smooth the model around each support image."""

from __future__ import annotations

import torch

from ..errors import at_least, positive
from .base import Batch, UnlearningMethod, sgd_step_


class JiT(UnlearningMethod):
    """For each support image, ``copies`` noisy copies x' = x + N(0, noise_std^2); one SGD step (``lr``)
    on the mean of ||f(x) - f(x')|| / ||x - x'|| over all parameters, f being the model's outputs.
    Reads the support images only (not their targets). Nothing to prepare.

    Args:
        lr: the step size of the SGD step (0.01 in the paper).
        copies: noisy copies per support image (25 in the paper).
        noise_std: the noise's standard deviation, in the normalised pixel space ([-1, 1]); the protocol
            leaves it open.
    """

    reads_targets = False

    def __init__(
        self,
        pretrain_ckpt: str | None = None,
        *,
        lr: float = 0.01,
        copies: int = 25,
        noise_std: float = 0.1,
        **kwargs,
    ):
        at_least("model.init_args", 0, lr=lr)
        at_least("model.init_args", 1, copies=copies)
        positive("model.init_args", noise_std=noise_std)  # no noise: ||x - x'|| = 0 divides
        super().__init__(pretrain_ckpt, **kwargs)

    def smoothness_loss(self, images: torch.Tensor) -> torch.Tensor:
        """Mean over the noisy copies of ||f(x) - f(x')|| / ||x - x'||."""
        copies = images.repeat_interleave(self.hparams.copies, dim=0)
        noisy = copies + self.hparams.noise_std * torch.randn_like(copies)
        outputs = self.model(images).repeat_interleave(self.hparams.copies, dim=0)
        change = (outputs - self.model(noisy)).flatten(1).norm(dim=1)
        return (change / (copies - noisy).flatten(1).norm(dim=1)).mean()

    def forget(self, support: Batch) -> None:
        self.model.eval()
        params = list(self.model.network.parameters())
        sgd_step_(params, torch.autograd.grad(self.smoothness_loss(support[0]), params), self.hparams.lr)
