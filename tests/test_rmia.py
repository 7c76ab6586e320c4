"""RMIA (offline): the scores against their definition by brute force, and the attack's extremes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from one_shui.metrics.rmia import ROLES, rmia, rmia_scores, true_label_probability


def pools(rng: np.random.Generator, sizes=(30, 40, 50)) -> dict[str, np.ndarray]:
    return {pool: rng.uniform(0.01, 1.0, size) for pool, size in zip(ROLES, sizes, strict=True)}


def brute_force_score(x: int, pool: str, target, reference, a: float, gamma: float) -> float:
    def ratio(p, q):
        return p / (((1 + a) * q + (1 - a)) / 2)

    mine = ratio(target[pool][x], reference[pool][x])
    population = [ratio(p, q) for p, q in zip(target["population"], reference["population"], strict=True)]
    return sum(mine / z > gamma for z in population) / len(population)


@pytest.mark.parametrize(("a", "gamma"), [(1.0, 1.0), (0.3, 1.0), (0.5, 2.0)])
def test_scores_follow_the_definition(a, gamma):
    rng = np.random.default_rng(0)
    target, reference = pools(rng), pools(rng)
    scores = rmia_scores(target, reference, a, gamma)
    for pool in ("forget", "test"):
        expected = [brute_force_score(x, pool, target, reference, a, gamma) for x in range(target[pool].size)]
        np.testing.assert_allclose(scores[pool], expected)


def test_a_model_that_favours_its_members_is_caught_and_one_that_does_not_is_not():
    rng = np.random.default_rng(1)
    reference = pools(rng, (40, 60, 80))
    remembers = {pool: reference[pool] for pool in ROLES}
    remembers["forget"] = np.minimum(1.0, reference["forget"] * 3)
    caught = rmia(remembers, reference, offline_a=1.0)
    assert caught.auc == 1.0 and caught.tpr_at_low_fpr == 100.0
    assert caught.low_fpr == pytest.approx(1 / 60)
    forgot = rmia(reference, reference, offline_a=1.0)  # the target is the reference: nothing to tell
    assert forgot.auc == 0.5 and forgot.tpr_at_low_fpr == 0.0


def test_true_label_probability_is_of_the_class_or_of_the_whole_attribute_vector():
    torch.manual_seed(0)
    logits, attributes = torch.randn(4, 3), torch.randint(0, 2, (4, 3))
    p = torch.sigmoid(logits.double())
    expected = torch.where(attributes.bool(), p, 1 - p).prod(1)
    torch.testing.assert_close(true_label_probability(logits, attributes, "multilabel"), expected)
    classes = torch.tensor([0, 2, 1, 2])
    expected = logits.double().softmax(1)[torch.arange(4), classes]
    torch.testing.assert_close(true_label_probability(logits, classes, "classification"), expected)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.update(test=np.array([])), "probabilities of test must be a non-empty 1-D array"),
        (lambda t: t.update(forget=np.array([0.5, np.nan])), "of forget must lie in (0, 1]"),
        (lambda t: t.update(population=np.array([0.0, 0.5])), "of population must lie in (0, 1]"),
        (lambda t: t.update(forget=np.array([0.5])), "forget has 1 target and 30 reference"),
    ],
)
def test_bad_inputs_are_refused_naming_the_pool(change, message):
    rng = np.random.default_rng(2)
    target, reference = pools(rng), pools(rng)
    change(target)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rmia(target, reference, offline_a=0.5)
