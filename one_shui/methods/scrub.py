"""SCRUB: a student (the model) pushed away from its teacher (the original) on the forget set and kept
close to it on the retain set. A full-data reference row: it reads the whole D_f and D_r."""

from __future__ import annotations

import copy

from ..errors import at_least, positive
from ..metrics.utility import task_loss
from .base import Batch, UnlearningMethod
from .distillation import cosine_sgd, distillation_kl, train_epoch


class SCRUB(UnlearningMethod):
    """SCRUB (Kurmanji et al., 2023) as published for 1-SHUI: ``epochs`` of SGD (``lr``, ``momentum``,
    ``weight_decay``) with a cosine schedule stepped per epoch. An epoch among the first
    ``max_step_epochs`` ("msteps") starts with max-steps over D_f (minimise -KL(teacher || student), the
    gradient norm clipped at ``max_grad_norm``); every epoch then makes min-steps over D_r (``kl_weight``
    * KL + ``task_weight`` * task loss). The KL is over a softmax of all outputs at ``temperature``
    (:func:`~one_shui.methods.distillation.distillation_kl`), also for attributes. D_f and D_r come in
    shuffled batches of ``unlearning_batch_size``, with the training transform when ``augment``.

    The defaults are the paper's CelebA-HQ N = 20 setting. Not a 1-SHUI method: ``forget`` reads the
    full forget and retain sets (see :attr:`reads`).
    """

    reads = ("support", "forget", "retain")
    strength_option = "lr"

    def __init__(
        self,
        pretrain_ckpt: str | None = None,
        *,
        epochs: int = 10,
        max_step_epochs: int = 5,
        lr: float = 1e-2,
        unlearning_batch_size: int = 32,
        augment: bool = True,
        temperature: float = 4.0,
        kl_weight: float = 0.001,
        task_weight: float = 0.99,
        max_grad_norm: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        **kwargs,
    ):
        where = "model.init_args"
        at_least(where, 0, epochs=epochs, max_step_epochs=max_step_epochs, lr=lr, kl_weight=kl_weight)
        at_least(where, 0, task_weight=task_weight, momentum=momentum, weight_decay=weight_decay)
        at_least(where, 1, unlearning_batch_size=unlearning_batch_size)
        positive(where, temperature=temperature, max_grad_norm=max_grad_norm)
        super().__init__(pretrain_ckpt, **kwargs)

    def forget(self, support: Batch) -> None:
        hp, task = self.hparams, self.model.hparams.task
        teacher = copy.deepcopy(self.model.network).eval().requires_grad_(False)
        student = self.model.network.train()
        optimizer, schedule = cosine_sgd(student.parameters(), {**hp, "lr": self.at_strength(hp.lr)})
        data = self.trainer.datamodule

        def away(batch):  # max-step on the forget set
            images = batch[0]
            return -distillation_kl(student(images), teacher(images), hp.temperature)

        def close(batch):  # min-step on the retain set
            images, _, targets = batch
            logits = student(images)
            divergence = distillation_kl(logits, teacher(images), hp.temperature)
            return hp.kl_weight * divergence + hp.task_weight * task_loss(task, logits, targets)

        def loader(pool: str):
            return data.loader(
                pool, train=True, batch_size=hp.unlearning_batch_size, shuffle=True, augment=hp.augment
            )

        for epoch in range(hp.epochs):
            if epoch < hp.max_step_epochs:
                train_epoch(away, loader("forget"), optimizer, self.device, hp.max_grad_norm)
            train_epoch(close, loader("retain"), optimizer, self.device)
            schedule.step()
        student.eval()
