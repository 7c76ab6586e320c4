"""The shared evaluation of every row of a table: utility on retain / forget / test, the forget
utility of each identity, the loss-based MIA and, given the retrained model's utilities, ToW. It also
keeps each forget, TEST and VAL sample's probability of its true label, which RMIA compares across
models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import lightning as L
import numpy as np
import torch

from ..data.sources import Task
from .mia import MIAResult, loss_mia, published_loss_mia
from .rmia import true_label_probability
from .tow import UTILITY_POOLS, tug_of_war
from .utility import metric_name, task_loss, utility_metric

EVAL_POOLS = (*UTILITY_POOLS, "val")  # the MIA trains on retain vs VAL
POOL_OF_ROLE = {"forget": "forget", "test": "test", "population": "val"}  # RMIA's roles: our pools
ATTACK_POOLS = tuple(POOL_OF_ROLE.values())  # the pools RMIA reads


class Evaluation:
    """Collects a model's outputs on the evaluation pools and turns them into the protocol's metrics.

    Outputs are kept in float32 on the CPU; one process sees every sample (evaluate on one device).

    Args:
        mia: ``balanced`` (our attack, :func:`loss_mia`) or ``published`` (:func:`published_loss_mia`).
        precision: ``float32`` metrics, or ``bf16`` as published: the outputs rounded to bfloat16 and the
            probabilities that mAP ranks taken in bfloat16 (their ties kept).
    """

    def __init__(
        self,
        task: Task,
        num_classes: int,
        mia: Literal["balanced", "published"] = "balanced",
        precision: Literal["float32", "bf16"] = "float32",
    ):
        self.task, self.num_classes, self.metric = task, num_classes, metric_name(task)
        self.mia_kind, self.precision = mia, precision
        self.outputs: dict[str, list[tuple[torch.Tensor, ...]]] = {pool: [] for pool in EVAL_POOLS}
        self.mia: MIAResult | None = None
        self.probabilities: dict[str, np.ndarray] = {}  # RMIA's pools -> Pr(true label), after compute
        self.request: set[int] = (
            set()
        )  # the identity ids of the request served, when the forget pool has more

    def update(
        self, pool: str, logits: torch.Tensor, targets: torch.Tensor, identities: torch.Tensor
    ) -> None:
        logits = logits.detach()
        if self.precision == "bf16":
            logits = logits.to(torch.bfloat16)
        self.outputs[pool].append((logits.float().cpu(), targets.cpu(), identities.cpu()))

    def reset(self) -> None:
        for outputs in self.outputs.values():
            outputs.clear()

    def compute(
        self, retrained: Mapping[str, float] | None = None, seed: int = 0, names: Sequence[str] = ()
    ) -> dict[str, float]:
        """``<pool>/<metric>`` for retain, forget and test, ``forget/<metric>/<identity>`` (the person as
        the dataset names them, ``names[id]``, given the split's identities; else the id), the forget
        utility of the request served (``request/<metric>``: :attr:`request`, when set), the MIA and,
        with the retrained model's utilities (keyed by pool), ``tow``; RMIA's probabilities are kept in
        :attr:`probabilities`."""
        pools = {pool: self._cat(pool) for pool in EVAL_POOLS}
        utilities = self._utilities(pools)
        results = {f"{pool}/{self.metric}": value for pool, value in utilities.items()}
        logits, targets, identities = pools["forget"]
        for identity in identities.unique().tolist():
            mine = identities == identity
            name = names[identity] if names else identity
            results[f"forget/{self.metric}/{name}"] = self._utility(logits[mine], targets[mine])
        if self.request:
            mine = torch.isin(identities, torch.tensor(sorted(self.request)))
            results[f"request/{self.metric}"] = self._utility(logits[mine], targets[mine])
        losses = [self._losses(*pools[pool][:2]) for pool in ("retain", "val", "forget", "test")]
        self.mia = (
            loss_mia(*losses, seed=seed) if self.mia_kind == "balanced" else published_loss_mia(*losses)
        )
        results["mia_auc"], results["mia_forget_non_member"] = self.mia.auc, self.mia.forget_non_member
        self.probabilities = self.attack_probabilities(pools)
        if retrained is not None:
            results["tow"] = tug_of_war(utilities, retrained)
        return results

    def attack_probabilities(
        self, pools: Mapping[str, tuple[torch.Tensor, ...]] | None = None
    ) -> dict[str, np.ndarray]:
        """Each sample's probability of its true label on RMIA's pools, by role (``pools``: the outputs,
        when already gathered); all that an RMIA reference's test keeps."""
        pools = pools or {pool: self._cat(pool) for pool in ATTACK_POOLS}
        return {
            name: true_label_probability(*pools[pool][:2], self.task).numpy()
            for name, pool in POOL_OF_ROLE.items()
        }

    def utilities(self) -> dict[str, float]:
        """The metric on retain, forget and test, keyed by pool."""
        return self._utilities({pool: self._cat(pool) for pool in UTILITY_POOLS})

    def _utilities(self, pools: Mapping[str, tuple[torch.Tensor, ...]]) -> dict[str, float]:
        return {pool: self._utility(*pools[pool][:2]) for pool in UTILITY_POOLS}

    def log(
        self,
        module: L.LightningModule,
        retrained: Mapping[str, float] | None = None,
        names: Sequence[str] = (),
    ) -> dict[str, float]:
        """Compute (people by their ``names``), log every number through ``module`` (the MIA's selection
        rule as a hyperparameter of every logger), start afresh and return the results."""
        results = self.compute(retrained, names=names)
        module.log_dict(results, add_dataloader_idx=False)
        for logger in module.loggers:
            logger.log_hyperparams({"mia_selection_rule": self.mia.selection_rule})
        self.reset()
        return results

    def _cat(self, pool: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.outputs[pool]:
            raise ValueError(f"no outputs on the {pool} pool to evaluate")
        return tuple(torch.cat(parts) for parts in zip(*self.outputs[pool], strict=True))

    def _utility(self, logits: torch.Tensor, targets: torch.Tensor) -> float:
        if self.precision == "bf16" and self.task == "multilabel":
            logits = logits.to(torch.bfloat16).sigmoid().float()  # probabilities: ranked as they are
        return float(utility_metric(self.task, self.num_classes)(logits, targets.long()))

    def _losses(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One loss per sample (the mean over attributes for multilabel): the MIA's feature."""
        losses = task_loss(self.task, logits, targets, reduction="none")
        return losses.mean(dim=1) if losses.dim() == 2 else losses
