"""The distillation KL of the full-data methods against the divergences it stands for, by brute force."""

from __future__ import annotations

import itertools

import pytest
import torch

from one_shui.methods.distillation import distillation_kl


def joint_kl(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """KL between the distributions over whole attribute vectors (independent Bernoullis), enumerated."""
    total = torch.zeros(())
    for outcome in itertools.product([0.0, 1.0], repeat=teacher.shape[1]):
        y = torch.tensor(outcome)
        p = (torch.sigmoid(teacher) ** y * torch.sigmoid(-teacher) ** (1 - y)).prod(1)
        q = (torch.sigmoid(student) ** y * torch.sigmoid(-student) ** (1 - y)).prod(1)
        total = total + (p * (p.log() - q.log())).sum()
    return total / teacher.shape[0]


def test_multilabel_kl_is_the_kl_of_the_joint_attribute_distribution():
    torch.manual_seed(0)
    teacher, student = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    expected = joint_kl(teacher, student)
    assert distillation_kl(student, teacher, "multilabel") == pytest.approx(float(expected), rel=1e-5)
    assert distillation_kl(teacher, teacher, "multilabel") == pytest.approx(0.0, abs=1e-6)


def test_classification_kl_is_over_the_classes():
    torch.manual_seed(0)
    teacher, student = torch.randn(6, 3), torch.randn(6, 3)
    p, q = teacher.softmax(1), student.softmax(1)
    expected = (p * (p.log() - q.log())).sum(1).mean()
    assert distillation_kl(student, teacher, "classification") == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("task", ["multilabel", "classification"])
def test_temperature_softens_and_scales_by_its_square(task):
    torch.manual_seed(0)
    teacher, student = torch.randn(6, 3), torch.randn(6, 3)
    softened = distillation_kl(student / 4, teacher / 4, task)
    assert distillation_kl(student, teacher, task, temperature=4) == pytest.approx(16 * float(softened))
