"""PGU's parts against hand-made answers, and its step kept off the protected directions."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import meta_data, quiet_trainer
from torch import nn

from one_shui.methods import pgu
from one_shui.methods.base import MethodSetupError
from one_shui.methods.pgu import PGU, kept_energy, layer_inputs, pgu_loss, protected_basis


def fitted(runs, **options) -> PGU:
    """A PGU whose fit read two batches of the tiny runs' training data."""
    method = PGU(str(runs[1]), **options)
    trainer = quiet_trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=0, enable_checkpointing=False
    )
    trainer.fit(method, datamodule=meta_data(runs[0], method))
    return method


def rotated(values: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """A symmetric matrix with eigenvalues ``values`` along random orthonormal directions, and those."""
    q, _ = torch.linalg.qr(torch.randn(len(values), len(values), generator=torch.Generator().manual_seed(0)))
    return q @ torch.diag(torch.tensor(values)) @ q.T, q


def same_span(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a @ a.T, b @ b.T, atol=1e-5)


# --- the protected directions -----------------------------------------------------------------------


def test_the_rank_counts_the_square_roots_of_the_eigenvalues():
    # Eigenvalues 16, 4, 1: square roots 4, 2, 1 (sum 7), cumulative shares 4/7 = 0.57, 6/7 = 0.86, 1.
    # gamma 0.75: the first share above it is the second, so k = 2. The eigenvalues themselves give shares
    # 16/21 = 0.76, 20/21, 1: k would be 1.
    difference, directions = rotated([16.0, 4.0, 1.0])
    assert same_span(protected_basis(difference, gamma=0.75), directions[:, :2])
    assert same_span(protected_basis(difference, gamma=0.5), directions[:, :1])  # 4/7 > 0.5
    assert same_span(protected_basis(difference, gamma=0.9), directions)  # 6/7 < 0.9


def test_the_share_must_exceed_gamma_not_reach_it():
    # Eigenvalues 9 and 1: square roots 3 and 1, first share exactly 3/4.
    assert protected_basis(torch.diag(torch.tensor([9.0, 1.0])), gamma=0.75).shape == (2, 2)
    assert protected_basis(torch.diag(torch.tensor([9.0, 1.0])), gamma=0.74).shape == (2, 1)


def test_a_negative_eigenvalue_ranks_by_its_magnitude_as_in_a_singular_value_decomposition():
    # train minus support is indefinite when the support outweighs the rest along a direction (the support
    # images are no training images): |-16| leads, square roots 4, 2, 1.
    basis = protected_basis(torch.diag(torch.tensor([1.0, -16.0, 4.0])), gamma=0.5)
    assert torch.equal(basis.abs(), torch.tensor([[0.0], [1.0], [0.0]]))


def test_kept_energy_is_the_share_of_the_trace_in_the_protected_span():
    moment, directions = rotated([4.0, 1.0, 0.0])
    assert kept_energy(moment, directions[:, :1]) == pytest.approx(4 / 5)
    assert kept_energy(moment, directions[:, 1:]) == pytest.approx(1 / 5)
    assert kept_energy(moment, directions[:, :0]) == 0


# --- the layer inputs and their moments ---------------------------------------------------------------


def test_patch_embedding_statistics_read_the_patches_the_layer_sees():
    embed = nn.Conv2d(3, 4, kernel_size=8, stride=8)
    images = torch.randn(2, 3, 32, 32)
    rows = layer_inputs(embed, images)
    assert rows.shape == (2 * 16, 3 * 8 * 8)  # 16 non-overlapping patches each, not 25 * 25 windows
    assert torch.equal(rows[1], images[0, :, 0:8, 8:16].reshape(-1))
    # the weight, flattened, multiplies exactly these rows
    out = (rows @ embed.weight.reshape(4, -1).T + embed.bias).reshape(2, 16, 4)
    assert torch.allclose(out, embed(images).flatten(2).transpose(1, 2), atol=1e-5)


def test_published_conv_patches_are_every_stride_one_window():
    embed = nn.Conv2d(3, 4, kernel_size=8, stride=8)
    images = torch.randn(2, 3, 32, 32)
    rows = layer_inputs(embed, images, "published")
    assert rows.shape == (2 * 25 * 25, 3 * 8 * 8)
    assert torch.equal(rows[1], images[0, :, 0:8, 1:9].reshape(-1))  # the window one pixel on


def test_the_conv_patches_option_reaches_the_method_statistics(runs):
    images = next(iter(meta_data(runs[0]).loader("support")))[0]
    for option, stride in (("layer", None), ("published", 1)):
        method = PGU(str(runs[1]), conv_patches=option)
        name, conv = next((n, m) for n, m in method.layers.items() if isinstance(m, nn.Conv2d))
        assert name == "patch_embed.proj"  # its input is the images themselves
        patches = F.unfold(images, conv.kernel_size, stride=stride or conv.stride, padding=conv.padding)
        rows = patches.transpose(1, 2).reshape(-1, patches.shape[1])
        assert torch.allclose(method.input_moments(images)[name], rows.T @ rows, rtol=1e-4, atol=1e-3)


def test_fit_sums_the_moments_over_the_training_data_seen_with_the_test_transform(runs):
    root, pretrain, _ = runs
    method = PGU(str(pretrain))
    quiet_trainer(max_epochs=1, limit_val_batches=0, enable_checkpointing=False).fit(
        method, datamodule=meta_data(root, method)
    )
    expected: dict[str, torch.Tensor] = {}
    pool = meta_data(root).loader("train", batch_size=5)  # in order, test transform, other batches
    for images, _, _ in pool:
        for name, moment in method.input_moments(images).items():
            expected[name] = expected.get(name, 0) + moment
    assert int(method.train_images) == len(pool.dataset)
    for name in method.layers:
        assert torch.allclose(method.train_moment(name), expected[name], rtol=1e-4, atol=1e-2), name


# --- the loss ------------------------------------------------------------------------------------------


def reverse(z: float) -> float:
    """-log(1 - sigmoid(z) + 0.05), by hand."""
    return -math.log(1 - 1 / (1 + math.exp(-z)) + 0.05)


def negative_entropy(row: list[float]) -> float:
    exps = [math.exp(v) for v in row]
    return sum(e / sum(exps) * math.log(e / sum(exps)) for e in exps)


def test_the_multilabel_loss_against_a_hand_computation():
    rows = [[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]]
    logits, targets = torch.tensor(rows), torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    entropy_term = 0.2 * (negative_entropy(rows[0]) + negative_entropy(rows[1])) / 2
    # positive: sample 0 averages its positives (columns 1 and 2), sample 1 has none and adds 0
    positive = (reverse(1.0) + reverse(-1.0)) / 2 / 2
    assert pgu_loss("multilabel", logits, targets).item() == pytest.approx(positive + entropy_term, rel=1e-6)
    # published: the target values 0, 1, 1 pick columns 0, 1, 1 of sample 0; 0, 0, 0 column 0 of sample 1
    published = ((reverse(0.0) + 2 * reverse(1.0)) / 3 + reverse(2.0)) / 2
    loss = pgu_loss("multilabel", logits, targets, reverse_targets="published")
    assert loss.item() == pytest.approx(published + entropy_term, rel=1e-6)


def test_the_classification_loss_against_a_hand_computation():
    # softmax of (0, ln 3) is (1/4, 3/4): class 1 of sample 0 has p = 3/4, of sample 1 (reversed) 1/4
    logits = torch.tensor([[0.0, math.log(3)], [math.log(3), 0.0]])
    negative_entropy = 0.25 * math.log(0.25) + 0.75 * math.log(0.75)
    expected = (-math.log(0.25 + 0.05) - math.log(0.75 + 0.05)) / 2 + 0.2 * negative_entropy
    for option in ("positive", "published"):  # only attributes differ
        loss = pgu_loss("classification", logits, torch.tensor([1, 1]), reverse_targets=option)
        assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_descending_the_loss_lowers_the_positive_attributes_only():
    logits = torch.zeros(2, 3, requires_grad=True)
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    pgu.reverse_loss("multilabel", logits, targets).backward()
    assert torch.equal(logits.grad != 0, targets > 0.5)
    assert (logits.grad[targets > 0.5] > 0).all()


# --- forget ----------------------------------------------------------------------------------------


def test_forget_steps_each_batch_with_the_cosine_step_size_of_its_epoch(runs, monkeypatch):
    method = fitted(runs, lr=0.1, epochs=4, support_batch_size=2)
    support = next(iter(meta_data(runs[0]).loader("support")))
    assert len(support[0]) == 3  # two batches an epoch: 2 images, then 1
    steps = []
    monkeypatch.setattr(pgu, "sgd_step_", lambda params, grads, lr: steps.append(lr))
    with torch.enable_grad():
        method.forget(support)
    # the published schedule: torch's CosineAnnealingLR over the epochs, stepped after each epoch
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)
    expected = []
    for _ in range(4):
        expected += [optimizer.param_groups[0]["lr"]] * 2
        optimizer.step()
        schedule.step()
    assert steps == pytest.approx(expected)
    assert steps[::2] == pytest.approx(
        [0.1, 0.1 * (1 + math.cos(math.pi / 4)) / 2, 0.05, 0.1 * (1 - 0.5**0.5) / 2]
    )


