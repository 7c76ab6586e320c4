import dataclasses
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import helpers
import pytest
import torch
import yaml
from helpers import CONFIGS, DATA, PRETRAIN, QUIET, RETRAIN, STAND_IN, real_data_args, tiny

from one_shui.checkpoints import CheckpointError, load_checkpoint
from one_shui.cli import OneShuiCLI, main
from one_shui.data import Split, SplitMismatchError
from one_shui.methods.classifier import Classifier
from one_shui.quiet import EXPECTED


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Configs name relative folders (data/, outputs/): run every test in its own directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_MODE", "disabled")


def fit(*args) -> OneShuiCLI:
    return OneShuiCLI(["fit", *map(str, args)])


def fit_error(*args) -> str:
    """The one-line message `one-shui fit` exits with."""
    with pytest.raises(SystemExit) as exit:
        main(["fit", *map(str, args)])
    return str(exit.value.code)


def pretrain(root: str = "pre", **options) -> Path:
    fit(*PRETRAIN, *tiny(root, **options))
    return Path(root) / "checkpoints"


# --- every shipped config -------------------------------------------------------------------------

REAL = ("celebahq", "celeba", "mufac")


def recipe(path: Path) -> list[str]:
    """A training recipe's config, with its stand-in (if it has one) shrunk as in :data:`STAND_IN`."""
    return ["--config", str(path), *(STAND_IN if "stand_in:" in path.read_text() else [])]


def config_args(path: Path) -> list[str]:
    """How a config file is used: after a dataset's data config (a training recipe after its own
    dataset's, a setting file after its setting's and its method's), and presets stacked on the synthetic
    pretrain."""
    group, train = path.parent.name, CONFIGS / "train" / "synthetic.yaml"
    if path.parent.parent.name == "settings":  # after its setting's data config and its method's
        method = CONFIGS / "methods" / path.name
        return ["--config", str(CONFIGS / "data" / f"{group}.yaml"), *recipe(method), "--config", str(path)]
    if group == "data":
        own = CONFIGS / "train" / f"{path.stem}.yaml"
        return ["--config", str(path), *recipe(own if own.is_file() else train)]
    if group in ("train", "methods"):
        data = CONFIGS / "data" / f"{path.stem}.yaml"
        return ["--config", str(data if data.is_file() else DATA), *recipe(path)]
    if group == "model":
        return [*PRETRAIN, "--model", str(path)]
    return [*PRETRAIN, "--config", str(path)]  # trainer presets


ONE_SHUI_CONFIGS = sorted(p for p in CONFIGS.rglob("*.yaml") if p.parent.name not in ("bench", "sweeps"))


@pytest.mark.parametrize("path", ONE_SHUI_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_parses(path, capsys):
    with pytest.raises(SystemExit) as exit:
        OneShuiCLI(["fit", *config_args(path), "--print_config"])
    assert exit.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path: one_shui." in printed and "trainer:" in printed


def test_a_method_config_holds_its_own_options_only():
    """Valid for every dataset: no data, path or seed of its own (a method may set its batch size and its
    fit's trainer options)."""
    for path in sorted(CONFIGS.glob("methods/*.yaml")):
        config = yaml.safe_load(path.read_text())
        assert set(config) <= {"model", "data", "trainer"}, path.name
        assert set(config.get("data", {}).get("init_args", {})) <= {"batch_size"}, path.name
        assert "class_path" not in config.get("data", {}), path.name
        assert "outputs/" not in path.read_text() and "default_root_dir" not in path.read_text(), path.name


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["pretrain", "retrain"])
@pytest.mark.parametrize("dataset", ["synthetic", "synthetic_mufac", *REAL])
def test_every_training_recipe_runs_a_step(dataset, stage, tmp_path):
    """The paper's recipes on tiny folders in their real layout; the synthetic ones as shipped. The
    retrain finds its pretrain's split in the run layout."""
    if dataset in REAL:
        data = real_data_args(dataset, tmp_path)
        training = [*recipe(CONFIGS / "train" / f"{dataset}.yaml"), "--model.init_args.pretrained=false"]
    else:
        data = ["--config", str(CONFIGS / "data" / f"{dataset}.yaml"), *tiny(None)[:4]]
        training = recipe(CONFIGS / "train" / "synthetic.yaml")
    if stage == "retrain":  # its pretrain has only to leave the split in the run layout: two steps, small
        small = (
            ["--model.init_args.backbone=vit_cpu", "--data.init_args.image_size=32"]
            if dataset in REAL
            else []
        )
        fit(*data, *training, *small, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", *QUIET)
    pool = ["--data.init_args.train_pool=retain"] if stage == "retrain" else []
    cli = fit(*data, *training, "--config", CONFIGS / "trainer" / "debug.yaml", *QUIET, *pool)
    assert cli.trainer.state.finished and cli.trainer.global_step == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "preset", sorted(CONFIGS.glob("data/*.yaml")) + sorted(CONFIGS.glob("model/*.yaml")), ids=lambda p: p.name
)
def test_every_data_and_model_preset_runs_a_step(preset, tmp_path):
    debug = ["--config", CONFIGS / "trainer/debug.yaml"]
    if preset.parent.name == "data" and preset.stem in REAL:
        args = [*real_data_args(preset.stem, tmp_path), *recipe(CONFIGS / "train/synthetic.yaml"), *debug]
        args += ["--data.init_args.image_size=32"]
    elif preset.parent.name == "data":
        args = [*config_args(preset), *debug, *tiny()[:4]]
    else:
        args = [*config_args(preset), *debug, "--model.init_args.pretrained=false", *tiny()[:4]]
    cli = fit(*args, *QUIET)
    assert cli.trainer.global_step == 1


