"""Tests of the meta-loss network h_phi."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from one_shui.models.meta_loss import INPUT_PARTS, MetaLoss

C, D, N, B = 5, 12, 7, 6  # classes, feature width, train identities, support batch


def support(task: str = "multilabel", seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A random support batch: logits, features, targets, identities."""
    g = torch.Generator().manual_seed(seed)
    logits, features = torch.randn(B, C, generator=g), torch.randn(B, D, generator=g)
    if task == "multilabel":
        targets = torch.randint(0, 2, (B, C), generator=g)
    else:
        targets = torch.randint(0, C, (B,), generator=g)
    return logits, features, targets, torch.randint(0, N, (B,), generator=g)


def first_linear(model: MetaLoss) -> nn.Linear:
    """The input layer of h_phi."""
    return next(m for m in model.modules() if isinstance(m, nn.Linear))


@pytest.mark.parametrize("task", ["multilabel", "classification"])
@pytest.mark.parametrize("blocks", [0, 2])
def test_scalar_non_negative(task: str, blocks: int) -> None:
    model = MetaLoss(C, D, N, task=task, residual_blocks=blocks)
    m = model(*support(task))
    assert m.dim() == 0 and m.item() >= 0
    assert first_linear(model).in_features == 2 * C + D + 64


def test_parts_widths() -> None:
    widths = {"outputs": C, "features": D, "targets": C, "identity": 64}
    full = first_linear(MetaLoss(C, D, N)).in_features
    for part in INPUT_PARTS:
        model = MetaLoss(C, D, N, parts=[p for p in INPUT_PARTS if p != part])
        assert first_linear(model).in_features == full - widths[part]
        assert model.parts == tuple(p for p in INPUT_PARTS if p != part)
        assert model(*support()).dim() == 0
        has_embedding = any(isinstance(m, nn.Embedding) for m in model.modules())
        assert has_embedding == (part != "identity")


@pytest.mark.parametrize("blocks", [0, 1])
def test_every_parameter_gets_gradient(blocks: int) -> None:
    torch.manual_seed(0)
    model = MetaLoss(C, D, N, residual_blocks=blocks).eval()
    model(*support()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_second_order() -> None:
    """The MetaUnlearn pattern: the gradient of M with respect to model weights, differentiated again."""
    torch.manual_seed(0)
    model = MetaLoss(C, D, N, hidden=32).eval()
    _, features, targets, identities = support()
    features = features.requires_grad_()
    w = torch.randn(D, C, requires_grad=True)
    m = model(features @ w, features, targets, identities)
    (g,) = torch.autograd.grad(m, w, create_graph=True)
    (g**2).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert features.grad is not None and features.grad.abs().sum() > 0


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"faces.*'outputs', 'features', 'targets', 'identity'"):
        MetaLoss(C, D, N, parts=["outputs", "faces"])
    with pytest.raises(ValueError, match="at least one"):
        MetaLoss(C, D, N, parts=[])
    logits, features, targets, identities = support()
    model = MetaLoss(C, D, N)
    for bad in (N, -1):
        identities[2] = bad
        with pytest.raises(ValueError, match=rf"identity index {bad} .*num_identities={N}"):
            model(logits, features, targets, identities)
    # Without the identity part, identities are not looked at.
    assert MetaLoss(C, D, N, parts=["outputs", "targets"])(logits, features, targets, identities).dim() == 0
