"""The contract every unlearning method in one_shui.methods honours, checked on each of them."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from helpers import CONFIGS, QUIET, attach, meta_data, method_args, on_data, quiet_trainer, real_data_args

import one_shui.methods
from one_shui.bench import report
from one_shui.cli import OneShuiCLI
from one_shui.data import IdentityDataModule, datamodule
from one_shui.data.splits import make_split
from one_shui.methods.base import UnlearningMethod
from one_shui.methods.jit import JiT
from one_shui.methods.loading import config_method, method_options
from one_shui.methods.meta_unlearn import MetaUnlearn
from one_shui.methods.no_unlearning import NoUnlearning


def method_classes() -> list[type[UnlearningMethod]]:
    found = set()
    for module in pkgutil.iter_modules(one_shui.methods.__path__):
        for value in vars(importlib.import_module(f"one_shui.methods.{module.name}")).values():
            if (
                isinstance(value, type)
                and issubclass(value, UnlearningMethod)
                and value is not UnlearningMethod
                and not inspect.isabstract(value)  # a base of methods, such as TrainingPass
            ):
                found.add(value)
    return sorted(found, key=lambda cls: cls.__name__)


# A tiny, barely trained model: settings that make each method act on it, quickly (defaults are the paper's).
TINY = {
    "MetaUnlearn": {"hidden": 32},
    "SSD": {"selection_weighting": 1.0},
    "LFSSD": {"selection_weighting": 1.0},
    "SLUG": {"max_drop": 0.05, "max_step": 10.0},
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
    data = meta_data(root, method)  # the data its fit reads, as the CLI builds it
    options = {"enable_checkpointing": False, "default_root_dir": tmp_path}
    if method.train_pool is not None:
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
    before = {name: p.detach().clone() for name, p in method.model.network.named_parameters()}

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

    after = dict(method.model.network.named_parameters())
    moved = {name for name, value in before.items() if not torch.equal(value, after[name])}
    declared = set(method.updated_parameters)
    assert moved <= declared, f"changed parameters it does not declare: {sorted(moved - declared)[:5]}"
    assert bool(moved) == bool(declared)
    assert all(torch.isfinite(p).all() for p in after.values())
    assert torch.isfinite(method.model(support[0])).all()


@pytest.mark.parametrize("method_class", method_classes(), ids=lambda cls: cls.__name__)
def test_a_method_declares_a_preparation_exactly_when_it_has_one(method_class):
    """``train_pool`` is the one declaration of a preparation: a training step without it would never
    run, and a declared pool without a training step would fit nothing."""
    trains = method_class.training_step is not L.LightningModule.training_step
    assert trains == (method_class.train_pool is not None)
    assert method_class.train_pool in (None, "train", "retain", "simulated")
    assert set(method_class.reads) >= {"support"}


@pytest.mark.parametrize("method_class", method_classes(), ids=lambda cls: cls.__name__)
def test_a_method_s_strength_is_one_of_its_options(method_class):
    """Every method that changes the model declares the option that scales its update (its curve's
    strength); one that changes nothing declares none."""
    forgets = method_class.forget is not UnlearningMethod.forget and method_class.__name__ != "NoUnlearning"
    assert (method_class.strength_option is not None) == forgets
    if forgets:
        method_options(method_class, {method_class.strength_option: 1.0}, method_class.__name__)


STRENGTHS = [cls for cls in method_classes() if cls.strength_option is not None]


@pytest.mark.parametrize("method_class", STRENGTHS, ids=lambda cls: cls.__name__)
def test_strength_zero_leaves_the_model_as_it_was_and_one_is_the_method_as_configured(
    method_class, runs, tmp_path
):
    root, pretrain, _ = runs
    method = method_class(str(pretrain), **TINY.get(method_class.__name__, {}))
    data = meta_data(root, method)
    if method.train_pool is not None:
        trainer = quiet_trainer(
            max_epochs=1, limit_train_batches=2, limit_val_batches=0, enable_checkpointing=False,
            reload_dataloaders_every_n_epochs=1, default_root_dir=tmp_path,
        )  # fmt: skip
        trainer.fit(method, datamodule=data)
    attach(method, data)
    support = next(iter(data.loader("support")))
    prepared = {k: v.clone() for k, v in method.state_dict().items()}

    def served(strength: float | None) -> dict[str, torch.Tensor]:
        method.load_state_dict(prepared)
        torch.manual_seed(0)  # the same noise and shuffles for a method that draws any
        with torch.enable_grad():
            method.forget(support) if strength is None else method.forget_at(support, strength)
        return {k: v.clone() for k, v in method.model.state_dict().items()}

    configured, original = (
        served(None),
        {k[len("model.") :]: v for k, v in prepared.items() if k.startswith("model.")},
    )
    assert all(torch.equal(original[k], v) for k, v in served(0.0).items())
    assert all(torch.equal(configured[k], v) for k, v in served(1.0).items())
    assert any(not torch.equal(configured[k], v) for k, v in served(4.0).items())
    assert method.strength == 1.0  # served at 4, then back at the operating point


# Every method that declares it reads no targets, and MetaUnlearn without the targets among its inputs.
CASES = [(cls, TINY.get(cls.__name__, {})) for cls in method_classes() if not cls.reads_targets]
CASES += [(MetaUnlearn, {"hidden": 32, "parts": ["outputs", "features", "identity"]})]


@pytest.mark.parametrize(("method_class", "options"), CASES, ids=[f"{c.__name__}{o}" for c, o in CASES])
def test_a_method_that_declares_it_reads_no_targets_is_blind_to_them(method_class, options, runs, tmp_path):
    """``reads_targets = False`` is a promise: the same support images with the targets zeroed give the
    same model. (A method that reads them is never served made-up ones: see test_forget.)"""
    method = method_class(str(runs[1]), **options)
    assert not method.reads_targets
    if method.train_pool is not None:
        trainer = quiet_trainer(
            max_epochs=1, limit_train_batches=2, limit_val_batches=0, enable_checkpointing=False,
            reload_dataloaders_every_n_epochs=1, default_root_dir=tmp_path,
        )  # fmt: skip
        trainer.fit(method, datamodule=meta_data(runs[0], method))
    prepared = {k: v.clone() for k, v in method.state_dict().items()}
    support = next(iter(meta_data(runs[0]).loader("support")))
    states = []
    for targets in (support[2], torch.zeros_like(support[2])):
        method.load_state_dict(prepared)
        torch.manual_seed(0)  # the same noise for a method that draws any
        with torch.enable_grad():
            method.forget((support[0], support[1], targets))
        states.append({k: v.clone() for k, v in method.model.state_dict().items()})
    assert any(not torch.equal(prepared[f"model.{k}"], v) for k, v in states[0].items()) == bool(
        method.updated_parameters
    )
    assert all(torch.equal(states[0][k], v) for k, v in states[1].items())


def test_a_method_run_serves_the_split_its_pretrain_made_without_making_it_again(runs, monkeypatch):
    """The CLI builds a method's data on the split.json beside its pretrain checkpoint, with the pool its
    preparation declares: the run makes no split. Without that file the data makes it, once, and the
    method checks it is the pretrain's."""
    root, pretrain, _ = runs
    monkeypatch.chdir(root)
    made = []
    monkeypatch.setattr(datamodule, "make_split", lambda *a, **k: made.append(a) or make_split(*a, **k))
    config = CONFIGS / "methods" / "ssd.yaml"
    cli = OneShuiCLI(["fit", *on_data(config), *method_args(root, "once")])
    options = {
        k: cli.datamodule.hparams[k] for k in ("split_file", "train_pool", "augment_train", "batch_size")
    }
    # SSD's I_D: one pass over the training data, with the test transform, in batches of its train_batch_size
    declared = {"train_pool": "train", "augment_train": False, "batch_size": 128}
    assert options == {"split_file": str(pretrain.with_name("split.json")), **declared}
    assert cli.trainer.state.finished and made == []

    moved = root / "moved"
    moved.mkdir(exist_ok=True)
    (moved / "best.ckpt").write_bytes(pretrain.read_bytes())
    elsewhere = f"--model.init_args.pretrain_ckpt={moved / 'best.ckpt'}"
    cli = OneShuiCLI(["fit", *on_data(config), *method_args(root, "made"), elsewhere])
    assert cli.datamodule.hparams.split_file is None and len(made) == 1
    assert cli.datamodule.split == cli.model.split


