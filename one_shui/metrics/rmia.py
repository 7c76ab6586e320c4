"""RMIA, the low-cost robust membership inference attack (Zarifzadeh, Liu and Shokri, ICML 2024), offline.

A sample x is scored by how often its likelihood ratio beats those of a population z of non-members:

    ratio(x) = Pr(x | target) / Pr(x),   Pr(x) = ((1 + a) Pr(x | reference) + (1 - a)) / 2
    score(x) = share of z with ratio(x) / ratio(z) > gamma

Pr(x | model) is the probability the model gives to x's true label: its class (classification) or its
whole attribute vector, attributes as independent Bernoullis (multilabel). The reference model was
trained without the target data; ``a`` stands in for the reference models that were trained with it,
which the offline attack does not have. Members are the forget samples, non-members TEST, and the
population VAL. Reported: the AUC and the TPR at the lowest FPR that both the population and the
non-members resolve, max(1/|VAL|, 1/|TEST|).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score, roc_curve

from ..data.sources import Task

ROLES = ("forget", "test", "population")  # members, non-members, the population z


def true_label_probability(logits: torch.Tensor, targets: torch.Tensor, task: Task) -> torch.Tensor:
    """Pr(x | model) of each sample, in float64: of its class, or of its whole attribute vector."""
    logits = logits.double()
    if task == "multilabel":
        signs = 2 * targets.double() - 1  # log Pr(y_k) = logsigmoid(+logit) for 1, logsigmoid(-logit) for 0
        return F.logsigmoid(signs * logits).sum(1).exp()
    return logits.softmax(1).gather(1, targets.long().view(-1, 1)).squeeze(1)


@dataclass(frozen=True, eq=False)
class RMIAResult:
    """AUC in [0, 1]; TPR in % at ``low_fpr``; the ROC curve; the rule, for the record."""

    auc: float
    tpr_at_low_fpr: float
    low_fpr: float
    fpr: np.ndarray
    tpr: np.ndarray
    rule: str


def _probabilities(values, pool: str, model: str) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().double().numpy()
    p = np.asarray(values, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"rmia: the {model} probabilities of {pool} must be a non-empty 1-D array")
    if not (np.isfinite(p).all() and (p > 0).all() and (p <= 1).all()):
        raise ValueError(f"rmia: the {model} probabilities of {pool} must lie in (0, 1]")
    return p


def rmia_scores(
    target: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], offline_a: float, gamma: float
) -> dict[str, np.ndarray]:
    """score(x) of every forget and TEST sample (see the module docstring)."""
    log_ratio = {
        pool: np.log(target[pool]) - np.log(((1 + offline_a) * reference[pool] + (1 - offline_a)) / 2)
        for pool in ROLES
    }
    population = np.sort(log_ratio["population"])
    # ratio(x) / ratio(z) > gamma  <=>  log ratio(z) < log ratio(x) - log gamma
    return {
        pool: np.searchsorted(population, log_ratio[pool] - np.log(gamma), side="left") / population.size
        for pool in ("forget", "test")
    }


def rmia(
    target: Mapping[str, object], reference: Mapping[str, object], *, offline_a: float, gamma: float = 1.0
) -> RMIAResult:
    """The attack on the target model, given Pr(x | model) of the forget, test and population samples
    under the target and the reference model (mappings keyed by :data:`ROLES`)."""
    if not (0 <= offline_a <= 1 and gamma > 0):
        raise ValueError(f"rmia: offline_a must be in [0, 1] and gamma > 0 (got {offline_a}, {gamma})")
    target = {pool: _probabilities(target[pool], pool, "target") for pool in ROLES}
    reference = {pool: _probabilities(reference[pool], pool, "reference") for pool in ROLES}
    for pool in ROLES:
        if target[pool].size != reference[pool].size:
            raise ValueError(
                f"rmia: {pool} has {target[pool].size} target and {reference[pool].size} "
                "reference probabilities; they must be of the same samples"
            )
    scores = rmia_scores(target, reference, offline_a, gamma)
    labels = np.concatenate([np.ones(scores["forget"].size), np.zeros(scores["test"].size)])
    values = np.concatenate([scores["forget"], scores["test"]])
    fpr, tpr, _ = roc_curve(labels, values)
    low_fpr = max(1 / target["population"].size, 1 / scores["test"].size)
    rule = (
        f"offline RMIA, a = {offline_a}, gamma = {gamma}: {scores['forget'].size} forget samples (members), "
        f"{scores['test'].size} TEST (non-members), population {target['population'].size} VAL samples"
    )
    return RMIAResult(
        auc=float(roc_auc_score(labels, values)),
        tpr_at_low_fpr=100.0 * float(tpr[fpr <= low_fpr].max()),
        low_fpr=low_fpr,
        fpr=fpr,
        tpr=tpr,
        rule=rule,
    )