# --- pretrain, retrain and their checkpoints ------------------------------------------------------


@pytest.mark.slow
def test_pretrain_writes_its_record_and_retrain_is_bound_to_it():
    folder = pretrain()
    best, split = folder / "best.ckpt", Split.load(folder / "split.json")
    assert (folder / "last.ckpt").is_file() and Path("pre/config.yaml").is_file()

    checkpoint = torch.load(best, weights_only=True)  # plain data and tensors only
    assert checkpoint["one_shui"]["split"]["fingerprint"] == split.fingerprint
    assert checkpoint["one_shui"]["config"]["model"]["init_args"]["backbone"] == "vit_cpu"

    cli = fit(*RETRAIN, *tiny("re"), "--data.init_args.split_file", folder / "split.json")
    assert cli.datamodule.split == split
    retain = cli.datamodule.rows["retain"]
    assert sorted(cli.trainer.train_dataloader.dataset.rows) == sorted(retain)
    assert Split.load("re/checkpoints/split.json") == split

    message = fit_error(*RETRAIN, *tiny("re1", seed=1), "--data.init_args.split_file", folder / "split.json")
    assert message.endswith(
        "was made with seed 0 and request size 3; set data.seed and data.request_size to "
        "those (they are 1 and 3)"
    )
    message = fit_error(*RETRAIN, *tiny("re2"), "--data.init_args.split_file=null")
    assert "must use the split of its pretrain: set data.split_file" in message


@pytest.mark.slow
def test_runs_without_paths_follow_the_run_layout_and_a_given_path_wins(recwarn):
    setting = Path("outputs/synthetic_celebahq/N3-seed0")
    pretrain = fit(*PRETRAIN, *tiny(None))
    assert pretrain.trainer.default_root_dir == str(setting / "pretrain")
    retrain = fit(*RETRAIN, *tiny(None))  # its split: the pretrain's, found in the layout
    assert retrain.datamodule.split == Split.load(setting / "pretrain/checkpoints/split.json")
    assert (setting / "retrain/checkpoints/best.ckpt").is_file()

    ssd = ["--config", DATA, "--config", CONFIGS / "methods/ssd.yaml", *tiny(None)]
    fitted = fit(*ssd)
    assert fitted.model.hparams.pretrain_ckpt == str(setting / "pretrain/checkpoints/best.ckpt")
    tested = OneShuiCLI(["test", *map(str, ssd)])  # the prepared method and the retrained model, found
    assert tested.config.test.ckpt_path == str(setting / "ssd/checkpoints/last.ckpt")
    assert 0 <= tested.model.results["tow"] <= 100
    assert not [w for w in recwarn if "without its preparation" in str(w.message)]

    mine = fit(
        *ssd,
        "--trainer.default_root_dir=mine",
        f"--model.init_args.pretrain_ckpt={setting / 'retrain/checkpoints/best.ckpt'}",
    )
    assert Path("mine/checkpoints/last.ckpt").is_file()
    assert mine.model.hparams.pretrain_ckpt.endswith("retrain/checkpoints/best.ckpt")


