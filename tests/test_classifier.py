import pytest
import torch
import torch.nn.functional as F
from helpers import quiet_trainer

from one_shui.data import IdentityDataModule, SyntheticSpec
from one_shui.methods.classifier import Classifier
from one_shui.metrics.utility import task_loss, utility_metric
from one_shui.models.schedule import warmup_cosine


def test_utility_is_macro_map_or_accuracy_times_100():
    targets = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]])
    perfect = targets.float() * 2 - 1
    assert utility_metric("multilabel", 2)(perfect, targets).item() == pytest.approx(100)
    # Attribute 0 ranked right; attribute 1 ranks its two positives 3rd and 4th: AP (1/3 + 2/4) / 2.
    mixed = torch.stack([perfect[:, 0], torch.tensor([0.9, 0.1, 0.2, 0.8])], dim=1)
    expected = 100 * (1.0 + (1 / 3 + 2 / 4) / 2) / 2
    assert utility_metric("multilabel", 2)(mixed, targets).item() == pytest.approx(expected)

    # An attribute without positives has no AP: it is left out of the mean, not counted as 0.
    no_positive = torch.tensor([[1, 0], [0, 0], [1, 0], [0, 0]])
    assert utility_metric("multilabel", 2)(perfect, no_positive).item() == pytest.approx(100)

    logits = torch.eye(3)[[0, 1, 2, 0]]
    assert utility_metric("classification", 3)(logits, torch.tensor([0, 1, 2, 2])).item() == pytest.approx(75)


def test_task_loss_is_float32_bce_or_cross_entropy():
    logits = torch.randn(4, 3, dtype=torch.bfloat16)
    multi = torch.randint(0, 2, (4, 3)).float()
    loss = task_loss("multilabel", logits, multi)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logits.float(), multi))
    classes = torch.tensor([0, 2, 1, 1])
    torch.testing.assert_close(
        task_loss("classification", logits, classes), F.cross_entropy(logits.float(), classes)
    )


def test_warmup_then_cosine_to_zero():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = warmup_cosine(optimizer, warmup_steps=4, total_steps=20)
    rates = []
    for _ in range(20):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(0.25) and rates[4] == pytest.approx(1.0)  # full rate after warm-up
    assert all(a < b for a, b in zip(rates[:4], rates[1:5], strict=True))  # rising during warm-up
    assert all(a > b for a, b in zip(rates[4:], rates[5:], strict=False))  # then decaying
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_classification_data_gives_accuracy_on_retain_forget_and_test(tmp_path):
    data = IdentityDataModule(
        "mufac",
        str(tmp_path / "data"),
        request_size=3,
        synthetic=SyntheticSpec(identities=40, image_size=16),
        image_size=16,
        batch_size=16,
        cache_dir=str(tmp_path / "cache"),
    )
    model = Classifier(
        "vit_cpu", num_classes=data.num_classes, task=data.task, pretrained=False, image_size=16
    )
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=data)
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()
    assert 0 <= trainer.callback_metrics["val/acc"] <= 100
    trainer.test(model, datamodule=data, verbose=False)
    results = model.results
    assert {"retain/acc", "forget/acc", "test/acc", "mia_auc", "mia_forget_non_member"} <= set(results)
    people = {k for k in results if k.startswith("forget/acc/")}  # as the dataset names them
    assert people == {f"forget/acc/{name}" for name in data.split.forget}
    assert all(0 <= v <= 100 for k, v in results.items() if "/" in k)
    assert 0 <= results["mia_auc"] <= 1
