"""Tug of War and the loss-based MIA on hand-made inputs whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score
from torchmetrics.functional.classification import multilabel_average_precision

from one_shui.metrics.evaluation import Evaluation
from one_shui.metrics.mia import MIAResult, loss_mia, published_loss_mia
from one_shui.metrics.tow import tug_of_war

RETRAINED = {"retain": 90.0, "forget": 40.0, "test": 45.0}


def test_tow_is_100_for_the_retrained_model_itself():
    assert tug_of_war(RETRAINED, dict(RETRAINED)) == 100.0


def test_tow_matches_the_hand_computed_product():
    model = {"retain": 80.0, "forget": 60.0, "test": 45.0}
    assert math.isclose(tug_of_war(model, RETRAINED), 100 * 0.9 * 0.8 * 1.0)  # 72
    # Only the pools asked for count; extra keys are ignored.
    assert math.isclose(tug_of_war({**model, "val": 3.0}, RETRAINED, pools=("forget",)), 80.0)


def test_tow_is_0_when_a_pool_is_100_points_off():
    assert tug_of_war({"retain": 0.0, "forget": 40.0, "test": 45.0}, {**RETRAINED, "retain": 100.0}) == 0.0


@pytest.mark.parametrize("side", ["model", "retrained"])
def test_tow_names_the_missing_pool(side):
    partial = {"retain": 90.0, "test": 45.0}
    metrics, retrained = (partial, RETRAINED) if side == "model" else (RETRAINED, partial)
    with pytest.raises(ValueError, match=rf"'forget'.*{side}"):
        tug_of_war(metrics, retrained)


@pytest.mark.parametrize("bad", [120.0, -1.0, float("nan"), float("inf")])
def test_tow_names_the_pool_and_value_out_of_range(bad):
    with pytest.raises(ValueError, match=rf"'test'\] = {bad!r}"):
        tug_of_war({**RETRAINED, "test": bad}, RETRAINED)


def test_tow_rejects_no_pools():
    with pytest.raises(ValueError, match="pools"):
        tug_of_war(RETRAINED, RETRAINED, pools=())


def pools(forget_like_non_members: bool, n: int = 2000, seed: int = 0):
    """Members' losses near 0, non-members' large; forget either like the members or like the non-members."""
    rng = np.random.default_rng(seed)
    retain, val, test = rng.exponential(0.05, n), 2.0 + rng.exponential(1.0, n), 2.0 + rng.exponential(1.0, n)
    forget = 2.0 + rng.exponential(1.0, n) if forget_like_non_members else rng.exponential(0.05, n)
    return retain, val, forget, test


def test_mia_separates_well_separated_losses():
    result = loss_mia(*pools(forget_like_non_members=False))
    assert result.auc > 0.99
    assert result.forget_non_member < 1.0
    assert result.fpr[0] == 0.0 and result.tpr[-1] == 1.0


def test_mia_cannot_tell_forget_from_test_when_they_look_alike():
    result = loss_mia(*pools(forget_like_non_members=True))
    assert abs(result.auc - 0.5) < 0.05
    assert result.forget_non_member > 70.0


def test_mia_is_chance_when_forget_and_test_share_one_overlapping_distribution():
    # Members and non-members overlap, so the forest's scores vary; forget and TEST still look alike.
    rng = np.random.default_rng(1)
    retain, val, forget, test = (rng.exponential(scale, 2000) for scale in (0.5, 1.0, 1.0, 1.0))
    result = loss_mia(retain, val, forget, test)
    assert len(np.unique(result.fpr)) > 10  # a real curve, not one tied score
    assert abs(result.auc - 0.5) < 0.05


def test_mia_balances_classes_and_states_the_rule():
    rng = np.random.default_rng(2)
    retain, forget = rng.exponential(0.05, 1000), rng.exponential(0.05, 300)
    val, test = 2.0 + rng.exponential(1.0, 100), 2.0 + rng.exponential(1.0, 500)
    result = loss_mia(retain, val, forget, test, seed=7)
    rule = result.selection_rule
    assert "100 retain (of 1000)" in rule and "100 VAL (of 100)" in rule
    assert "300 forget (of 300)" in rule and "300 TEST (of 500)" in rule
    assert "default_rng(7)" in rule and "all 300 forget" in rule
    assert result == loss_mia(retain, val, forget, test, seed=7)
    assert result.to_dict() == {
        "mia_auc": result.auc,
        "mia_forget_non_member": result.forget_non_member,
        "mia_selection_rule": rule,
    }
    assert isinstance(result, MIAResult) and 0.0 <= result.auc <= 1.0


def test_mia_result_depends_on_the_seed():
    # Overlapping pools, so the drawn subsamples and the forest's seed change its scores.
    rng = np.random.default_rng(3)
    retain, val, forget, test = (
        rng.exponential(scale, n) for scale, n in ((0.5, 1000), (1, 100), (0.5, 50), (1, 400))
    )
    assert loss_mia(retain, val, forget, test, seed=0) != loss_mia(retain, val, forget, test, seed=1)


@pytest.mark.parametrize("pool", ["retain", "val", "forget", "test"])
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([], "empty"),
        ([0.1, float("nan")], "non-finite"),
        ([0.1, float("inf")], "non-finite"),
        ([[0.1]], "1-D"),
    ],
)
def test_mia_names_the_bad_pool(pool, bad, message):
    inputs = {"retain": [0.1, 0.2], "val": [1.0, 2.0], "forget": [0.1, 0.3], "test": [1.5, 2.5], pool: bad}
    with pytest.raises(ValueError, match=rf"{pool} losses.*{message}"):
        loss_mia(**inputs)


def test_mia_accepts_torch_tensors():
    arrays = pools(forget_like_non_members=False, n=300)
    tensors = [
        torch.from_numpy(a).to(torch.bfloat16 if i == 0 else torch.float32) for i, a in enumerate(arrays)
    ]
    from_torch = loss_mia(*tensors)
    assert from_torch.auc > 0.99
    as_numpy = [t.double().numpy() for t in tensors]
    assert from_torch == loss_mia(*as_numpy)


def test_published_mia_reports_the_forest_that_calls_most_forget_samples_non_member():
    """PROTOCOL §8: six unbalanced forests, the reported one chosen on the evaluated pools themselves."""
    rng = np.random.default_rng(3)
    retain, val = rng.normal(0.2, 0.3, 300), rng.normal(1.0, 0.5, 80)  # unequal sizes: no balancing
    forget, test = rng.normal(0.5, 0.4, 40), rng.normal(1.0, 0.5, 90)
    x = np.concatenate([retain, val])[:, None]
    y = np.r_[np.ones(len(retain)), np.zeros(len(val))]
    candidates = []
    for trees in (20, 50, 100):
        for criterion in ("gini", "entropy"):
            forest = RandomForestClassifier(n_estimators=trees, criterion=criterion, random_state=0).fit(x, y)
            share = 100 * np.mean(forest.predict(forget[:, None]) == 0)
            scores = forest.predict_proba(np.r_[forget, test][:, None])[:, 1]
            candidates.append((share, roc_auc_score(np.r_[np.ones(40), np.zeros(90)], scores)))
    best = max(candidates, key=lambda c: c[0])  # max keeps the first of equal shares, as the loop does
    result = published_loss_mia(retain, val, forget, test)
    assert result.forget_non_member == pytest.approx(best[0])
    assert result.auc == pytest.approx(best[1])
    assert "evaluated" in result.selection_rule and "not balanced" in result.selection_rule
    assert result != loss_mia(retain, val, forget, test)


def test_published_mia_reports_auc_0_when_no_forest_calls_a_forget_sample_non_member():
    rng = np.random.default_rng(0)
    retain, val = rng.normal(0, 0.1, 100), rng.normal(5, 0.1, 100)
    result = published_loss_mia(retain, val, forget=rng.normal(0, 0.05, 20), test=rng.normal(5, 0.1, 20))
    assert result.forget_non_member == 0 and result.auc == 0


def test_bf16_metrics_rank_bfloat16_probabilities_as_published():
    """Near-certain attributes tie once their probabilities are bfloat16: the published mAP sees the ties."""
    targets = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]])
    logits = torch.tensor([[6.0, -1.0], [6.1, 0.5], [6.2, 2.0], [-1.0, 1.0]])
    exact = Evaluation("multilabel", 2)._utility(logits, targets)
    published = Evaluation("multilabel", 2, precision="bf16")._utility(logits, targets)
    probabilities = logits.to(torch.bfloat16).sigmoid().float()
    expected = 100 * multilabel_average_precision(probabilities, targets, num_labels=2)
    assert published == pytest.approx(float(expected))
    assert published != pytest.approx(exact)
