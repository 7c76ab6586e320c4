"""PGU, projected gradient unlearning: descend a reverse loss on the support set with each layer's
gradient kept off the input directions that the training data (less the support set) relies on."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..data.sources import Task
from ..errors import at_least, at_most
from .base import Batch, MethodSetupError, UnlearningMethod, sgd_step_

ReverseTargets = Literal["positive", "published"]
ConvPatches = Literal["layer", "published"]

MARGIN = 0.05  # the reverse loss is -log(1 - p + MARGIN): bounded as p -> 1
ENTROPY_WEIGHT = 0.2  # weight of the negative entropy of the softmax over the outputs


def layer_inputs(layer: nn.Module, inputs: torch.Tensor, conv_patches: ConvPatches = "layer") -> torch.Tensor:
    """The rows a layer's weight multiplies, one per row: features for a Linear (every token of a ViT);
    for a Conv2d its patches, with the layer's own kernel, stride, padding and dilation (``layer``: a
    ViT's patch embedding reads non-overlapping patches), or every stride-1, undilated window
    (``published``)."""
    if isinstance(layer, nn.Conv2d):
        if conv_patches == "published":
            patches = F.unfold(inputs, layer.kernel_size, 1, layer.padding, 1)
        else:
            patches = F.unfold(inputs, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])
    return inputs.reshape(-1, inputs.shape[-1])


def reverse_loss(
    task: Task, logits: torch.Tensor, targets: torch.Tensor, reverse_targets: ReverseTargets = "positive"
) -> torch.Tensor:
    """Mean over the samples of -log(1 - p + 0.05), p the probability of what the sample is labelled:
    its class's softmax probability (classification) or, multilabel, the sigmoid of its entries, averaged
    over the sample's positive attributes (``positive``; a sample without one adds 0) or, as published,
    over the entries whose column is the 0/1 value of each target (``published``: column 0 where an
    attribute is absent, column 1 where present, whatever the attribute)."""
    logits = logits.float()
    if task != "multilabel":
        p = logits.softmax(dim=1).gather(1, targets[:, None].long()).squeeze(1)
        return -torch.log(1 - p + MARGIN).mean()
    if reverse_targets == "published":
        return -torch.log(torch.sigmoid(-logits.gather(1, targets.long())) + MARGIN).mean()
    positive = (targets > 0.5).float()
    per_entry = -torch.log(torch.sigmoid(-logits) + MARGIN)  # 1 - sigmoid(z) = sigmoid(-z)
    return ((per_entry * positive).sum(1) / positive.sum(1).clamp(min=1)).mean()


def pgu_loss(
    task: Task, logits: torch.Tensor, targets: torch.Tensor, reverse_targets: ReverseTargets = "positive"
) -> torch.Tensor:
    """The loss PGU descends on a batch: the reverse loss plus 0.2 x the negative entropy of the softmax
    over all outputs (for attributes too), averaged over the samples."""
    log_p = logits.float().log_softmax(dim=1)
    negative_entropy = (log_p.exp() * log_p).sum(1).mean()
    return reverse_loss(task, logits, targets, reverse_targets) + ENTROPY_WEIGHT * negative_entropy


def protected_basis(difference: torch.Tensor, gamma: float) -> torch.Tensor:
    """The directions (orthonormal columns) of the symmetric ``difference`` of second moments that PGU
    protects: its eigenvectors by decreasing |eigenvalue| (its singular vectors), as many as the smallest
    count k whose share of the sum of the square roots of the |eigenvalues| exceeds ``gamma``."""
    values, vectors = torch.linalg.eigh(difference.double())
    spectrum, order = values.abs().sqrt().sort(descending=True)
    if spectrum.sum() <= 0:
        return vectors[:, :0].float()
    share = spectrum.cumsum(0) / spectrum.sum()
    k = min(int((share <= gamma).sum()) + 1, len(share))
    return vectors[:, order[:k]].float()


def kept_energy(moment: torch.Tensor, basis: torch.Tensor) -> float:
    """The share of a second moment's trace that lies in the span of ``basis`` (orthonormal columns):
    trace(B^T S B) / trace(S), e.g. how much of the training inputs' energy PGU protects in a layer."""
    moment, basis = moment.double(), basis.double()
    return float(torch.einsum("ik,ij,jk->", basis, moment, basis) / moment.trace())


def cosine_lr(lr: float, epoch: int, epochs: int) -> float:
    """The step size of ``epoch`` (from 0) under a cosine schedule from ``lr`` to 0 over ``epochs``,
    stepped once per epoch."""
    return lr * (1 + math.cos(math.pi * epoch / epochs)) / 2


