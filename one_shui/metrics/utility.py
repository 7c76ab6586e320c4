"""Utility of a model on a pool: its task loss and its metric (macro mAP or accuracy, x100, float32)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy, MultilabelAveragePrecision
from torchmetrics.functional.classification import multilabel_average_precision
from torchmetrics.utilities import dim_zero_cat

from ..data.check_set import CheckSet
from ..data.sources import Task


def metric_name(task: Task) -> str:
    """The name the metric is logged under: ``mAP`` (multilabel) or ``acc`` (classification)."""
    return {"multilabel": "mAP", "classification": "acc"}[task]


class PresentLabelsMAP(MultilabelAveragePrecision):
    """Macro mAP over the attributes with at least one positive sample in what was seen.

    torchmetrics scores an attribute without positives as AP 0 and averages it in, which pulls the
    mAP of small pools (the forget set, one person's images) down for no reason.
    """

    def __init__(self, num_labels: int):
        super().__init__(num_labels=num_labels, average=None)

    def compute(self) -> torch.Tensor:
        present = (dim_zero_cat(self.target) == 1).any(dim=0)
        return super().compute()[present].mean()


def utility_metric(task: Task, num_classes: int) -> Metric:
    """Macro mAP over attributes (multilabel) or top-1 accuracy (classification), x100.

    Update it with float32 logits and integer targets.
    """
    if task == "multilabel":
        return 100 * PresentLabelsMAP(num_classes)
    return 100 * MulticlassAccuracy(num_classes=num_classes, average="micro")


@torch.no_grad()
def batch_metric(task: Task, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The task's metric on one batch, in [0, 1], in float32 and without gradient: macro mAP over the
    attributes with a positive in the batch (0 when none has one), or top-1 accuracy."""
    logits = logits.float()
    if task == "classification":
        return (logits.argmax(dim=1) == targets).float().mean()
    present = (targets > 0.5).any(dim=0)
    if not present.any():
        return logits.new_zeros(())
    logits, targets = logits[:, present], targets[:, present].long()
    return multilabel_average_precision(logits, targets, num_labels=logits.shape[1], average="macro")


def task_loss(
    task: Task, logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """BCE with logits (multilabel) or cross-entropy (classification), in float32."""
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction=reduction)
    return F.cross_entropy(logits.float(), targets, reduction=reduction)


@torch.no_grad()
def check_score(
    network: torch.nn.Module, task: Task, num_classes: int, check: CheckSet, batch_size: int = 64
) -> float:
    """The utility of ``network`` on the check set (:func:`utility_metric`, in eval mode, on its device)."""
    device = next(network.parameters()).device
    metric, inputs = utility_metric(task, num_classes).to(device), check.inputs()
    training = network.training
    network.eval()
    for start in range(0, len(check), batch_size):
        logits = network(inputs[start : start + batch_size].to(device))
        metric.update(logits.float(), check.targets[start : start + batch_size].to(device).long())
    network.train(training)
    return float(metric.compute())