def test_checkpoint_round_trip_with_weights_only():
    best = pretrain() / "best.ckpt"
    model = Classifier.from_checkpoint(best)
    trained = Classifier.from_checkpoint(best, split=Split.load("pre/checkpoints/split.json"))
    images = torch.randn(4, 3, 32, 32)
    assert model.hparams.pretrained is False
    torch.testing.assert_close(model(images), trained(images))
    state = load_checkpoint(best)["state_dict"]
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_checkpoints_of_another_split_backbone_or_kind_are_refused(tmp_path):
    best = pretrain() / "best.ckpt"
    other = pretrain("pre1", seed=1) / "split.json"
    with pytest.raises(
        SplitMismatchError, match=r"was made with split .* \(seed 0, N 3\), but this run uses"
    ):
        Classifier.from_checkpoint(best, split=Split.load(other))

    other_dataset = dataclasses.replace(Split.load("pre/checkpoints/split.json"), dataset="mufac")
    with pytest.raises(SplitMismatchError, match="was made with dataset 'celebahq'"):
        Classifier.from_checkpoint(best, split=other_dataset)

    # The CLI takes the model's settings from the checkpoint it resumes; in Python one can mix them up.
    cli = fit(*PRETRAIN, *tiny("again"))
    resnet = Classifier("resnet18", num_classes=40, pretrained=False, image_size=32)
    with pytest.raises(
        CheckpointError, match="holds a 'vit_cpu' model, but this run uses backbone 'resnet18'"
    ):
        cli.trainer.test(resnet, datamodule=cli.datamodule, ckpt_path=best, weights_only=True)

    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, plain)
    with pytest.raises(CheckpointError, match="not a one_shui checkpoint"):
        load_checkpoint(plain)
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(best.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="damaged.ckpt: not a PyTorch checkpoint"):
        load_checkpoint(damaged)
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"one_shui": {}, "payload": Path("x")}, pickled)  # any object beyond plain data
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(pickled)


@pytest.mark.slow
def test_a_run_folder_holding_another_split_is_refused():
    pretrain("pre")
    with pytest.raises(SplitMismatchError, match="default_root_dir to a folder of its own"):
        pretrain("pre", seed=1)
    pretrain("pre")  # the same split may run there again


@pytest.mark.slow
def test_interrupted_fit_resumes_without_repeating_or_losing_an_epoch():
    crash = json.dumps([{"class_path": "helpers.Crash", "init_args": {"epoch": 2}}])
    with pytest.raises(RuntimeError, match="simulated kill at epoch 2"):
        fit(*PRETRAIN, *tiny("run", epochs=4), f"--trainer.callbacks={crash}")
    assert load_checkpoint("run/checkpoints/last.ckpt")["epoch"] == 1

    helpers.EPOCHS_RUN.clear()
    record = json.dumps([{"class_path": "helpers.RecordEpochs"}])
    cli = fit(*PRETRAIN, *tiny("run", epochs=4), f"--trainer.callbacks={record}", "--ckpt_path", "last")
    assert helpers.EPOCHS_RUN == [2, 3]
    assert cli.trainer.global_step == 4 * 2  # four epochs of two batches, none repeated
    assert load_checkpoint("run/checkpoints/last.ckpt")["global_step"] == 4 * 2


@pytest.mark.slow
def test_a_resumed_fit_ends_with_the_weights_of_an_uninterrupted_one():
    """The random state travels in the checkpoint: the shuffles and flips after the resume are the ones
    the uninterrupted fit drew."""
    whole = fit(*PRETRAIN, *tiny("whole", epochs=4)).model.state_dict()
    crash = json.dumps([{"class_path": "helpers.Crash", "init_args": {"epoch": 2}}])
    with pytest.raises(RuntimeError, match="simulated kill at epoch 2"):
        fit(*PRETRAIN, *tiny("resumed", epochs=4), f"--trainer.callbacks={crash}")
    assert load_checkpoint("resumed/checkpoints/last.ckpt")["epoch"] == 1
    resumed = fit(*PRETRAIN, *tiny("resumed", epochs=4), "--ckpt_path", "last").model.state_dict()
    assert all(torch.equal(whole[k], v) for k, v in resumed.items())
    for run in ("whole", "resumed"):  # the latest epoch, whether or not it was the best
        assert load_checkpoint(f"{run}/checkpoints/last.ckpt")["global_step"] == 4 * 2


