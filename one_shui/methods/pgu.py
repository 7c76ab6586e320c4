"""PGU, projected gradient unlearning: descend a reverse loss on the support set with each layer's
gradient kept off the input directions that the training data (less the support set) relies on."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.sources import Task
from ..errors import at_least, at_most
from .base import Batch, MethodSetupError, UnlearningMethod, sgd_step_


def layer_inputs(layer: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The rows a layer's weight multiplies: features for a Linear; for a Conv2d the patches it
    actually sees (its own kernel, stride, padding and dilation; a ViT's patch embedding reads
    non-overlapping patches, not a stride-1 unfold)."""
    if isinstance(layer, nn.Conv2d):
        patches = F.unfold(inputs, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])
    return inputs.reshape(-1, inputs.shape[-1])


def reverse_loss(task: Task, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss whose descent unlearns each sample's labels: push down the probability of its positive
    attributes (multilabel; the published code indexed other entries than the positive ones) or of its
    class (classification)."""
    logits = logits.float()
    if task == "multilabel":
        positive = targets > 0.5
        return -(F.logsigmoid(-logits) * positive).sum() / positive.sum().clamp(min=1)
    true = logits.softmax(dim=1).gather(1, targets[:, None]).squeeze(1)
    return -torch.log1p(-true.clamp(max=1 - 1e-6)).mean()


def protected_basis(covariance: torch.Tensor, gamma: float) -> torch.Tensor:
    """The top eigenvectors of ``covariance`` (columns) that hold a share ``gamma`` of its spectrum."""
    values, vectors = torch.linalg.eigh(covariance.double())
    values, vectors = values.flip(0).clamp(min=0), vectors.flip(1)
    if values.sum() <= 0:
        return vectors[:, :0].float()
    share = values.cumsum(0) / values.sum()
    keep = int((share < gamma).sum()) + 1
    return vectors[:, :keep].float()


class PGU(UnlearningMethod):
    """``fit``: per Linear and Conv2d layer of the backbone, the input second moment over the training
    data (one pass; kept in the prepared checkpoint). ``forget``: the same over the support set; the
    training moment minus the support's gives each layer's protected directions (a share ``gamma`` of
    the spectrum); ``epochs`` SGD steps (``lr``) on the reverse loss over the support set, with each
    weight's gradient projected off its protected directions. Only those weights change.
    """

    train_pool = "train"  # fit: one pass over the training data

    def __init__(
        self,
        pretrain_ckpt: str | None = None,
        *,
        lr: float = 0.1,
        epochs: int = 5,
        gamma: float = 0.9,
        **kwargs,
    ):
        at_least("model.init_args", 0, lr=lr, epochs=epochs, gamma=gamma)
        at_most("model.init_args", 1, gamma=gamma)
        super().__init__(pretrain_ckpt, **kwargs)
        self.automatic_optimization = False  # fit measures; it never updates the model
        self.layers = {
            name: layer
            for name, layer in self.model.network.named_modules()
            if isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d) and layer.groups == 1)
        }
        self.moments = nn.Module()  # per layer: the sum of x x^T over the training inputs, and their count
        for name, layer in self.layers.items():
            size = layer.weight[0].numel()
            self.moments.register_buffer(_key(name), torch.zeros(size, size))
            self.moments.register_buffer(_key(name) + "_rows", torch.zeros((), dtype=torch.long))
        self._epoch: dict[str, list] = {}

    @property
    def updated_parameters(self) -> tuple[str, ...]:
        return tuple(f"{name}.weight" for name in self.layers)

    @torch.no_grad()
    def input_moments(self, images: torch.Tensor) -> dict[str, list]:
        """Per layer, [sum of x x^T, number of rows] over the inputs it receives for ``images``."""
        moments = {}

        def record(name):
            def hook(layer, args):
                rows = layer_inputs(layer, args[0].float())
                moments[name] = [rows.T @ rows, rows.shape[0]]

            return hook

        handles = [layer.register_forward_pre_hook(record(name)) for name, layer in self.layers.items()]
        try:
            self.model(images)
        finally:
            for handle in handles:
                handle.remove()
        return moments

    # --- fit: the training data's input moments --------------------------------------------------

    def on_train_epoch_start(self) -> None:
        self.model.eval()
        self._epoch = {}

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        for name, (moment, rows) in self.input_moments(batch[0]).items():
            total = self._epoch.setdefault(name, [torch.zeros_like(moment), 0])
            total[0] += moment
            total[1] += rows

    def on_train_epoch_end(self) -> None:
        # Summed over every process before the epoch's checkpoint is written.
        strategy = self.trainer.strategy
        for name, (moment, rows) in self._epoch.items():
            getattr(self.moments, _key(name)).add_(strategy.reduce(moment, reduce_op="sum"))
            count = strategy.reduce(torch.tensor(rows, device=self.device), reduce_op="sum")
            getattr(self.moments, _key(name) + "_rows").add_(int(count))

    def configure_optimizers(self) -> None:
        return None

    # --- forget: projected descent on the reverse loss --------------------------------------------

    def forget(self, support: Batch) -> None:
        images, _, targets = support
        self.model.eval()
        bases = self._protected_bases(images)
        weights = [self.layers[name].weight for name in self.layers]
        for _ in range(self.hparams.epochs):
            loss = reverse_loss(self.model.hparams.task, self.model(images), targets)
            grads = torch.autograd.grad(loss, weights)
            sgd_step_(
                weights,
                [_project_off(g, bases[name]) for name, g in zip(self.layers, grads, strict=True)],
                self.hparams.lr,
            )

    def _protected_bases(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        support = self.input_moments(images)
        bases = {}
        for name in self.layers:
            rows = int(getattr(self.moments, _key(name) + "_rows"))
            if rows == 0:
                raise MethodSetupError(
                    "PGU has no input statistics of the training data: run its `one-shui fit` first and "
                    "give the checkpoints/last.ckpt it writes"
                )
            train = getattr(self.moments, _key(name)) / rows
            moment, count = support[name]
            bases[name] = protected_basis(train - moment / count, self.hparams.gamma)
        return bases


def _project_off(grad: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """A weight's gradient with its rows' components along ``basis`` (orthonormal columns) removed."""
    flat = grad.reshape(grad.shape[0], -1)
    return (flat - flat @ basis @ basis.T).reshape(grad.shape)


def _key(layer: str) -> str:
    return layer.replace(".", "__")
