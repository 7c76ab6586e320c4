"""Random labels on the support images: fine-tune the model toward targets drawn at random."""

from __future__ import annotations

from typing import Literal

import torch

from ..errors import at_least
from .base import Batch, UnlearningMethod, support_steps_

RandomTargets = Literal["prevalence", "uniform", "flipped"]


def random_targets(
    targets: torch.Tensor, task: str, num_classes: int, kind: RandomTargets, generator: torch.Generator
) -> torch.Tensor:
    """Random targets for the support images. Classification: a class drawn uniformly among the others
    (every ``kind``). Attributes (multi-label): ``prevalence`` draws each attribute 1 with its share
    among the support targets, ``uniform`` with probability 1/2, ``flipped`` is 1 - y."""
    if task != "multilabel":
        shift = torch.randint(1, num_classes, targets.shape, generator=generator, device=targets.device)
        return (targets + shift) % num_classes
    if kind == "flipped":
        return 1 - targets
    share = targets.float().mean(dim=0, keepdim=True) if kind == "prevalence" else 0.5
    draws = torch.rand(targets.shape, generator=generator, device=targets.device)
    return (draws < share).to(targets.dtype)


class RandomLabels(UnlearningMethod):
    """``steps`` steps of SGD (``lr``) on the support images' task loss against random targets
    (:func:`random_targets`), drawn once per request with the run's seed: relabelling the forget set
    (Graves et al., AAAI 2021; the relabelling step of SalUn), support images only.

    The paper relabels a class at random; for attributes it is silent. The default, ``prevalence``,
    gives each attribute its base rate among the support people, so the targets look like some other
    person's rather than like nobody's; ``flipped`` (every attribute negated) and ``uniform`` are options.
    As :class:`~one_shui.methods.gradient_ascent.GradientAscent`: eval mode, plain SGD, ``lr`` its
    strength. Reads the support images and their targets; nothing to prepare.

    Args:
        lr: the step size (chosen on VAL: docs/tuning.md).
        steps: fine-tuning steps, all support images in each.
        targets: how the random targets are drawn for attributes (:func:`random_targets`).
    """

    strength_option = "lr"

    def __init__(
        self,
        pretrain_ckpt: str | None = None,
        *,
        lr: float = 1e-3,
        steps: int = 1,
        targets: RandomTargets = "prevalence",
        **kwargs,
    ):
        at_least("model.init_args", 0, lr=lr)
        at_least("model.init_args", 1, steps=steps)
        super().__init__(pretrain_ckpt, **kwargs)

    def relabelled(self, support: Batch) -> torch.Tensor:
        """The support images' random targets, drawn from the run's random state."""
        _, _, targets = support
        hp = self.model.hparams
        generator = torch.Generator(device=targets.device)
        generator.manual_seed(int(torch.randint(0, 2**62, ())))  # the run's seed decides the draw
        return random_targets(targets, hp.task, hp.num_classes, self.hparams.targets, generator)

    def mask(self, support: Batch) -> list[torch.Tensor] | None:
        """Which weights the fine-tuning moves (1) and keeps (0); None: all of them."""
        return None

    def forget(self, support: Batch) -> None:
        lr, steps = self.at_strength(self.hparams.lr), self.hparams.steps
        support_steps_(self, support[0], self.relabelled(support), lr, steps, self.mask(support))
