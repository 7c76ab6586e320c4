"""The support-only baselines (PROTOCOL §11): gradient ascent, random labels and SalUn, each update
checked against the same step computed here by hand."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from one_shui.data.check_set import CheckSet
from one_shui.errors import SettingError
from one_shui.methods.base import MethodSetupError
from one_shui.methods.boundary_shrink import BoundaryShrink
from one_shui.methods.gradient_ascent import GradientAscent
from one_shui.methods.lfssd import LFSSD
from one_shui.methods.random_labels import RandomLabels, random_targets
from one_shui.methods.salun import SalUn, saliency_mask
from one_shui.methods.slug import SLUG, choose_layer, pareto_front, search_step


def support(method, size: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Support images of the model's size with 0/1 targets for its attributes."""
    generator = torch.Generator().manual_seed(3)
    hp = method.model.hparams
    images = 2 * torch.rand(size, 3, hp.image_size, hp.image_size, generator=generator) - 1
    targets = (torch.rand(size, hp.num_classes, generator=generator) < 0.4).float()
    return images, torch.arange(size), targets


def by_hand(network, images, targets, lr: float, sign: float, mask=None) -> dict[str, torch.Tensor]:
    """One SGD step of ``sign`` * lr on the mean BCE of ``network`` (a copy), masked where given."""
    network = copy.deepcopy(network)
    loss = F.binary_cross_entropy_with_logits(network(images), targets)
    loss.backward()
    with torch.no_grad():
        for i, param in enumerate(network.parameters()):
            step = param.grad if mask is None else param.grad * mask[i]
            param.add_(sign * lr * step)
    return {name: p.detach().clone() for name, p in network.named_parameters()}


def weights(method) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in method.model.network.named_parameters()}


def test_gradient_ascent_is_one_step_up_the_support_loss(runs):
    method = GradientAscent(str(runs[1]), lr=0.5)
    images, ids, targets = support(method)
    expected, before = by_hand(method.model.network, images, targets, lr=0.5, sign=+1), weights(method)
    method.forget((images, ids, targets))
    after = weights(method)
    assert all(torch.allclose(after[name], expected[name], atol=1e-6) for name in expected)
    assert any(not torch.equal(after[name], before[name]) for name in before)


def test_random_targets_keep_the_prevalence_flip_or_avoid_the_true_class():
    generator = torch.Generator().manual_seed(0)
    targets = torch.zeros(4000, 3)
    targets[:, 0], targets[::4, 1] = 1, 1  # prevalences 1, 0.25 and 0
    drawn = random_targets(targets, "multilabel", 3, "prevalence", generator)
    assert drawn.mean(dim=0).tolist() == pytest.approx([1.0, 0.25, 0.0], abs=0.03)
    assert torch.equal(random_targets(targets, "multilabel", 3, "flipped", generator), 1 - targets)
    assert random_targets(targets, "multilabel", 3, "uniform", generator).mean().item() == pytest.approx(
        0.5, abs=0.03
    )
    classes = torch.randint(0, 5, (4000,), generator=generator)
    other = random_targets(classes, "classification", 5, "prevalence", generator)
    assert not (other == classes).any() and set(other.tolist()) == set(range(5))


def test_random_labels_is_one_step_down_the_loss_of_its_random_targets(runs):
    method = RandomLabels(str(runs[1]), lr=0.5, targets="flipped")
    images, ids, targets = support(method)
    expected = by_hand(method.model.network, images, 1 - targets, lr=0.5, sign=-1)
    method.forget((images, ids, targets))
    after = weights(method)
    assert all(torch.allclose(after[name], expected[name], atol=1e-6) for name in expected)


def test_the_saliency_mask_keeps_the_top_share_of_gradient_magnitudes_over_the_whole_network():
    grads = [torch.tensor([0.1, -5.0, 0.3]), torch.tensor([[2.0, -0.2], [0.05, 4.0]])]
    mask = saliency_mask(grads, 0.4)  # 3 of 7 weights: |-5|, |4|, |2|
    assert [m.tolist() for m in mask] == [[0.0, 1.0, 0.0], [[1.0, 0.0], [0.0, 1.0]]]
    assert sum(m.sum() for m in saliency_mask(grads, 1.0)) == 7


def test_salun_moves_only_its_masked_weights_by_the_random_label_step(runs):
    method = SalUn(str(runs[1]), lr=0.5, gamma=0.3, targets="flipped")
    images, ids, targets = support(method)
    network = copy.deepcopy(method.model.network)
    loss = F.binary_cross_entropy_with_logits(network(images), targets)
    grads = torch.autograd.grad(loss, list(network.parameters()))
    magnitudes = torch.cat([g.abs().flatten() for g in grads])
    threshold = magnitudes.sort(descending=True).values[round(0.3 * magnitudes.numel()) - 1]
    mask = [(g.abs() >= threshold).float() for g in grads]
    assert sum(m.sum() for m in mask) / magnitudes.numel() == pytest.approx(0.3, abs=1e-3)
    expected = by_hand(method.model.network, images, 1 - targets, lr=0.5, sign=-1, mask=mask)
    before = weights(method)
    method.forget((images, ids, targets))
    after = weights(method)
    for (name, value), keep in zip(after.items(), mask, strict=True):
        assert torch.allclose(value, expected[name], atol=1e-6), name
        assert torch.equal(value[keep == 0], before[name][keep == 0]), name  # unmasked: exactly as they were


@pytest.mark.parametrize("gamma", [0, 1.5, float("nan")])
def test_salun_refuses_a_share_outside_0_to_1(runs, gamma):
    with pytest.raises(SettingError, match="gamma"):
        SalUn(str(runs[1]), gamma=gamma)