@pytest.mark.slow
def test_ckpt_path_last_starts_afresh_when_there_is_none():
    with warnings.catch_warnings(record=True) as caught:  # as the filters stand in a run
        cli = fit(*PRETRAIN, *tiny("new"), "--ckpt_path", "last")
    assert cli.trainer.global_step == 2
    # none of the warnings every run would repeat (one_shui.quiet), Lightning's TensorBoard notice among them
    assert not [w for w in caught if any(re.match(p, str(w.message)) for p in EXPECTED)]


@pytest.mark.slow
def test_ckpt_path_last_starts_afresh_from_a_torn_checkpoint_and_says_so(caplog):
    """A fit killed while writing last.ckpt leaves it torn; the next resume must not stop on it."""
    fit(*PRETRAIN, *tiny("torn"))
    Path("torn/checkpoints/last.ckpt").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"torn/checkpoints/last.ckpt is damaged .* starting afresh"):
        cli = fit(*PRETRAIN, *tiny("torn"), "--ckpt_path", "last")
    assert cli.trainer.global_step == 2 and load_checkpoint("torn/checkpoints/last.ckpt")["global_step"] == 2


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(capsys):
    poison = json.dumps([{"class_path": "helpers.PoisonWeights", "init_args": {"epoch": 1}}])
    with pytest.raises(SystemExit) as exit:
        main(["fit", *PRETRAIN, *tiny("nan", epochs=3), f"--trainer.callbacks={poison}"])
    message = str(exit.value.code)
    assert message.startswith("one-shui: the training loss is nan at epoch 1, batch 0")
    assert "nan/checkpoints/last.ckpt" in message and "--ckpt_path last" in message
    last = load_checkpoint("nan/checkpoints/last.ckpt")
    assert last["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())


def test_user_errors_are_one_line_without_traceback():
    with pytest.raises(SystemExit) as exit:
        main(["fit", *PRETRAIN, *tiny(), "--data.init_args.split_file", "missing.json"])
    assert str(exit.value.code) == "one-shui: split file missing.json does not exist"


@pytest.mark.slow
def test_wandb_run_logs_config_metrics_and_split(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cli = fit(*PRETRAIN, "--config", CONFIGS / "trainer" / "wandb.yaml", *tiny("wb"))
    run = cli.trainer.logger.experiment
    try:
        assert run.config["split/fingerprint"] == cli.datamodule.split.fingerprint
        assert run.config["config"]["model"]["init_args"]["backbone"] == "vit_cpu"
        assert run.config["backbone"] == "vit_cpu"  # the module's own hyperparameters
        assert {"val/mAP", "val/loss"} <= set(run.summary.keys())
    finally:
        run.finish()
    assert any(Path("outputs/wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(tmp_path):
    command = Path(sys.executable).with_name("one-shui")
    args = [command, "fit", *PRETRAIN, *tiny("ddp")]
    args += ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    done = subprocess.run(list(map(str, args)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = load_checkpoint(tmp_path / "ddp/checkpoints/last.ckpt")
    assert checkpoint["global_step"] == 2  # two batches per process, gradients averaged across both
    assert (
        checkpoint["one_shui"]["split"]["fingerprint"] == Split.load("ddp/checkpoints/split.json").fingerprint
    )


def test_a_test_prints_its_results_once_and_none_of_lightning_s_noise(capfd):
    checkpoints = pretrain()
    capfd.readouterr()
    OneShuiCLI(["test", *PRETRAIN, *tiny(), "--ckpt_path", str(checkpoints / "best.ckpt")])
    output = "".join(capfd.readouterr())
    lines = output.splitlines()
    assert lines.count("test results") == 1 and "DataLoader" not in output and "💡 Tip" not in output
    assert len([line for line in lines if line.split()[:1] == ["retain/mAP"]]) == 1
    forget = Split.load(checkpoints / "split.json").forget  # each person by the dataset's name
    assert {line.split()[0] for line in lines if line.strip().startswith("forget/mAP/")} == {
        f"forget/mAP/{name}" for name in forget
    }
    capfd.readouterr()
    OneShuiCLI(["test", *PRETRAIN, *tiny(), "--ckpt_path", str(checkpoints / "best.ckpt"), "--verbose=false"])
    assert "test results" not in capfd.readouterr().out
