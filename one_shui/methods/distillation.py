"""Knowledge distillation for the full-data reference methods (SCRUB, Bad Teacher): the KL divergence
between a teacher's and a student's outputs, and one epoch of SGD over a loader."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from ..metrics.utility import Task


def distillation_kl(student: torch.Tensor, teacher: torch.Tensor, task: Task, temperature: float = 1.0):
    """KL(teacher || student) of the outputs softened by ``temperature``, in float32: over the classes
    (classification) or per attribute as a Bernoulli, averaged over the attributes (multilabel)."""
    student, teacher = student.float() / temperature, teacher.float() / temperature
    if task == "multilabel":
        p = torch.sigmoid(teacher)
        kl = p * (F.logsigmoid(teacher) - F.logsigmoid(student))
        kl = kl + (1 - p) * (F.logsigmoid(-teacher) - F.logsigmoid(-student))
        return kl.mean()
    return F.kl_div(
        F.log_softmax(student, 1), F.log_softmax(teacher, 1), log_target=True, reduction="batchmean"
    )


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
            raise FloatingPointError(f"non-finite distillation loss after {count} steps")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total, count = total + float(loss), count + 1
    return total / max(count, 1)
