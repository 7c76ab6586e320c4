"""JiT (Lipschitz unlearning) as published: its loss, its noise, its steps."""

from __future__ import annotations

import lightning as L
import pytest
import timm
import torch
import yaml
from helpers import CONFIGS

import one_shui.methods.jit as jit
from one_shui.methods.base import MethodSetupError
from one_shui.methods.jit import JiT, published_noise_std


def spread_batch(size: int = 4) -> torch.Tensor:
    """Images whose ranges differ from one image to the next, so that a per-image clamp is not the batch's."""
    torch.manual_seed(1)
    scale = torch.linspace(0.2, 0.9, size).view(-1, 1, 1, 1)
    return scale * (2 * torch.rand(size, 3, 32, 32) - 1)


def test_the_loss_is_the_mean_over_clamped_copies_of_the_sum_over_images(runs):
    """Per noisy copy x' = clamp(x + noise, min of the batch, max of the batch), the sum over the images of
    ||f(x) - f(x')|| / ||x - x'||, averaged over the copies; no gradient flows through f(x')."""
    copies, std = 3, 0.5
    method = JiT(str(runs[1]), copies=copies, noise_std=std)
    network = method.model.network
    params = list(network.parameters())
    images = spread_batch()

    torch.manual_seed(0)
    loss = method.lipschitz_loss(images)
    grads = torch.autograd.grad(loss, params)

    torch.manual_seed(0)  # the same draws, one noise tensor per copy
    noisy = [
        (images + std * torch.randn_like(images)).clamp(images.min(), images.max()) for _ in range(copies)
    ]

    def expected(detach: bool) -> torch.Tensor:
        clean = network(images)
        per_copy = []
        for x_prime in noisy:
            out = network(x_prime)
            out = out.detach() if detach else out
            ratios = [
                torch.linalg.vector_norm(clean[i] - out[i]) / torch.linalg.vector_norm(images[i] - x_prime[i])
                for i in range(len(images))
            ]
            per_copy.append(torch.stack(ratios).sum())
        return torch.stack(per_copy).mean()

    reference = expected(detach=True)
    torch.testing.assert_close(loss, reference)
    for got, want in zip(grads, torch.autograd.grad(reference, params), strict=True):
        torch.testing.assert_close(got, want)
    # The detached branch matters: with gradient through f(x') the gradient differs.
    through = torch.autograd.grad(expected(detach=False), params)
    assert any(not torch.allclose(g, t) for g, t in zip(grads, through, strict=True))


def test_the_noise_defaults_to_the_published_value_of_the_backbone(runs):
    assert JiT(str(runs[1])).noise_std == 30.0  # a ViT
    assert JiT(str(runs[1]), noise_std=0.2).noise_std == 0.2
    assert published_noise_std(timm.create_model("resnet18", num_classes=2)) == 0.01
    assert published_noise_std(timm.create_model("vit_tiny_patch16_224", num_classes=2)) == 30.0
    with pytest.raises(MethodSetupError, match="noise_std"):
        published_noise_std(torch.nn.Linear(2, 2))
    options = yaml.safe_load((CONFIGS / "methods" / "jit.yaml").read_text())["model"]["init_args"]
    assert options == {"lr": 0.01, "copies": 25, "noise_std": None, "support_batch_size": 128}


def test_one_sgd_step_per_batch_of_support_images_in_training_mode(runs, monkeypatch):
    method = JiT(str(runs[1]), copies=2, support_batch_size=2)
    batches, modes, steps = [], [], []
    loss, step = method.lipschitz_loss, jit.sgd_step_

    def recorded_loss(images):
        batches.append(len(images))
        modes.append(method.model.training)
        return loss(images)

    def recorded_step(params, grads, lr):
        steps.append(lr)
        step(params, grads, lr)

    monkeypatch.setattr(method, "lipschitz_loss", recorded_loss)
    monkeypatch.setattr(jit, "sgd_step_", recorded_step)
    support = (spread_batch(3), torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    with torch.enable_grad():
        method.forget(support)
    assert batches == [2, 1] and steps == [0.01, 0.01]
    assert modes == [True, True]  # as published: the step runs in training mode
    assert not method.model.training  # and the model is served in eval mode again


@pytest.mark.parametrize(("accumulate", "applied"), [(True, 2 + (2 + 1)), (False, 2 + 1)])
def test_each_step_applies_the_gradients_of_the_batches_so_far_as_published(
    runs, monkeypatch, accumulate, applied
):
    """A loss whose gradient is the batch's size in every coordinate: with accumulation (the published code
    never zeroes gradients) batches of 2 then 1 images move each weight by lr * (2 + 3), else lr * (2 + 1)."""
    method = JiT(str(runs[1]), support_batch_size=2, accumulate_gradients=accumulate)
    params = list(method.model.network.parameters())
    before = params[0].detach().clone()
    monkeypatch.setattr(method, "lipschitz_loss", lambda images: len(images) * sum(p.sum() for p in params))
    with torch.enable_grad():
        method.forget((torch.zeros(3, 3, 32, 32), torch.zeros(3), torch.zeros(3)))
    torch.testing.assert_close(params[0].detach(), before - 0.01 * applied)


def test_its_noise_is_the_seed_s_so_two_unlearning_seeds_give_two_models_and_one_seed_one(runs):
    """What the bench's unlearning seeds rely on: JiT on the same pretrain draws its noise from the seed
    set before it (`--seed_everything`)."""

    def forgotten(seed: int) -> dict[str, torch.Tensor]:
        method, support = JiT(str(runs[1]), copies=2), spread_batch(3)  # spread_batch seeds torch itself
        L.seed_everything(seed, verbose=False)
        with torch.enable_grad():
            method.forget((support, torch.zeros(3, dtype=torch.long), torch.zeros(3)))
        return method.model.state_dict()

    first, again, other = forgotten(0), forgotten(0), forgotten(1000)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert any(not torch.equal(first[name], other[name]) for name in first)