# --- every method config, end to end ---------------------------------------------------------------


def fit_and_test(config: Path, args: list[str]) -> dict:
    """`one-shui fit` (when the method has a preparation), then `one-shui test`: the results."""
    resume = []
    if config_method(config).train_pool is not None:
        fitted = OneShuiCLI(["fit", *args])
        resume = [f"--ckpt_path={fitted.trainer.checkpoint_callback.last_model_path}"]
    return OneShuiCLI(["test", *args, *resume]).model.results


METHOD_CONFIGS = sorted(CONFIGS.glob("methods/*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("config", METHOD_CONFIGS, ids=lambda p: p.stem)
def test_every_method_config_fits_and_tests_on_the_synthetic_data(config, runs, monkeypatch):
    root = runs[0]
    monkeypatch.chdir(root)
    results = fit_and_test(config, [*on_data(config), *method_args(root, config.stem)])
    assert 0 <= results["tow"] <= 100 and 0 <= results["mia_auc"] <= 1
    assert results["forget_seconds"] > 0
    assert 0 <= results["check/after"] <= 100 and 0 <= results["check/before"] <= 100  # the guard's figures


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["celebahq", "celeba", "mufac"])
def test_every_method_config_runs_on_each_real_layout(dataset, tmp_path, monkeypatch):
    """Each method config fits and tests on a tiny folder of each real dataset's layout (a small model
    stands in for ViT-B/16), its pretrain found in the run layout."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = [*real_data_args(dataset, tmp_path), "--data.init_args.image_size=32"]
    # two batches each (the CLI reads "1" as the float 1.0, which Lightning takes as 100 %)
    args = [
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_test_batches=2",
        *QUIET,
    ]
    recipe = [
        "--config",
        str(CONFIGS / f"train/{dataset}.yaml"),
        "--model",
        str(CONFIGS / "model/vit_cpu.yaml"),
    ]
    OneShuiCLI(["fit", *data, *recipe, *args])
    for config in METHOD_CONFIGS:
        assert "mia_auc" in fit_and_test(config, [*data, "--config", str(config), *args]), config.name


def test_an_rmia_reference_s_test_keeps_the_probabilities_of_the_full_test_and_nothing_else(
    runs, monkeypatch
):
    """The bench's reference cell (the method on the retrained model) serves RMIA only: the same
    probabilities as a full test of it, without the retain pool's forward passes, the MIA or the check set."""
    root, _, retrain = runs
    forwards: list[int] = []

    def tested(reference: bool) -> UnlearningMethod:
        method = JiT(str(retrain), copies=2, reference=reference)
        model_forward = method.model.forward
        monkeypatch.setattr(method.model, "forward", lambda x: forwards.append(len(x)) or model_forward(x))
        torch.manual_seed(0)  # JiT's noise, the same in both
        quiet_trainer().test(method, datamodule=meta_data(root), verbose=False)
        return method

    full = tested(False)
    seen = sum(forwards)
    forwards.clear()
    reference = tested(True)
    assert set(reference.results) == {"probabilities", "reads", "mia_selection", "forget_seconds"}
    for role, probabilities in full.evaluation.probabilities.items():
        np.testing.assert_array_equal(reference.results["probabilities"][role], probabilities)
    data = meta_data(root)
    data.setup()
    check, retain = 2 * len(full.check_set), len(data.rows["retain"])
    assert sum(forwards) == seen - retain - check  # the check set before and after forget, not read


def test_the_bench_s_tow_against_the_retrain_row_is_the_tow_a_test_given_the_retrained_model_computes(runs):
    """The bench computes ToW from a row's utilities and the Retrain row's (report.tow) instead of running
    the retrained model again in every row's test: the same number, to the last bit."""
    root, pretrain, retrain = runs

    def tested(method: UnlearningMethod) -> dict:
        torch.manual_seed(0)
        quiet_trainer().test(method, datamodule=meta_data(root), verbose=False)
        return method.results

    given = tested(JiT(str(pretrain), copies=2, retrain_ckpt=str(retrain)))
    alone = tested(JiT(str(pretrain), copies=2))
    retrain_row = tested(NoUnlearning(str(retrain)))
    metric = JiT(str(pretrain)).evaluation.metric

    def utilities(results: dict) -> dict:
        return {"metrics": {pool: results[f"{pool}/{metric}"] for pool in ("retain", "forget", "test")}}

    assert "tow" in given and "tow" not in alone
    assert report.tow(utilities(alone), utilities(retrain_row)) == given["tow"]
