"""MetaUnlearn: a meta-learned unlearning loss, applied with one gradient step on the support images."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.data import DataLoader

from ..data.datamodule import RequestBatch
from ..errors import at_least, at_most
from ..metrics.utility import batch_metric, task_loss
from ..models.meta_loss import INPUT_PARTS, MetaLoss
from .base import Batch, MethodSetupError, UnlearningMethod, sgd_step_

DISTANCES = {"smooth_l1": F.smooth_l1_loss, "mse": F.mse_loss, "l1": F.l1_loss}
FROZEN_IN_PUBLISHED_CODE = ("cls_token", "pos_embed")


class LogitsAndFeatures(nn.Module):
    """The backbone's logits and pooled feature (ViT: CLS token after the final norm) in one call."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.backbone.forward_head(self.backbone.forward_features(images), pre_logits=True)
        return self.backbone.get_classifier()(pooled), pooled


class MetaUnlearn(UnlearningMethod):
    """Meta-trains h_phi over simulated requests (``fit``), then forgets with theta - eta * grad M.

    Args:
        meta_lr: eta, the step size of the unlearning step.
        lr: AdamW (amsgrad, no weight decay) learning rate of h_phi, cosine over the epochs.
        unlearning_batch_size: the simulated forget set is served in shuffled batches of this size, each
            paired with the next batch of a fresh shuffled pass over VAL (the paper's 64).
        parts: the meta-loss input parts that are on (see :data:`INPUT_PARTS`).
        objective: ``full`` (both terms), ``original`` (against L_v(theta)), ``unlearned`` (against
            L_v(theta_u)) or ``rev`` (the published variant: against L_v(theta_u), plus L_v(theta_u),
            with its gradient, against L_v(theta)).
        distance: ``smooth_l1``, ``mse`` or ``l1``.
        accuracy_scaling: scale each task loss by (1 - the task's metric of that model on that batch):
            macro mAP (multilabel) or top-1 accuracy (classification).
        update: ``all`` parameters (default), ``published`` (all but the ViT's class token and
            position embedding, as the published code did) or ``last_blocks``.
        last_blocks: how many final ViT blocks ``update: last_blocks`` changes (with the final norm
            and the head).
        forget_steps: unlearning steps taken when serving a request (the paper's 1), each from the
            weights the previous one left.
    """

    def __init__(
        self,
        pretrain_ckpt: str | None = None,
        *,
        meta_lr: float = 0.1,
        lr: float = 1e-4,
        unlearning_batch_size: int = 64,
        parts: Sequence[str] = INPUT_PARTS,
        objective: Literal["full", "original", "unlearned", "rev"] = "full",
        distance: Literal["smooth_l1", "mse", "l1"] = "smooth_l1",
        accuracy_scaling: bool = True,
        update: Literal["all", "published", "last_blocks"] = "all",
        last_blocks: int = 2,
        forget_steps: int = 1,
        identity_dim: int = 64,
        hidden: int = 512,
        residual_blocks: int = 0,
        dropout: float = 0.5,
        **kwargs,
    ):
        at_least(
            "model.init_args", 0, meta_lr=meta_lr, lr=lr, residual_blocks=residual_blocks, dropout=dropout
        )
        at_least(
            "model.init_args",
            1,
            unlearning_batch_size=unlearning_batch_size,
            last_blocks=last_blocks,
            forget_steps=forget_steps,
            identity_dim=identity_dim,
            hidden=hidden,
        )
        at_most("model.init_args", 1, dropout=dropout)
        super().__init__(pretrain_ckpt, **kwargs)
        self.automatic_optimization = False
        self.model.requires_grad_(False)  # the original weights never change during meta-training
        backbone = self.model.network
        self.meta_loss = MetaLoss(
            self.model.hparams.num_classes,
            backbone.num_features,
            len(self.split.train),
            parts=parts,
            task=self.model.hparams.task,
            identity_dim=identity_dim,
            hidden=hidden,
            residual_blocks=residual_blocks,
            dropout=dropout,
        )
        self.updated = self._updated_names(update, last_blocks)
        position = {identity: k for k, identity in enumerate(self.split.train)}
        index = torch.tensor([position.get(identity, -1) for identity in self.identities])
        self.register_buffer("train_index", index, persistent=False)  # dataset id -> TRAIN id
        self.reads_targets = "targets" in self.meta_loss.parts  # the only input part that reads them
        self._validation: DataLoader | None = None

    train_pool = "simulated"  # meta-training reads simulated requests (reload the loaders every epoch)
    strength_option = "meta_lr"  # the serving step size

    @property
    def updated_parameters(self) -> tuple[str, ...]:
        return self.updated

    def _updated_names(self, update: str, last_blocks: int) -> tuple[str, ...]:
        names = [name for name, _ in self.model.network.named_parameters()]
        if update == "published":
            return tuple(n for n in names if n not in FROZEN_IN_PUBLISHED_CODE)
        if update == "all":
            return tuple(names)
        blocks = getattr(self.model.network, "blocks", None)
        if blocks is None or not 1 <= last_blocks <= len(blocks):
            raise MethodSetupError(
                f"update: last_blocks needs a ViT with at least {last_blocks} blocks (backbone "
                f"{self.backbone!r} has {len(blocks or ())}): set update to all or published, or "
                "last_blocks to fewer"
            )
        last = tuple(f"blocks.{i}." for i in range(len(blocks) - last_blocks, len(blocks)))
        return tuple(n for n in names if n.startswith((*last, "norm.", "fc_norm.", "head.")))

    # --- the functional model --------------------------------------------------------------------

    def _leaves(self) -> dict[str, torch.Tensor]:
        """The updated parameters as fresh leaves on the original weights (no copies)."""
        weights = dict(self.model.network.named_parameters())
        return {name: weights[name].detach().requires_grad_() for name in self.updated}

    def _forward(self, params: dict[str, torch.Tensor], images: torch.Tensor):
        wrapper = LogitsAndFeatures(self.model.network)
        return functional_call(wrapper, {f"backbone.{k}": v for k, v in params.items()}, (images,))

    def _unlearning_step(self, params: dict[str, torch.Tensor], support: Batch, create_graph: bool):
        """theta_u = theta - eta * grad of M over the support samples, in float32 under any precision."""
        with torch.autocast(self.device.type, enabled=False):
            meta_loss = self._meta_loss_on(self._forward(params, support[0]), support)
            grads = gradients(meta_loss, list(params.values()), create_graph=create_graph)
        eta = self.hparams.meta_lr
        return {name: p - eta * g for (name, p), g in zip(params.items(), grads, strict=True)}

    def _meta_loss_on(self, outputs: tuple[torch.Tensor, torch.Tensor], support: Batch) -> torch.Tensor:
        """M over the support samples, from the model's (logits, features) on them."""
        _, identities, targets = support
        return self.meta_loss(*outputs, targets, self.train_index[identities])

    def _task_loss(self, params: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        images, _, targets = batch
        logits, _ = self._forward(params, images)
        loss = task_loss(self.model.hparams.task, logits, targets)
        if self.hparams.accuracy_scaling:
            loss = loss * (1 - batch_metric(self.model.hparams.task, logits, targets))
        return loss

    # --- meta-training --------------------------------------------------------------------------

    def meta_objective(self, request: RequestBatch, validation: Iterator[Batch]) -> torch.Tensor:
        """The objective over the simulated forget set, served in shuffled batches, each paired with the next
        batch of ``validation``: the mean over the pairs, weighted by the forget batches' sizes."""
        params = self._leaves()
        with sdpa_kernel(SDPBackend.MATH):  # double backward through attention needs the math kernel
            unlearned = self._unlearning_step(params, request.support, create_graph=True)
            size = len(request.forget[0])
            order = torch.randperm(size, device=request.forget[0].device)
            total = 0
            for rows in order.split(self.hparams.unlearning_batch_size):
                forget = tuple(t[rows] for t in request.forget)
                pair = tuple(t.to(self.device) for t in next(validation))
                total = total + len(rows) * self._pair_objective(params, unlearned, forget, pair)
        return total / size

    def _pair_objective(self, params, unlearned, forget: Batch, validation: Batch) -> torch.Tensor:
        """The chosen terms s(L_f(theta_u), L_v(.)) on one forget batch and its VAL batch, the validation
        side detached (``rev`` adds s(L_v(theta_u), L_v(theta)) with the gradient through L_v(theta_u))."""
        loss_f = self._task_loss(unlearned, forget)
        with torch.no_grad():
            loss_v = self._task_loss(params, validation)
        objective = self.hparams.objective
        with torch.set_grad_enabled(objective == "rev"):
            loss_vu = self._task_loss(unlearned, validation)
        terms = {
            "full": [(loss_f, loss_v), (loss_f, loss_vu)],
            "original": [(loss_f, loss_v)],
            "unlearned": [(loss_f, loss_vu)],
            "rev": [(loss_f, loss_vu), (loss_vu, loss_v)],
        }[objective]
        distance = DISTANCES[self.hparams.distance]
        return sum(distance(a, b.detach()) for a, b in terms)

    def on_train_start(self) -> None:
        # Built once; every simulated request starts a fresh shuffled pass over it.
        self._validation = self.trainer.datamodule.loader(
            "val", batch_size=self.hparams.unlearning_batch_size, shuffle=True
        )

    def on_train_epoch_start(self) -> None:
        self.model.eval()  # the original model is a fixed function of its weights

    def training_step(self, request: RequestBatch, batch_idx: int) -> torch.Tensor:
        objective = self.meta_objective(request, _endless(self._validation))
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(objective)
        optimizer.step()
        self.log("meta/objective", objective, prog_bar=True, batch_size=1)
        return objective

    def on_train_epoch_end(self) -> None:
        self.lr_schedulers().step()

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(
            self.meta_loss.parameters(), lr=self.hparams.lr, weight_decay=0, amsgrad=True
        )
        epochs = max(1, self.trainer.max_epochs or 1)
        return [optimizer], [torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)]

    # --- serving a request ------------------------------------------------------------------------

    def forget(self, support: Batch) -> None:
        """``forget_steps`` steps theta - eta * grad M over the real support images, with h_phi frozen.

        The same step as the inner step of meta-training, taken on the module's own weights: no graph
        to keep, so no functional call (a forget request then costs about one forward and backward).
        """
        self.meta_loss.eval()
        self.model.eval()
        weights = dict(self.model.network.named_parameters())
        updated = [weights[name] for name in self.updated]
        try:
            for weight in updated:
                weight.requires_grad_(True)
            for _ in range(self.hparams.forget_steps):
                with torch.autocast(self.device.type, enabled=False):
                    loss = self._meta_loss_on(LogitsAndFeatures(self.model.network)(support[0]), support)
                    grads = gradients(loss, updated)
                sgd_step_(updated, grads, self.at_strength(self.hparams.meta_lr))
        finally:
            for weight in updated:
                weight.requires_grad_(False)  # the original weights are never trained


def gradients(meta_loss: torch.Tensor, weights: list[torch.Tensor], create_graph: bool = False):
    """The gradients of M with respect to ``weights``, zero for a weight that M does not read: with h_phi's
    ``outputs`` part off (an ablation), M reads the pooled feature, never the head."""
    return torch.autograd.grad(
        meta_loss, weights, create_graph=create_graph, allow_unused=True, materialize_grads=True
    )


def _endless(loader: DataLoader) -> Iterator:
    """Batches of ``loader``, pass after pass (each pass shuffled anew when the loader shuffles)."""
    while True:
        yield from loader
