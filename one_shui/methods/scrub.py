"""SCRUB: a student (the model) pushed away from its teacher (the original) on the forget set and kept
close to it on the retain set. A full-data reference row: it reads the whole D_f and D_r."""

from __future__ import annotations

import copy

import torch

from ..errors import at_least, positive
from ..metrics.utility import task_loss
from .base import Batch, UnlearningMethod
from .distillation import distillation_kl, train_epoch


class SCRUB(UnlearningMethod):
    """Each epoch, max-steps over D_f (minimise -KL(teacher || student)) while the epoch is among the
    first ``max_step_epochs`` (SCRUB's "msteps": max-steps in every epoch diverge), then min-steps over D_r
    (``kl_weight`` * KL + ``task_weight`` * task loss), with temperature ``temperature``; SGD.

    Not a 1-SHUI method: ``forget`` reads the full forget and retain sets (see :attr:`reads`).
    """

    reads = ("support", "forget", "retain")

    def __init__(
        self,
        pretrain_ckpt: str | None = None,
        *,
        epochs: int = 10,
        max_step_epochs: int = 2,
        temperature: float = 4.0,
        kl_weight: float = 0.001,
        task_weight: float = 0.99,
        lr: float = 5e-4,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        **kwargs,
    ):
        at_least("model.init_args", 0, epochs=epochs, max_step_epochs=max_step_epochs, kl_weight=kl_weight)
        at_least(
            "model.init_args", 0, task_weight=task_weight, lr=lr, momentum=momentum, weight_decay=weight_decay
        )
        positive("model.init_args", temperature=temperature)
        super().__init__(pretrain_ckpt, **kwargs)

    def forget(self, support: Batch) -> None:
        hp, task = self.hparams, self.model.hparams.task
        teacher = copy.deepcopy(self.model.network).eval().requires_grad_(False)
        student = self.model.network.train()
        optimizer = torch.optim.SGD(
            student.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
        )
        data = self.trainer.datamodule

        def kl(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = student(images)
            return logits, distillation_kl(logits, teacher(images), task, hp.temperature)

        def away(batch):  # max-step on the forget set
            return -kl(batch[0])[1]

        def close(batch):  # min-step on the retain set
            logits, divergence = kl(batch[0])
            return hp.kl_weight * divergence + hp.task_weight * task_loss(task, logits, batch[2])

        for epoch in range(hp.epochs):
            if epoch < hp.max_step_epochs:
                train_epoch(away, data.loader("forget", train=True), optimizer, self.device)
            train_epoch(close, data.loader("retain", train=True), optimizer, self.device)
        student.eval()
