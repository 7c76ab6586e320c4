"""The relearning attack: a row's model fine-tuned a few steps on the support or on retain photos, and
the share of the memorisation gap that comes back, over the retrained model's."""

from __future__ import annotations

import pytest
import torch
from helpers import meta_data, quiet_trainer

from one_shui.bench import relearning
from one_shui.bench.relearning import Relearning, relearn
from one_shui.methods.base import TEST_POOLS
from one_shui.methods.no_unlearning import NoUnlearning


def as_tested(root, checkpoint) -> tuple[NoUnlearning, dict]:
    """The model of ``checkpoint`` as a row's test leaves it, and the test's loaders by pool."""
    method = NoUnlearning(str(checkpoint))
    trainer = quiet_trainer()
    trainer.test(method, datamodule=meta_data(root), verbose=False)
    return method, dict(zip(TEST_POOLS, trainer.test_dataloaders, strict=True))


def hide(method) -> None:
    """A method that only hides: the head masked, every output 0, the backbone as it was."""
    with torch.no_grad():
        for param in method.model.network.get_classifier().parameters():
            param.zero_()


def test_a_model_that_only_hides_relearns_more_than_the_retrained_model(runs):
    root, pretrain, retrain = runs
    how = Relearning(steps=5, lr=0.1, sample=6)
    hidden, loaders = as_tested(root, pretrain)
    hide(hidden)
    masked = relearning.curves.utilities(hidden, loaders)["forget"]
    retrained, _ = as_tested(root, retrain)
    before = relearning.curves.utilities(retrained, loaders)["forget"]
    regained = {name: after["forget"] - masked for name, after in relearn(hidden, loaders, how, 0).items()}
    baseline = {name: after["forget"] - before for name, after in relearn(retrained, loaders, how, 0).items()}
    for name in relearning.SAMPLES:
        assert regained[name] > baseline[name] + 5


def test_no_step_changes_nothing_and_the_tested_model_its_flags_and_random_stream_are_left_as_they_were(runs):
    root, pretrain, _ = runs
    method, loaders = as_tested(root, pretrain)
    as_it_was = relearning.curves.utilities(method, loaders)
    weights = {k: v.clone() for k, v in method.model.state_dict().items()}
    assert relearn(method, loaders, Relearning(steps=0, lr=0.1, sample=6), 0) == dict.fromkeys(
        relearning.SAMPLES, as_it_was
    )
    state = torch.get_rng_state()
    method.model.requires_grad_(False)  # as a method that froze its weights leaves them (MetaUnlearn)
    moved = relearn(method, loaders, Relearning(steps=3, lr=0.1, sample=6), 0)
    assert all(moved[name] != as_it_was for name in relearning.SAMPLES)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(v, weights[k]) for k, v in method.model.state_dict().items())
    assert not any(param.requires_grad for param in method.model.parameters())


def record(forget: float, support: float, retain: float) -> dict:
    return {
        "metrics": {"forget": forget},
        "relearn": {"support": {"forget": support}, "retain": {"forget": retain}},
    }


def test_the_relearned_share_is_what_came_back_over_the_retrained_model_s_gain_in_the_gap():
    records = {
        (0, "row", "Pretrain", 0): record(90.0, 90.5, 90.0),
        (0, "row", "Retrain", 0): record(80.0, 82.0, 81.0),  # the gap is 10; fine-tuning it gains 2 and 1
        (0, "row", "Hides", 0): record(80.0, 88.0, 80.0),  # 8 back on the support, none on retain
        (0, "reference", "Hides", 0): record(0.0, 0.0, 0.0),  # no row: left out
        (1, "row", "Pretrain", 0): record(90.0, 90.0, 90.0),
        (1, "row", "Retrain", 0): record(89.5, 89.5, 89.5),  # a gap under MIN_GAP: the seed is left out
        (1, "row", "Hides", 0): record(80.0, 88.0, 80.0),
    }
    shares = relearning.shares(records)
    assert set(shares) == {("Pretrain", 0, 0), ("Retrain", 0, 0), ("Hides", 0, 0)}
    hides = shares[("Hides", 0, 0)]  # (8 - 2) / 10 and (0 - 1) / 10 of the 100 % it closed
    assert hides == pytest.approx(
        {"relearned_support": 60.0, "relearned_retain": -10.0, "kept_support": 40.0, "kept_retain": 110.0}
    )
    assert shares[("Retrain", 0, 0)] == pytest.approx(
        {"relearned_support": 0.0, "relearned_retain": 0.0, "kept_support": 100.0, "kept_retain": 100.0}
    )
