"""Bad Teacher as published (PROTOCOL §8): each sample's teacher, the shuffled mix of D_r and D_f, the
options reaching the loader, the per-epoch learning rate; run on a few samples of the tiny runs' pools."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import attach, augmented, cosine, meta_data, record_passes

import one_shui.methods.bad_teacher as bad_teacher_module
from one_shui.methods.bad_teacher import BadTeacher


def run_bad_teacher(runs, monkeypatch, **options):
    """Bad Teacher's forget with ``options`` on the first samples of D_r and D_f: the method, its
    passes and its datamodule."""
    method = BadTeacher(str(runs[1]), **options)
    data = meta_data(runs[0], audit=False)
    attach(method, data)
    passes = record_passes(monkeypatch, bad_teacher_module)
    with torch.enable_grad():
        method.forget(None)  # Bad Teacher reads D_r and D_f, not the support batch
    return method, passes, data


def test_forget_samples_take_the_random_teacher_and_retain_samples_the_original(runs, monkeypatch):
    original = BadTeacher(str(runs[1]))
    competent = copy.deepcopy(original.model.network).eval()
    incompetent = original._incompetent_teacher()
    seen = []  # (batch, teacher outputs) of every step
    real_kl = bad_teacher_module.distillation_kl
    real_epoch = bad_teacher_module.train_epoch

    def recording_kl(student, teacher, temperature):
        seen[-1].append(teacher.detach())
        return real_kl(student, teacher, temperature)

    def recording_epoch(loss_of, batches, *args, **kwargs):
        def loss_and_batch(batch):
            seen.append([batch])
            return loss_of(batch)

        return real_epoch(loss_and_batch, batches, *args, **kwargs)

    monkeypatch.setattr(bad_teacher_module, "distillation_kl", recording_kl)
    monkeypatch.setattr(bad_teacher_module, "train_epoch", recording_epoch)
    method, _, data = run_bad_teacher(runs, monkeypatch, epochs=2, unlearning_batch_size=4)
    forget_ids = set(data.row_labels[0][data.rows["forget"]].tolist())
    kinds = []
    with torch.no_grad():
        for (images, identities, _), teacher in seen:
            for image, identity, output in zip(images, identities, teacher, strict=True):
                forgotten = int(identity) in forget_ids
                expected = (incompetent if forgotten else competent)(image[None])[0]
                torch.testing.assert_close(output, expected)
                kinds.append(forgotten)
    assert len(kinds) == 2 * 6 and kinds.count(True) == 2 * 3  # both pools, every sample, every epoch
    assert not method.model.network.training


def test_retain_and_forget_samples_are_shuffled_together(runs, monkeypatch):
    _, passes, _ = run_bad_teacher(runs, monkeypatch, epochs=1, unlearning_batch_size=5)
    (one,) = passes
    assert sorted(one.pools) == ["forget", "retain"]
    assert isinstance(one.loader.sampler, torch.utils.data.RandomSampler)
    assert one.loader.batch_size == 5


@pytest.mark.parametrize("augment", [True, False])
def test_augmentation_reaches_both_pools(runs, monkeypatch, augment):
    _, passes, _ = run_bad_teacher(runs, monkeypatch, epochs=1, augment=augment)
    assert [augmented(part) for part in passes[0].loader.dataset.datasets] == [augment, augment]


def test_the_learning_rate_follows_a_cosine_over_the_epochs(runs, monkeypatch):
    _, passes, _ = run_bad_teacher(runs, monkeypatch, epochs=3, lr=1e-3)
    assert [p.lr for p in passes] == pytest.approx([cosine(1e-3, e, 3) for e in range(3)], rel=1e-6)
    assert all(p.max_grad_norm is None for p in passes)


def test_defaults_are_the_papers_celebahq_n20_setting(runs):
    hp = BadTeacher(str(runs[1])).hparams
    assert (hp.epochs, hp.lr, hp.unlearning_batch_size, hp.augment, hp.temperature) == (
        5,
        1e-4,
        32,
        False,
        1.0,
    )
    assert (hp.momentum, hp.weight_decay) == (0.9, 5e-4)
