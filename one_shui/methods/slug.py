"""SLUG, single layer unlearning gradient: one layer, one step, its size searched on the check set."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..errors import at_least, positive
from .base import Batch, MethodSetupError, support_loss
from .training_pass import TrainingPass


def pareto_front(importance: Sequence[float], alignment: Sequence[float]) -> list[int]:
    """The layers no other layer dominates: none is at least as important and at most as aligned, and
    better in one of the two."""
    pairs = list(zip(importance, alignment, strict=True))

    def dominated(imp: float, align: float) -> bool:
        return any(i >= imp and a <= align and (i, a) != (imp, align) for i, a in pairs)

    return [i for i, pair in enumerate(pairs) if not dominated(*pair)]


def choose_layer(importance: Sequence[float], alignment: Sequence[float]) -> int:
    """The front's layer with the highest importance / alignment (an alignment of 0 ranks first)."""
    return max(pareto_front(importance, alignment), key=lambda i: importance[i] / max(alignment[i], 1e-12))


def search_step(drop_at: Callable[[float], float], max_drop: float, max_step: float, halvings: int) -> float:
    """The largest step t in [0, max_step] with ``drop_at(t) <= max_drop``, by bisection (the drop taken to
    grow with the step); 0 when even the smallest probed step costs more."""
    if drop_at(max_step) <= max_drop:
        return max_step
    low, high = 0.0, max_step
    for _ in range(halvings):
        middle = (low + high) / 2
        low, high = (middle, high) if drop_at(middle) <= max_drop else (low, middle)
    return low


class SLUG(TrainingPass):
    """SLUG (Cai et al., "Targeted Unlearning with Single Layer Unlearning Gradient", ICML 2025), on the
    support images. ``fit``: g_r, the retain loss's gradient, the mean over the training batches of the
    gradient of their mean task loss (:class:`~one_shui.methods.training_pass.TrainingPass`). ``forget``:
    g_f, the gradient of the support images' mean task loss; for every weight matrix l (the parameters of
    two or more dimensions) its importance ||g_f,l|| / ||theta_l|| and its alignment |cos(g_f,l, g_r,l)|;
    the layers on their Pareto front (:func:`pareto_front`: important and little aligned with the retain
    gradient); one of them; then one step up the support loss on that layer alone,
    theta_l <- theta_l + t ||theta_l|| g_f,l / ||g_f,l||, t the largest relative step in [0, ``max_step``]
    whose check-set score (the guard's VAL images, never TEST) drops by at most ``max_drop`` points, found
    by bisection (:func:`search_step`).

    Choices where the paper does not carry over: the paper evaluates the front's layers and keeps the one
    that unlearns best; with no data to evaluate forgetting on, we keep the front's layer with the highest
    importance / alignment (:func:`choose_layer`; ``layer`` names one instead). The step is searched on the
    check set's drop, the one held-out signal a request has. ``max_drop`` is the strength (a stronger SLUG
    may cost the check set more). Reads the support images and their targets.

    Args:
        max_drop: the check-set drop, in points, that the step may cost.
        max_step: the largest step searched, relative to the layer's norm.
        halvings: the bisection's steps.
        layer: the name of the parameter to update (a weight matrix of the backbone); None: the front's.
        train_batch_size: training images per batch of g_r in fit (the data's batch size then).
    """

    strength_option = "max_drop"

    def __init__(
        self,
        pretrain_ckpt: str | None = None,
        *,
        max_drop: float = 1.0,
        max_step: float = 1.0,
        halvings: int = 12,
        layer: str | None = None,
        train_batch_size: int = 128,
        **kwargs,
    ):
        at_least("model.init_args", 0, max_drop=max_drop)
        positive("model.init_args", max_step=max_step)
        at_least("model.init_args", 1, halvings=halvings, train_batch_size=train_batch_size)
        super().__init__(pretrain_ckpt, **kwargs)
        names = [name for name, _ in self.model.network.named_parameters()]
        if layer is not None and layer not in names:
            raise MethodSetupError(f"model.init_args.layer {layer!r} is not a parameter of the backbone")

    def batch_importance(self, batch: Batch) -> torch.Tensor:
        """The batch's retain gradient: the gradient of its mean task loss."""
        return self.loss_gradient(batch)

    def chosen_layer(self, forget_grads: Sequence[torch.Tensor]) -> int:
        """The index of the parameter SLUG updates (see the class)."""
        named = list(self.model.network.named_parameters())
        if self.hparams.layer is not None:
            return [name for name, _ in named].index(self.hparams.layer)
        retain, start, layers = self.training_mean, 0, []
        for i, ((_, param), grad) in enumerate(zip(named, forget_grads, strict=True)):
            size = param.numel()
            if param.dim() >= 2:
                mine = retain[start : start + size]
                alignment = torch.nn.functional.cosine_similarity(grad.flatten(), mine, dim=0).abs()
                layers.append((i, float(grad.norm() / param.detach().norm()), float(alignment)))
            start += size
        index, importance, alignment = zip(*layers, strict=True)
        return index[choose_layer(importance, alignment)]

    def forget(self, support: Batch) -> None:
        if self.check_set is None:
            raise MethodSetupError("SLUG searches its step on the check set: prepare it with `one-shui fit`")
        images, _, targets = support
        params = list(self.model.network.parameters())
        grads = torch.autograd.grad(support_loss(self, images, targets), params)
        i = self.chosen_layer(grads)
        param, direction = params[i], grads[i] / grads[i].norm().clamp_min(1e-12)
        original, before = param.detach().clone(), self.check_score()
        scale = float(original.norm())

        def drop_at(step: float) -> float:
            with torch.no_grad():
                param.copy_(original + step * scale * direction)
            return before - self.check_score()

        step = search_step(drop_at, self.at_strength(self.hparams.max_drop), self.hparams.max_step,
                           self.hparams.halvings)  # fmt: skip
        with torch.no_grad():
            param.copy_(original + step * scale * direction)
