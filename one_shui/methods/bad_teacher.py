"""Bad Teacher: the student (the model) distils from the original on the retain set and from a randomly
initialised model on the forget set. A full-data reference row: it reads the whole D_f and D_r."""

from __future__ import annotations

import copy

import torch
from torch.utils.data import ConcatDataset, DataLoader

from ..errors import at_least, positive
from ..models.backbones import create_backbone
from .base import Batch, UnlearningMethod
from .distillation import distillation_kl, train_epoch


class BadTeacher(UnlearningMethod):
    """``epochs`` of SGD (``lr``) on shuffled D_r and D_f samples together: KL to the competent teacher
    (the original model) for retain samples, to an incompetent one (random weights drawn from
    ``teacher_seed``) for forget samples, with temperature ``temperature``.

    Not a 1-SHUI method: ``forget`` reads the full forget and retain sets (see :attr:`reads`).
    """

    reads = ("support", "forget", "retain")

    def __init__(
        self,
        pretrain_ckpt: str | None = None,
        *,
        epochs: int = 5,
        lr: float = 1e-4,
        temperature: float = 1.0,
        teacher_seed: int = 0,
        **kwargs,
    ):
        at_least("model.init_args", 0, epochs=epochs, lr=lr)
        positive("model.init_args", temperature=temperature)
        super().__init__(pretrain_ckpt, **kwargs)

    def _incompetent_teacher(self) -> torch.nn.Module:
        hp = self.model.hparams
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.hparams.teacher_seed)
            model = create_backbone(hp.backbone, hp.num_classes, pretrained=False, image_size=hp.image_size)
        return model.to(self.device).eval().requires_grad_(False)

    def forget(self, support: Batch) -> None:
        hp, task = self.hparams, self.model.hparams.task
        competent = copy.deepcopy(self.model.network).eval().requires_grad_(False)
        incompetent = self._incompetent_teacher()
        forget_ids = set(self.identity_ids(list(self.split.forget)).tolist())
        student = self.model.network.train()
        optimizer = torch.optim.SGD(student.parameters(), lr=hp.lr)
        data = self.trainer.datamodule
        both = ConcatDataset([data.images("retain", train=True), data.images("forget", train=True)])
        loader = DataLoader(both, batch_size=data.hparams.batch_size, shuffle=True)

        def distil(batch):
            images, identities, _ = batch
            forgotten = torch.tensor([int(i) in forget_ids for i in identities], device=self.device)
            teacher = torch.where(forgotten[:, None], incompetent(images), competent(images))
            return distillation_kl(student(images), teacher, task, hp.temperature)

        for _ in range(hp.epochs):
            train_epoch(distil, loader, optimizer, self.device)
        student.eval()