class PGU(UnlearningMethod):
    """``fit``: per Linear and Conv2d layer of the backbone, the SUM of x x^T over the inputs x it
    receives from the training data, read once with the test transform (kept in the prepared
    checkpoint). ``forget``: the same sum over the support set; each layer's protected directions come
    from the training sum minus the support's (:func:`protected_basis`, share ``gamma``); then
    ``epochs`` epochs of SGD over the support set in shuffled batches of ``support_batch_size``, step size
    cosine from ``lr`` (:func:`cosine_lr`), on :func:`pgu_loss`, each weight's gradient projected off
    its layer's protected directions. Only those weights change; the model stays in eval mode
    (normalisation statistics frozen).

    Args:
        lr: the first epoch's step size (CelebA and CelebA-HQ: 0.1 for N <= 50, 0.01 for N = 200;
            MUFAC: 0.01 for N = 5, 0.1 for N = 10).
        epochs: passes over the support set (5 for N <= 50, 10 for N = 200; MUFAC: 5 for N = 5, 10 for
            N = 10).
        gamma: the share of the spectrum whose directions are protected (0.9 for N <= 50, 0.75 for
            N = 200; MUFAC: 0.9 for N = 5, 0.75 for N = 10).
        support_batch_size: the support set's batch size (the published 128).
        train_batch_size: the batch size of fit's pass over the training data (the published 128): the
            data's batch size in fit (:meth:`~one_shui.methods.base.UnlearningMethod.data_options`).
        reverse_targets: which sigmoid entries the multilabel reverse loss pushes down: ``positive``
            (**fix**, the default: each sample's positive attributes) or ``published`` (the published
            code's: the 0/1 target values used as column indices, see :func:`reverse_loss`).
        conv_patches: the patches a Conv2d's statistics are taken over: ``layer`` (**fix**, the default:
            the ones its weight multiplies) or ``published`` (every stride-1 window).
    """

    train_pool = "train"  # fit: one pass over the training data
    augment_train_pool = False  # ... with the test transform
    strength_option = "lr"  # the first epoch's step size of forget

    def __init__(
        self,
        pretrain_ckpt: str | None = None,
        *,
        lr: float = 0.1,
        epochs: int = 5,
        gamma: float = 0.9,
        support_batch_size: int = 128,
        train_batch_size: int = 128,
        reverse_targets: ReverseTargets = "positive",
        conv_patches: ConvPatches = "layer",
        **kwargs,
    ):
        at_least("model.init_args", 0, lr=lr, epochs=epochs, gamma=gamma)
        at_least(
            "model.init_args", 1, support_batch_size=support_batch_size, train_batch_size=train_batch_size
        )
        at_most("model.init_args", 1, gamma=gamma)
        super().__init__(pretrain_ckpt, **kwargs)
        self.automatic_optimization = False  # fit measures; it never updates the model
        self.layers = {
            name: layer
            for name, layer in self.model.network.named_modules()
            if isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d) and layer.groups == 1)
        }
        self.moments = nn.Module()  # per layer: the sum of x x^T over the training inputs
        for name, layer in self.layers.items():
            size = layer.weight[0].numel()
            self.moments.register_buffer(_key(name), torch.zeros(size, size))
        self.register_buffer("train_images", torch.zeros((), dtype=torch.long))  # 0: not prepared
        self._epoch: dict[str, torch.Tensor] = {}
        self._epoch_images = 0

    @property
    def updated_parameters(self) -> tuple[str, ...]:
        return tuple(f"{name}.weight" for name in self.layers)

    @torch.no_grad()
    def input_moments(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per layer, the sum of x x^T over the inputs x it receives for ``images``."""
        moments: dict[str, torch.Tensor] = {}

        def record(name):
            def hook(layer, args):
                rows = layer_inputs(layer, args[0].float(), self.hparams.conv_patches)
                moments[name] = moments.get(name, 0) + rows.T @ rows

            return hook

        handles = [layer.register_forward_pre_hook(record(name)) for name, layer in self.layers.items()]
        try:
            for chunk in images.split(self.hparams.support_batch_size):
                self.model(chunk)
        finally:
            for handle in handles:
                handle.remove()
        return moments

    # --- fit: the training data's input moments --------------------------------------------------

    def on_train_epoch_start(self) -> None:
        self.model.eval()
        self._epoch, self._epoch_images = {}, 0

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        for name, moment in self.input_moments(batch[0]).items():
            self._epoch[name] = self._epoch.get(name, 0) + moment
        self._epoch_images += len(batch[0])

    def on_train_epoch_end(self) -> None:
        # Summed over every process before the epoch's checkpoint is written.
        strategy = self.trainer.strategy
        for name, moment in self._epoch.items():
            getattr(self.moments, _key(name)).add_(strategy.reduce(moment, reduce_op="sum"))
        count = strategy.reduce(torch.tensor(self._epoch_images, device=self.device), reduce_op="sum")
        self.train_images += int(count)

    def configure_optimizers(self) -> None:
        return None

    # --- forget: projected descent on the reverse loss --------------------------------------------

    def train_moment(self, layer: str) -> torch.Tensor:
        """The sum of x x^T over the training inputs of ``layer`` (one of :attr:`layers`), from ``fit``."""
        if self.train_images == 0:
            raise MethodSetupError(
                "PGU has no input statistics of the training data: run its `one-shui fit` first and "
                "give the checkpoints/last.ckpt it writes"
            )
        return getattr(self.moments, _key(layer))

    def protected_bases(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per layer, the directions protected when forgetting ``images`` (the support set)."""
        train = {name: self.train_moment(name) for name in self.layers}  # refuses before any work
        support = self.input_moments(images)
        return {
            name: protected_basis(train[name] - support[name], self.hparams.gamma) for name in self.layers
        }

    def forget(self, support: Batch) -> None:
        images, _, targets = support
        hp = self.hparams
        self.model.eval()
        bases = self.protected_bases(images)
        weights = [layer.weight for layer in self.layers.values()]
        for epoch in range(hp.epochs):
            lr = cosine_lr(self.at_strength(hp.lr), epoch, hp.epochs)
            for batch in torch.randperm(len(images), device=images.device).split(hp.support_batch_size):
                logits = self.model(images[batch])
                loss = pgu_loss(self.model.hparams.task, logits, targets[batch], hp.reverse_targets)
                grads = torch.autograd.grad(loss, weights)
                projected = [_project_off(g, bases[name]) for name, g in zip(self.layers, grads, strict=True)]
                sgd_step_(weights, projected, lr)


def _project_off(grad: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """A weight's gradient with its rows' components along ``basis`` (orthonormal columns) removed."""
    flat = grad.reshape(grad.shape[0], -1)
    return (flat - flat @ basis @ basis.T).reshape(grad.shape)


def _key(layer: str) -> str:
    return layer.replace(".", "__")
