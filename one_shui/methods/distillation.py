"""Knowledge distillation for the full-data reference methods (SCRUB, Bad Teacher): the KL divergence
between a teacher's and a student's outputs, and one epoch of SGD over a loader."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from ..data.sources import Task
from .classifier import NonFiniteLossError


def distillation_kl(student: torch.Tensor, teacher: torch.Tensor, task: Task, temperature: float = 1.0):
    """KL(teacher || student) of the outputs softened by ``temperature``, times ``temperature``^2 (so
    that the gradients keep their size at any temperature, as in Hinton et al.'s distillation), in
    float32, averaged over the batch: over the classes (classification) or over the joint distribution
    of the attributes as independent Bernoullis, i.e. the sum of the per-attribute KLs (multilabel)."""
    student, teacher = student.float() / temperature, teacher.float() / temperature
    if task == "multilabel":
        p = torch.sigmoid(teacher)
        kl = p * (F.logsigmoid(teacher) - F.logsigmoid(student))
        kl = kl + (1 - p) * (F.logsigmoid(-teacher) - F.logsigmoid(-student))
        divergence = kl.sum(1).mean()
    else:
        divergence = F.kl_div(
            F.log_softmax(student, 1), F.log_softmax(teacher, 1), log_target=True, reduction="batchmean"
        )
    return temperature**2 * divergence


def train_epoch(
    loss_of: Callable[[tuple[torch.Tensor, ...]], torch.Tensor],
    batches: Iterable,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
) -> float:
    """One pass of ``optimizer`` steps on ``loss_of(batch)``; the mean loss (it must stay finite)."""
    total, count = 0.0, 0
    for batch in batches:
        loss = loss_of(tuple(t.to(device) for t in batch))
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"the distillation loss is {float(loss)} after {count} steps; lower model.init_args.lr"
            )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total, count = total + float(loss.detach()), count + 1
    return total / max(count, 1)
