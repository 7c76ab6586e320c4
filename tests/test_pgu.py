"""PGU's parts against hand-made answers, and its step kept off the protected directions."""

import pytest
import torch
from conftest import meta_data
from helpers import quiet_trainer
from torch import nn

from one_shui.methods.pgu import PGU, layer_inputs, protected_basis, reverse_loss


def test_patch_embedding_statistics_read_the_patches_the_layer_sees():
    embed = nn.Conv2d(3, 4, kernel_size=8, stride=8)
    images = torch.randn(2, 3, 32, 32)
    rows = layer_inputs(embed, images)
    assert rows.shape == (2 * 16, 3 * 8 * 8)  # 16 non-overlapping patches each, not 25 * 25 windows
    assert torch.equal(rows[1], images[0, :, 0:8, 8:16].reshape(-1))
    # the weight, flattened, multiplies exactly these rows
    out = (rows @ embed.weight.reshape(4, -1).T + embed.bias).reshape(2, 16, 4)
    assert torch.allclose(out, embed(images).flatten(2).transpose(1, 2), atol=1e-5)


def test_the_reverse_loss_acts_on_the_positive_attributes_only():
    logits = torch.zeros(2, 3, requires_grad=True)
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    reverse_loss("multilabel", logits, targets).backward()
    assert torch.equal(logits.grad != 0, targets > 0.5)
    assert (logits.grad[targets > 0.5] > 0).all()  # descending lowers the positive attributes
    classes = torch.zeros(2, 4, requires_grad=True)
    reverse_loss("classification", classes, torch.tensor([1, 3])).backward()
    assert classes.grad[0, 1] > 0 and classes.grad[1, 3] > 0


def test_the_protected_basis_holds_the_asked_share_of_the_spectrum():
    covariance = torch.diag(torch.tensor([1.0, 9.0, 0.0]))
    basis = protected_basis(covariance, gamma=0.9)
    assert basis.shape == (3, 1) and torch.allclose(basis.abs()[:, 0], torch.tensor([0.0, 1.0, 0.0]))
    assert protected_basis(covariance, gamma=0.95).shape == (3, 2)


def test_forget_moves_each_weight_off_its_protected_directions_only(runs):
    root, pretrain, _ = runs
    method = PGU(str(pretrain))
    quiet_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0, enable_checkpointing=False).fit(
        method, datamodule=meta_data(root)
    )
    images, ids, targets = next(iter(meta_data(root).loader("support")))
    bases = method._protected_bases(images)
    before = {name: layer.weight.detach().clone() for name, layer in method.layers.items()}
    with torch.enable_grad():
        method.forget((images, ids, targets))
    for name, layer in method.layers.items():
        change = (layer.weight.detach() - before[name]).reshape(layer.weight.shape[0], -1)
        assert change.abs().max() > 0, name
        assert (change @ bases[name]).abs().max() == pytest.approx(0, abs=1e-5), name
