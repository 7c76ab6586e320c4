"""SSD (selective synaptic dampening) as published: I_D, I_S and the dampening rule."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import yaml
from helpers import CONFIGS, meta_data, quiet_trainer
from torch.nn.utils import parameters_to_vector

from one_shui.methods.ssd import SSD, dampened


def squared_gradient(network: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The squared gradient of the batch's mean BCE (the synthetic data's task), over every parameter."""
    loss = F.binary_cross_entropy_with_logits(network(images), targets.float())
    return parameters_to_vector(torch.autograd.grad(loss, list(network.parameters()))).square()


def test_the_dampening_rule_on_a_hand_computed_vector():
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    train = torch.tensor([1.0, 1.0, 0.0, 1.0, 2.0, 1.0])  # I_D
    support = torch.tensor([0.5, 60.0, 1.0, 100.0, 200.0, 10.0])  # I_S
    # alpha 50: entries 1 to 4 are selected (60 > 50, 1 > 0, 100 > 50, 200 > 100), entries 0 and 5 are not
    # (10 > I_D but not > 50 I_D); lambda 0.1: factors 0.1/60, 0, 0.1/100, 0.2/200.
    got = dampened(weights, train, support, selection_weighting=50, dampening_constant=0.1)
    torch.testing.assert_close(got, torch.tensor([1.0, 2 / 600, 0.0, 0.004, 0.005, 6.0]))
    # The factor is capped at 1: selected (2 > 1 * 1), lambda * I_D / I_S = 5, the weight is kept.
    kept = dampened(
        torch.tensor([3.0]), torch.ones(1), torch.tensor([2.0]), selection_weighting=1, dampening_constant=10
    )
    torch.testing.assert_close(kept, torch.tensor([3.0]))


def test_fit_measures_the_training_data_unaugmented_at_the_configured_batch(runs, tmp_path, monkeypatch):
    """I_D is the squared gradient of the mean loss of each batch of the training data, with the test
    transform and the model in eval mode: with one batch holding every training image, that of their mean."""
    config = yaml.safe_load((CONFIGS / "methods" / "ssd.yaml").read_text())
    assert config["model"]["init_args"]["train_batch_size"] == 128
    root, pretrain, _ = runs
    method = SSD(
        str(pretrain), train_batch_size=10_000
    )  # every training image in one batch: no shuffle matters
    data = meta_data(root, method)
    modes = []
    squared = method.batch_importance
    monkeypatch.setattr(
        method, "batch_importance", lambda batch: modes.append(method.model.training) or squared(batch)
    )
    method.train()  # fit must measure in eval mode whatever mode it starts in
    trainer = quiet_trainer(
        max_epochs=1, limit_val_batches=0, enable_checkpointing=False, default_root_dir=tmp_path
    )
    trainer.fit(method, datamodule=data)
    assert not data.hparams.augment_train and int(method.batches) == 1 and modes == [False]

    images, _, targets = next(iter(data.loader("train", batch_size=10_000)))  # the test transform, in order
    network = method.model.network.eval()
    expected = squared_gradient(network, images, targets)
    torch.testing.assert_close(method.importance_sum, expected, rtol=1e-3, atol=1e-4 * float(expected.max()))


def test_forget_averages_the_support_batches_and_dampens_by_the_rule(runs):
    """I_S is the mean over batches of ``support_batch_size`` support images of each batch's squared gradient
    (eval mode); I_D the importance sum over the training batches divided by their count."""
    root, pretrain, _ = runs
    method = SSD(str(pretrain), support_batch_size=2, selection_weighting=1.0, dampening_constant=0.5)
    images, ids, targets = next(iter(meta_data(root).loader("support")))
    assert len(images) == 3
    network = method.model.network
    assert method.model.hparams.task == "multilabel"
    weights = parameters_to_vector(network.parameters()).detach().clone()
    support = (
        squared_gradient(network, images[:2], targets[:2])
        + squared_gradient(network, images[2:], targets[2:])
    ) / 2
    # About half the parameters are selected: the threshold lies halfway between two neighbouring values of
    # I_S, so no parameter sits on it (where the last bit of the sum would decide).
    values = support.unique(sorted=True)
    middle = len(values) // 2
    train = torch.full_like(support, float(values[middle - 1] + values[middle]) / 2)
    method.importance_sum.copy_(3 * train)
    method.batches.fill_(3)

    with torch.enable_grad():
        method.forget((images, ids, targets))

    selected = support > 1.0 * train
    expected = torch.where(selected, weights * torch.clamp(0.5 * train / support, max=1), weights)
    assert 0 < int(selected.sum()) < len(selected)
    torch.testing.assert_close(parameters_to_vector(network.parameters()).detach(), expected)
