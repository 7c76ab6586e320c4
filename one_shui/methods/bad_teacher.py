"""Bad Teacher: the student (the model) distils from the original on the retain set and from a randomly
initialised model on the forget set. A full-data reference row: it reads the whole D_f and D_r."""

from __future__ import annotations

import copy

import torch
from torch.utils.data import ConcatDataset, DataLoader

from ..errors import at_least, positive
from ..models.backbones import create_backbone
from .base import Batch, UnlearningMethod
from .distillation import cosine_sgd, distillation_kl, train_epoch


class BadTeacher(UnlearningMethod):
    """Bad Teacher (Chundawat et al., 2023) as published for 1-SHUI: ``epochs`` of SGD (``lr``,
    ``momentum``, ``weight_decay``, a cosine schedule stepped per epoch) on D_r and D_f shuffled together
    in batches of ``unlearning_batch_size`` (the training transform when ``augment``, else the test one).
    Each sample's teacher is the competent one (the original model) for a retain sample and the
    incompetent one (random weights drawn from ``teacher_seed``) for a forget sample; the loss is the KL
    over a softmax of all outputs at ``temperature`` (:func:`~one_shui.methods.distillation.distillation_kl`).

    The defaults are the paper's CelebA-HQ N = 20 setting. Not a 1-SHUI method: ``forget`` reads the
    full forget and retain sets (see :attr:`reads`).
    """

    reads = ("support", "forget", "retain")
    strength_option = "lr"

    def __init__(
        self,
        pretrain_ckpt: str | None = None,
        *,
        epochs: int = 5,
        lr: float = 1e-4,
        unlearning_batch_size: int = 32,
        augment: bool = False,
        temperature: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        teacher_seed: int = 0,
        **kwargs,
    ):
        where = "model.init_args"
        at_least(where, 0, epochs=epochs, lr=lr, momentum=momentum, weight_decay=weight_decay)
        at_least(where, 1, unlearning_batch_size=unlearning_batch_size)
        positive(where, temperature=temperature)
        super().__init__(pretrain_ckpt, **kwargs)

    def _incompetent_teacher(self) -> torch.nn.Module:
        hp = self.model.hparams
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.hparams.teacher_seed)
            model = create_backbone(hp.backbone, hp.num_classes, pretrained=False, image_size=hp.image_size)
        return model.to(self.device).eval().requires_grad_(False)

    def forget(self, support: Batch) -> None:
        hp = self.hparams
        competent = copy.deepcopy(self.model.network).eval().requires_grad_(False)
        incompetent = self._incompetent_teacher()
        forget_ids = self.identity_ids(list(self.split.forget)).to(self.device)
        student = self.model.network.train()
        optimizer, schedule = cosine_sgd(student.parameters(), {**hp, "lr": self.at_strength(hp.lr)})
        data = self.trainer.datamodule
        both = ConcatDataset([data.images(pool, train=hp.augment) for pool in ("retain", "forget")])
        loader = DataLoader(
            both, batch_size=hp.unlearning_batch_size, shuffle=True, num_workers=data.hparams.num_workers
        )

        def distil(batch):
            images, identities, _ = batch
            forgotten = torch.isin(identities, forget_ids)[:, None]
            teacher = torch.where(forgotten, incompetent(images), competent(images))
            return distillation_kl(student(images), teacher, hp.temperature)

        for _ in range(hp.epochs):
            train_epoch(distil, loader, optimizer, self.device)
            schedule.step()
        student.eval()