def test_lfssd_s_importance_is_the_absolute_gradient_of_the_outputs_squared_norm_without_targets(runs):
    method = LFSSD(str(runs[1]))
    images, ids, targets = support(method)
    network = copy.deepcopy(method.model.network)
    (network(images) ** 2).sum(dim=1).mean().backward()
    expected = torch.cat([p.grad.abs().flatten() for p in network.parameters()])
    assert torch.allclose(method.batch_importance((images, ids, targets)), expected, atol=1e-6)
    unknown = torch.full_like(targets, float("nan"))  # targets are never read
    assert torch.allclose(method.batch_importance((images, ids, unknown)), expected, atol=1e-6)


class MeanLinear(torch.nn.Module):
    """logits = a * mean(x) + b: a boundary known by hand."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.a, self.b = torch.nn.Parameter(a), torch.nn.Parameter(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3)).unsqueeze(1) * self.a + self.b


def test_boundary_shrink_s_neighbour_labels_flip_the_attributes_whose_boundary_is_within_eps(runs):
    """All targets 1, a = 1: the step lowers every image's mean by eps, so an attribute flips to 0 where
    0 < b < eps and keeps its value elsewhere."""
    method = BoundaryShrink(str(runs[1]), eps=0.2)
    b = torch.linspace(-0.5, 0.5, 40)
    method.model.network = MeanLinear(torch.ones(40), b)
    images, targets = torch.zeros(2, 3, 8, 8), torch.ones(2, 40)
    assert torch.equal(method.neighbour_labels(images, targets), (b - 0.2 > 0).float().expand(2, 40))


@pytest.mark.parametrize("neighbour, expected", [("wrong", 0), ("predicted", 2)])
def test_boundary_shrink_s_neighbour_class_is_the_nearest_wrong_or_the_predicted(runs, neighbour, expected):
    """Class 2 is the true one; the step raises the mean by eps: logits (0.25, -0.2, 0.5)."""
    method = BoundaryShrink(str(runs[1]), eps=0.2, neighbour=neighbour)
    method.model.network = MeanLinear(torch.tensor([1.0, -1.0, 0.0]), torch.tensor([0.05, 0.0, 0.5]))
    method.model.hparams["task"] = "classification"
    labels = method.neighbour_labels(torch.zeros(1, 3, 8, 8), torch.tensor([2]))
    assert labels.tolist() == [expected]


def test_boundary_shrink_is_one_step_down_the_loss_of_the_neighbour_labels(runs):
    method = BoundaryShrink(str(runs[1]), lr=0.5)
    images, ids, targets = support(method)
    neighbours = method.neighbour_labels(images, targets)
    assert not torch.equal(neighbours, targets)  # the step crosses some boundaries
    expected = by_hand(method.model.network, images, neighbours, lr=0.5, sign=-1)
    method.forget((images, ids, targets))
    after = weights(method)
    assert all(torch.allclose(after[name], expected[name], atol=1e-6) for name in expected)


def test_slug_s_front_and_layer_on_a_hand_made_table():
    importance = [1.0, 3.0, 2.0, 3.0, 0.5]
    alignment = [0.1, 0.9, 0.5, 0.95, 0.04]  # layer 3 is dominated by 1; 2 is on the front
    assert pareto_front(importance, alignment) == [0, 1, 2, 4]
    assert choose_layer(importance, alignment) == 4  # 0.5 / 0.04 = 12.5, the highest ratio on the front
    assert choose_layer([1.0, 2.0], [0.0, 0.5]) == 0  # no alignment at all ranks first


def test_slug_s_step_is_the_largest_whose_drop_stays_within_the_bound():
    probes = []

    def drop_at(step: float) -> float:
        probes.append(step)
        return 10 * step

    assert search_step(drop_at, 3.0, 1.0, 12) == pytest.approx(0.3, abs=1 / 4096)
    assert 10 * search_step(drop_at, 3.0, 1.0, 12) <= 3.0
    assert search_step(drop_at, 20.0, 1.0, 12) == 1.0 and search_step(drop_at, 0.0, 1.0, 12) == 0.0


def prepared_slug(pretrain, **options) -> SLUG:
    """A SLUG with a check set and a retain gradient made up here (no fit)."""
    method = SLUG(str(pretrain), **options)
    generator = torch.Generator().manual_seed(5)
    size = method.model.hparams.image_size
    images = torch.randint(0, 256, (32, 3, size, size), generator=generator, dtype=torch.uint8)
    method.check_set = CheckSet(images, (torch.rand(32, 40, generator=generator) < 0.4).float())
    method.importance_sum.copy_(torch.randn(method.importance_sum.shape, generator=generator))
    method.batches.fill_(1)
    return method


def moved_by_forget(method) -> list[str]:
    before = weights(method)
    method.forget(support(method))
    return [name for name, value in weights(method).items() if not torch.equal(value, before[name])]


def test_slug_moves_one_weight_matrix_within_the_check_set_s_bound(runs):
    method = prepared_slug(runs[1], max_drop=2.0)
    shapes = {name: param.dim() for name, param in method.model.network.named_parameters()}
    before_score = method.check_score()
    moved = moved_by_forget(method)
    assert len(moved) == 1 and shapes[moved[0]] >= 2
    assert before_score - method.check_score() <= 2.0 + 1e-6
    other = next(name for name, dim in shapes.items() if dim >= 2 and name != moved[0])
    assert moved_by_forget(prepared_slug(runs[1], max_drop=2.0, layer=other)) == [other]
    with pytest.raises(MethodSetupError, match="layer"):
        SLUG(str(runs[1]), layer="no.such.weight")
