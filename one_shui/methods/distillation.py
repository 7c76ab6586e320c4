"""Knowledge distillation for the full-data reference methods (SCRUB, Bad Teacher): the KL divergence
between a teacher's and a student's outputs, their SGD with a per-epoch cosine schedule, and one epoch
of steps over a loader."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F

from .classifier import NonFiniteLossError


def distillation_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) between the softmaxes over ALL outputs softened by ``temperature``, summed
    over the batch, times ``temperature``^2, divided by the batch size; in float32.

    As published, attribute (multilabel) outputs are treated as one categorical distribution too."""
    log_q = F.log_softmax(student.float() / temperature, dim=1)
    log_p = F.log_softmax(teacher.float() / temperature, dim=1)
    kl = F.kl_div(log_q, log_p, log_target=True, reduction="sum")
    return kl * temperature**2 / student.shape[0]


def cosine_sgd(
    parameters: Iterable[torch.nn.Parameter], options: Mapping[str, float]
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.CosineAnnealingLR]:
    """SGD with the ``lr``, ``momentum`` and ``weight_decay`` of ``options`` (a method's hyperparameters),
    and a cosine schedule over its ``epochs``, stepped once per epoch: epoch e (from 0) runs at
    ``lr`` * (1 + cos(pi * e / epochs)) / 2."""
    optimizer = torch.optim.SGD(
        parameters, lr=options["lr"], momentum=options["momentum"], weight_decay=options["weight_decay"]
    )
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(options["epochs"], 1))


def train_epoch(
    loss_of: Callable[[tuple[torch.Tensor, ...]], torch.Tensor],
    batches: Iterable,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    max_grad_norm: float | None = None,
) -> float:
    """One pass of ``optimizer`` steps on ``loss_of(batch)``, the gradients' total norm clipped at
    ``max_grad_norm`` when given; the mean loss (it must stay finite)."""
    total, count = 0.0, 0
    for batch in batches:
        loss = loss_of(tuple(t.to(device) for t in batch))
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"the distillation loss is {loss.item()} after {count} steps; lower model.init_args.lr"
            )
        optimizer.zero_grad()
        loss.backward()
        if max_grad_norm is not None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        total, count = total + float(loss.detach()), count + 1
    return total / max(count, 1)