def test_the_protected_directions_come_from_the_training_sum_less_the_support_sum(runs):
    method = fitted(runs, gamma=0.75)
    images = next(iter(meta_data(runs[0]).loader("support")))[0]
    embed = method.layers["patch_embed.proj"]  # reads the images: its support rows, by hand
    patches = F.unfold(images, embed.kernel_size, stride=embed.stride)
    rows = patches.transpose(1, 2).reshape(-1, patches.shape[1])
    expected = protected_basis(method.train_moment("patch_embed.proj") - rows.T @ rows, gamma=0.75)
    assert same_span(method.protected_bases(images)["patch_embed.proj"], expected)


def test_forget_moves_each_weight_off_its_protected_directions_only(runs):
    method = fitted(runs, support_batch_size=2)
    images, ids, targets = next(iter(meta_data(runs[0]).loader("support")))
    bases = method.protected_bases(images)
    before = {name: layer.weight.detach().clone() for name, layer in method.layers.items()}
    with torch.enable_grad():
        method.forget((images, ids, targets))
    for name, layer in method.layers.items():
        change = (layer.weight.detach() - before[name]).reshape(layer.weight.shape[0], -1)
        assert change.abs().max() > 0, name
        assert (change @ bases[name]).abs().max() == pytest.approx(0, abs=1e-5), name


def test_forget_without_a_fit_is_refused(runs):
    support = next(iter(meta_data(runs[0]).loader("support")))
    with pytest.raises(MethodSetupError, match="no input statistics of the training data"):
        PGU(str(runs[1])).forget(support)
