"""The distillation helpers of the full-data methods (SCRUB, Bad Teacher) against hand computations (the
harness that runs either method's ``forget`` while recording its passes is in helpers.py)."""

from __future__ import annotations

import math

import pytest
import torch

from one_shui.methods.classifier import NonFiniteLossError
from one_shui.methods.distillation import cosine_sgd, distillation_kl, train_epoch

# --- the KL: softmax over all outputs, at a temperature, summed over the batch / batch size, times T^2 --


def test_kl_matches_a_hand_computation_at_temperature_4():
    # Softened by T = 4, the teacher is uniform and the student puts 1/4, 3/4 on the two outputs:
    # KL = 1/2 ln((1/2)/(1/4)) + 1/2 ln((1/2)/(3/4)) = 1/2 ln(4/3), times T^2 = 16.
    teacher = torch.zeros(2, 2)
    student = torch.tensor([[0.0, 4 * math.log(3)]] * 2)
    assert distillation_kl(student, teacher, temperature=4) == pytest.approx(8 * math.log(4 / 3), rel=1e-6)
    assert distillation_kl(teacher, teacher, temperature=4) == pytest.approx(0.0, abs=1e-7)


def test_kl_of_attribute_outputs_is_over_a_softmax_of_all_of_them():
    # Forty attribute logits: the teacher uniform over the 40, the student with one of them 4x as likely.
    # Over the softmax: KL = 39/40 ln(43/40) + 1/40 ln(43/160); no per-attribute Bernoulli KL gives this.
    teacher = torch.zeros(1, 40)
    student = torch.zeros(1, 40)
    student[0, 7] = 2 * math.log(4)  # at T = 2
    expected = 4 * (39 / 40 * math.log(43 / 40) + 1 / 40 * math.log(43 / 160))
    assert distillation_kl(student, teacher, temperature=2) == pytest.approx(expected, rel=1e-5)


def test_kl_is_summed_over_the_batch_and_divided_by_its_size():
    torch.manual_seed(0)
    teacher, student = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    T = 3.0
    p = torch.exp(teacher / T) / torch.exp(teacher / T).sum(1, keepdim=True)
    q = torch.exp(student / T) / torch.exp(student / T).sum(1, keepdim=True)
    per_sample = (p * torch.log(p / q)).sum(1)
    expected = T**2 * float(per_sample.sum()) / 3
    assert distillation_kl(student, teacher, temperature=T) == pytest.approx(expected, rel=1e-5)
    halves = [distillation_kl(student[i : i + 1], teacher[i : i + 1], T) for i in range(3)]
    assert float(sum(halves)) / 3 == pytest.approx(expected, rel=1e-5)


# --- the schedule and the steps ---------------------------------------------------------------------


def test_cosine_schedule_sets_each_epochs_learning_rate():
    options = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "epochs": 4}
    optimizer, schedule = cosine_sgd([torch.nn.Parameter(torch.zeros(1))], options)
    rates = []
    for _ in range(4):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradient: no change, but the schedule expects a step before its own
        schedule.step()
    # 0.1 * (1 + cos(pi * e / 4)) / 2 for e = 0..3
    assert rates == pytest.approx([0.1, 0.0853553, 0.05, 0.0146447], rel=1e-5)
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["weight_decay"]) == (0.9, 5e-4)


def huge_step(max_grad_norm: float | None) -> float:
    """The norm of one step of plain SGD (lr 10) on a loss whose gradient has norm 1000 * sqrt(2)."""
    weights = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([weights], lr=10.0)
    train_epoch(
        lambda batch: 1000 * weights.sum(), [(torch.zeros(1),)], optimizer, torch.device("cpu"), max_grad_norm
    )
    return float(weights.detach().norm())


def test_clipping_bounds_the_applied_step():
    assert huge_step(None) == pytest.approx(10 * 1000 * math.sqrt(2), rel=1e-6)
    assert huge_step(1.0) == pytest.approx(10.0, rel=1e-5)


def test_a_non_finite_loss_stops_before_the_step():
    weights = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weights], lr=1.0)
    with pytest.raises(NonFiniteLossError, match="lower model.init_args.lr"):
        train_epoch(
            lambda batch: weights.sum() * float("nan"), [(torch.zeros(1),)], optimizer, torch.device("cpu")
        )
    assert torch.equal(weights.detach(), torch.ones(2))
