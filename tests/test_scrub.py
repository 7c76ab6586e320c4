"""SCRUB as published (PROTOCOL §8): which passes it makes in which epoch, at which learning rate, with
which clipping, over which loaders; run on a few samples of the tiny runs' pools."""

from __future__ import annotations

import pytest
import torch
from helpers import attach, augmented, cosine, meta_data, record_passes

import one_shui.methods.scrub as scrub_module
from one_shui.errors import SettingError
from one_shui.methods.scrub import SCRUB


def run_scrub(runs, monkeypatch, **options):
    """SCRUB's forget with ``options`` on the first samples of D_f and D_r: the method and its passes."""
    method = SCRUB(str(runs[1]), **options)
    attach(method, meta_data(runs[0], audit=False))
    passes = record_passes(monkeypatch, scrub_module)
    with torch.enable_grad():
        method.forget(None)  # SCRUB reads D_f and D_r, not the support batch
    return method, passes


def test_max_steps_only_in_the_first_max_step_epochs_and_min_steps_in_every_epoch(runs, monkeypatch):
    method, passes = run_scrub(runs, monkeypatch, epochs=4, max_step_epochs=2)
    assert [p.pools for p in passes] == [
        ["forget"],
        ["retain"],
        ["forget"],
        ["retain"],
        ["retain"],
        ["retain"],
    ]
    assert [p.max_grad_norm for p in passes if p.pools == ["forget"]] == [1.0, 1.0]  # clipped at 1
    assert all(p.max_grad_norm is None for p in passes if p.pools == ["retain"])
    assert not method.model.network.training


def test_the_learning_rate_follows_a_cosine_over_the_epochs(runs, monkeypatch):
    _, passes = run_scrub(runs, monkeypatch, epochs=3, max_step_epochs=3, lr=0.01)
    epoch_of_pass = [0, 0, 1, 1, 2, 2]  # a max-step pass, then a min-step pass, in each epoch
    expected = [cosine(0.01, epoch, 3) for epoch in epoch_of_pass]
    assert [p.lr for p in passes] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("augment", [True, False])
def test_batch_size_and_augmentation_reach_the_shuffled_loaders(runs, monkeypatch, augment):
    _, passes = run_scrub(
        runs, monkeypatch, epochs=1, max_step_epochs=1, unlearning_batch_size=2, augment=augment
    )
    assert len(passes) == 2
    for p in passes:
        assert p.loader.batch_size == 2
        assert isinstance(p.loader.sampler, torch.utils.data.RandomSampler)
        assert augmented(p.loader.dataset) == augment


def test_defaults_are_the_papers_celebahq_n20_setting(runs):
    hp = SCRUB(str(runs[1])).hparams
    assert (hp.epochs, hp.max_step_epochs, hp.lr, hp.unlearning_batch_size, hp.augment) == (
        10,
        5,
        1e-2,
        32,
        True,
    )
    assert (hp.temperature, hp.kl_weight, hp.task_weight, hp.max_grad_norm) == (4.0, 0.001, 0.99, 1.0)
    assert (hp.momentum, hp.weight_decay) == (0.9, 5e-4)


@pytest.mark.parametrize("option", [{"unlearning_batch_size": 0}, {"max_grad_norm": 0.0}, {"lr": -1.0}])
def test_options_out_of_range_are_refused(runs, option):
    with pytest.raises(SettingError, match=f"model.init_args.{next(iter(option))}"):
        SCRUB(str(runs[1]), **option)
