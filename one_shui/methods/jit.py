"""JiT (just in time), Lipschitz unlearning: smooth the model around each support image."""

from __future__ import annotations

import torch
from timm.models.resnet import ResNet
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ..errors import at_least, positive
from .base import Batch, MethodSetupError, UnlearningMethod, sgd_step_


def published_noise_std(network: nn.Module) -> float:
    """The published noise standard deviation of the backbone's family: 30 for a ViT, 0.01 for a ResNet."""
    if isinstance(network, VisionTransformer):
        return 30.0
    if isinstance(network, ResNet):
        return 0.01
    raise MethodSetupError(
        f"JiT has no published noise for a {type(network).__name__} backbone (only for ViTs and ResNets): "
        "set model.init_args.noise_std"
    )


class JiT(UnlearningMethod):
    """Lipschitz unlearning, as published: the support images are taken in batches of
    ``support_batch_size`` and each batch makes one SGD step (``lr``) on the Lipschitz loss: for ``copies``
    noisy copies x' = clamp(x + N(0, noise_std^2)) of the batch, the mean over the copies of the sum over
    the images of ||f(x) - f(x')|| / ||x - x'||, f being the model's outputs; f(x') is taken without
    gradient.

    As in the authors' code, the step runs with the model in training mode (BatchNorm uses and updates
    batch statistics; a ViT without dropout computes the same function) and, with several batches,
    gradients are never zeroed between them. Reads the support images only (not their targets).
    Nothing to prepare.

    Args:
        lr: the step size of the SGD step (0.01 in the paper).
        copies: noisy copies of each batch (25 in the paper).
        noise_std: the noise's standard deviation in the normalised pixel space ([-1, 1]); each noisy copy
            is clamped to the minimum and maximum of its clean batch. None: the published value for the
            backbone, 30 for a ViT and 0.01 for a ResNet.
        support_batch_size: support images per SGD step (128 in the paper).
        accumulate_gradients: as published, each step applies the sum of the gradients of all batches so
            far (the authors' code never zeroes them); False: each batch's own gradient. The same with a
            single batch (no more than ``support_batch_size`` support images).
    """

    reads_targets = False
    strength_option = "lr"

    def __init__(
        self,
        pretrain_ckpt: str | None = None,
        *,
        lr: float = 0.01,
        copies: int = 25,
        noise_std: float | None = None,
        support_batch_size: int = 128,
        accumulate_gradients: bool = True,
        **kwargs,
    ):
        at_least("model.init_args", 0, lr=lr)
        at_least("model.init_args", 1, copies=copies, support_batch_size=support_batch_size)
        positive("model.init_args", noise_std=noise_std)  # no noise: ||x - x'|| = 0 divides
        super().__init__(pretrain_ckpt, **kwargs)
        self.noise_std = noise_std if noise_std is not None else published_noise_std(self.model.network)

    def lipschitz_loss(self, images: torch.Tensor) -> torch.Tensor:
        """Mean over the noisy copies x' of the sum over the images x of ||f(x) - f(x')|| / ||x - x'||."""
        outputs = self.model(images)
        low, high = images.min(), images.max()  # of the whole batch, as published
        total = images.new_zeros(())
        for _ in range(self.hparams.copies):  # one forward pass per copy, as published (BatchNorm statistics)
            noisy = (images + self.noise_std * torch.randn_like(images)).clamp(low, high)
            with torch.no_grad():
                noisy_outputs = self.model(noisy)
            change = (outputs - noisy_outputs).flatten(1).norm(dim=1)
            total = total + (change / (images - noisy).flatten(1).norm(dim=1)).sum()
        return total / self.hparams.copies

    def forget(self, support: Batch) -> None:
        params = list(self.model.network.parameters())
        was_training = self.model.training
        self.model.train()
        try:
            grads = None
            for images in support[0].split(self.hparams.support_batch_size):
                batch_grads = torch.autograd.grad(self.lipschitz_loss(images), params)
                if grads is None or not self.hparams.accumulate_gradients:
                    grads = batch_grads
                else:
                    grads = [total + grad for total, grad in zip(grads, batch_grads, strict=True)]
                sgd_step_(params, grads, self.at_strength(self.hparams.lr))
        finally:
            self.model.train(was_training)
