"""The meta-loss network h_phi of MetaUnlearn: a learned, non-negative loss on the support samples."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.sources import Task
from ..errors import SettingError

INPUT_PARTS = ("outputs", "features", "targets", "identity")


class ResidualBlock(nn.Module):
    """Pre-norm MLP block: ``x + Linear(GELU(Linear(LayerNorm(x))))``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Linear(width, width)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Residual update of ``x``."""
        return x + self.mlp(x)


class MetaLoss(nn.Module):
    """h_phi: maps each support sample to a non-negative loss; M is their mean over the batch.

    The input of a support sample is the concatenation of the parts in ``parts``: the frozen model's
    sigmoid outputs (C), its pooled feature (``feature_dim``), the target (multi-hot, or one-hot for
    classification: C) and a learned embedding (``identity_dim``) of its identity, indexed over the
    TRAIN identities. The outputs go through a sigmoid for both tasks, as the protocol specifies.
    """

    def __init__(
        self,
        num_classes: int,
        feature_dim: int,
        num_identities: int,
        *,
        parts: Sequence[str] = INPUT_PARTS,
        task: Task = "multilabel",
        identity_dim: int = 64,
        hidden: int = 512,
        residual_blocks: int = 0,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        unknown = [p for p in parts if p not in INPUT_PARTS]
        if unknown:
            raise SettingError(f"unknown meta-loss input parts {unknown}; choose among {INPUT_PARTS}")
        if not parts:
            raise SettingError(f"the meta-loss needs at least one input part among {INPUT_PARTS}")
        if task not in ("multilabel", "classification"):
            raise ValueError(f"task must be 'multilabel' or 'classification', not {task!r}")
        # Keep the canonical order, so that the input layout does not depend on how parts were listed.
        self.parts = tuple(p for p in INPUT_PARTS if p in parts)
        self.task, self.num_classes, self.num_identities = task, num_classes, num_identities
        widths = dict(outputs=num_classes, features=feature_dim, targets=num_classes, identity=identity_dim)
        # No table when identity is off, so that its parameters neither exist nor get optimised.
        with_identity = "identity" in self.parts
        self.identity_embedding = nn.Embedding(num_identities, identity_dim) if with_identity else None
        self.body = nn.Sequential(
            nn.Linear(sum(widths[p] for p in self.parts), hidden),
            nn.LayerNorm(hidden),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            *(ResidualBlock(hidden) for _ in range(residual_blocks)),
            nn.LayerNorm(hidden),
            nn.Linear(hidden, 1),
            nn.Softplus(),
        )

    def forward(self, logits: Tensor, features: Tensor, targets: Tensor, identities: Tensor) -> Tensor:
        """The scalar loss M: the mean over the batch of h_phi(per-sample input).

        Inputs of parts that are off are ignored. Nothing is detached, so M stays twice differentiable
        with respect to ``logits`` and ``features``, as MetaUnlearn needs.
        """
        dtype, inputs = self.body[0].weight.dtype, []
        if "outputs" in self.parts:
            inputs.append(torch.sigmoid(logits.to(dtype)))
        if "features" in self.parts:
            inputs.append(features.to(dtype))
        if "targets" in self.parts:
            if self.task == "classification":
                targets = F.one_hot(targets.long(), self.num_classes)
            inputs.append(targets.to(dtype))
        if "identity" in self.parts:
            # nn.Embedding would fail with an opaque IndexError on CPU and a device assert on GPU.
            bad = identities[(identities < 0) | (identities >= self.num_identities)]
            if bad.numel():
                raise ValueError(
                    f"identity index {bad[0].item()} out of range for num_identities={self.num_identities} "
                    "(the meta-loss embeds TRAIN identities only)"
                )
            inputs.append(self.identity_embedding(identities).to(dtype))
        return self.body(torch.cat(inputs, dim=-1)).mean()
