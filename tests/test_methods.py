"""The contract every unlearning method in one_shui.methods honours, checked on each of them."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
import torch
from conftest import meta_data, method_args
from helpers import quiet_trainer
from test_cli import CONFIGS, QUIET, write_tiny

import one_shui.methods
from one_shui.cli import OneShuiCLI
from one_shui.data import IdentityDataModule
from one_shui.methods.base import UnlearningMethod, config_model, method_class


def method_classes() -> list[type[UnlearningMethod]]:
    found = set()
    for module in pkgutil.iter_modules(one_shui.methods.__path__):
        for value in vars(importlib.import_module(f"one_shui.methods.{module.name}")).values():
            if (
                isinstance(value, type)
                and issubclass(value, UnlearningMethod)
                and value is not UnlearningMethod
            ):
                found.add(value)
    return sorted(found, key=lambda cls: cls.__name__)


# A tiny, barely trained model: settings that make each method act on it, quickly (defaults are the paper's).
TINY = {
    "MetaUnlearn": {"hidden": 32},
    "SSD": {"selection_weighting": 1.0},
    "SCRUB": {"epochs": 1},
    "BadTeacher": {"epochs": 1},
}


def guard_data(monkeypatch, allowed: set[str]) -> None:
    """Make every way to data beyond the ``allowed`` pools fail the test."""
    loader = IdentityDataModule.loader
    images = IdentityDataModule.images

    def refuse(*args, **kwargs):
        raise AssertionError("forget() reached for data it does not declare")

    def only(method):
        def guarded(self, pool, *args, **kwargs):
            if pool not in allowed:
                raise AssertionError(f"forget() read the {pool} pool, which it does not declare")
            return method(self, pool, *args, **kwargs)

        return guarded

    monkeypatch.setattr(IdentityDataModule, "loader", only(loader))
    monkeypatch.setattr(IdentityDataModule, "images", only(images))
    for name in ("train_dataloader", "val_dataloader", "simulated_request_loader"):
        monkeypatch.setattr(IdentityDataModule, name, refuse)


@pytest.mark.parametrize("method_class", method_classes(), ids=lambda cls: cls.__name__)
def test_every_method_honours_the_unlearning_contract(method_class, runs, tmp_path, monkeypatch):
    root, pretrain, _ = runs
    method = method_class(str(pretrain), **TINY.get(method_class.__name__, {}))
    data = meta_data(root, train_pool=method_class.train_pool)
    options = {"enable_checkpointing": False, "default_root_dir": tmp_path}
    if method.has_preparation():
        trainer = quiet_trainer(
            max_epochs=1,
            limit_train_batches=2,
            limit_val_batches=0,
            reload_dataloaders_every_n_epochs=1,
            **options,
        )
        trainer.fit(method, datamodule=data)
        assert all(torch.isfinite(v).all() for v in method.state_dict().values() if v.is_floating_point())
    support = next(iter(data.loader("support")))
    before = {name: p.detach().clone() for name, p in method.model.model.named_parameters()}

    if method.reads == ("support",):  # 1-SHUI: handed the support batch, and nothing else within reach
        method.trainer = None
        guard_data(monkeypatch, allowed=set())
        with torch.enable_grad():
            method.forget(support)
    else:  # a full-data reference row reads the pools it declares, through the test loop
        assert set(method.reads) == {"support", "forget", "retain"}
        forget = method.forget

        def guarded_forget(batch):
            with pytest.MonkeyPatch.context() as patch:
                guard_data(patch, allowed=set(method.reads))
                forget(batch)

        method.forget = guarded_forget
        quiet_trainer(**options).test(method, datamodule=data, verbose=False)

    after = dict(method.model.model.named_parameters())
    moved = {name for name, value in before.items() if not torch.equal(value, after[name])}
    declared = set(method.updated_parameters)
    assert moved <= declared, f"changed parameters it does not declare: {sorted(moved - declared)[:5]}"
    assert bool(moved) == bool(declared)
    assert all(torch.isfinite(p).all() for p in after.values())
    assert torch.isfinite(method.model(support[0])).all()


# --- every method config, end to end ---------------------------------------------------------------


def method_of(config: Path) -> type[UnlearningMethod]:
    return method_class(config_model(config)[0])


def fit_and_test(config: Path, args: list[str]) -> dict:
    """`one-shui fit` (when the method has a preparation), then `one-shui test`: the results."""
    resume = []
    if method_of(config).has_preparation():
        fitted = OneShuiCLI(["fit", "--config", str(config), *args])
        resume = [f"--ckpt_path={fitted.trainer.checkpoint_callback.last_model_path}"]
    return OneShuiCLI(["test", "--config", str(config), *args, *resume]).model.results


@pytest.mark.parametrize("config", sorted(CONFIGS.glob("methods/*_synthetic.yaml")), ids=lambda p: p.stem)
def test_every_synthetic_method_config_fits_and_tests(config, runs, monkeypatch):
    root = runs[0]
    monkeypatch.chdir(root)
    results = fit_and_test(config, method_args(root, config.stem))
    assert 0 <= results["tow"] <= 100 and 0 <= results["mia_auc"] <= 1
    assert results["forget_seconds"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["celebahq", "celeba", "mufac"])
def test_every_real_dataset_method_config_runs_on_its_layout(dataset, tmp_path, monkeypatch):
    """Each method config of a real dataset fits and tests on a tiny folder in the real layout (a small
    model stands in for ViT-B/16)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = {"root": str(tmp_path / dataset), "request_size": "2", "batch_size": "2", "num_workers": "0"}
    data.update(write_tiny(dataset, tmp_path / dataset), image_size="32")
    args = [f"--data.init_args.{k}={v}" for k, v in data.items()]
    # two batches each (the CLI reads "1" as the float 1.0, which Lightning takes as 100 %)
    args += [
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_test_batches=2",
        *QUIET,
    ]
    pretrain = CONFIGS / "pretrain" / f"{dataset}.yaml"
    OneShuiCLI(["fit", "--config", str(pretrain), "--model", str(CONFIGS / "model/vit_cpu.yaml"), *args])
    configs = [c for c in sorted(CONFIGS.glob(f"methods/*_{dataset}.yaml")) if "synthetic" not in c.stem]
    assert len(configs) >= 4
    for config in configs:
        assert "mia_auc" in fit_and_test(config, [*args, "--model.init_args.retrain_ckpt=null"]), config.name
