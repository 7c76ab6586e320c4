"""What the test modules share (no test module imports another; fixtures live in conftest.py): the
configs and the tiny runs' arguments, a quiet Trainer, callbacks that tests hand to `one-shui fit` by class
path (``helpers.<Name>``), tiny folders in the real layouts, the tiny bench, and a harness for the
distillation methods' forget."""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import yaml
from layouts import write_celeba, write_celebahq, write_mufac
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Subset
from torchvision.transforms import v2

from one_shui.bench import cells as cells_module
from one_shui.bench.config import parse
from one_shui.bench.runner import run_bench
from one_shui.cli import OneShuiCLI
from one_shui.data import IdentityDataModule, SyntheticSpec
from one_shui.data.config import data_parser
from one_shui.methods.base import UnlearningMethod

# --- the configs and the tiny runs ------------------------------------------------------------------

CONFIGS = Path(__file__).parents[1] / "configs"
DATA = CONFIGS / "data" / "synthetic.yaml"
# The shipped recipe's stand-in for ImageNet weights, shrunk to a second (8 people, one epoch).
STAND_IN = [f"--model.init_args.stand_in.{key}={value}" for key, value in (("identities", 8), ("epochs", 1))]
PRETRAIN = ["--config", str(DATA), "--config", str(CONFIGS / "train" / "synthetic.yaml"), *STAND_IN]
RETRAIN = [*PRETRAIN, "--data.init_args.train_pool", "retain"]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
META_UNLEARN = CONFIGS / "methods" / "meta_unlearn.yaml"
# The synthetic data of the tiny runs: the shipped config's spec at 40 people, as tiny() makes it.
TINY_SPEC = SyntheticSpec(
    **{**vars(data_parser().parse_args(["--config", str(DATA)]).data.init_args.synthetic), "identities": 40}
)


def tiny(root: str | None = "run", epochs: int = 1, seed: int = 0) -> list[str]:
    """Overrides that shrink the synthetic experiment to a few seconds (in folder ``root``; None: the
    run layout's)."""
    folder = [] if root is None else ["--trainer.default_root_dir", root]
    return [
        *("--data.init_args.synthetic.identities", "40", "--data.init_args.request_size", "3"),
        *("--data.init_args.seed", str(seed), "--seed_everything", str(seed)),
        *("--trainer.max_epochs", str(epochs), "--trainer.limit_train_batches", "2"),
        *("--trainer.limit_val_batches", "1", *folder),
        *QUIET,
    ]


def on_data(config: Path) -> list[str]:
    """A method config stacked on the synthetic data's, as every method run is."""
    return ["--config", str(DATA), "--config", str(config)]


def method_args(root: Path, run: str, epochs: int = 1) -> list[str]:
    """Overrides that point a method run on the synthetic data at the tiny runs of :func:`runs`, for a
    few seconds."""
    return [
        *("--data.init_args.synthetic.identities", "40", "--data.init_args.request_size", "3"),
        f"--model.init_args.pretrain_ckpt={root / 'pre/checkpoints/best.ckpt'}",
        f"--model.init_args.retrain_ckpt={root / 're/checkpoints/best.ckpt'}",
        *("--trainer.max_epochs", str(epochs), "--trainer.limit_train_batches", "2"),
        f"--trainer.default_root_dir={root / run}",
        *QUIET,
    ]


def fit_in(root: Path, *args: str) -> None:
    """`one-shui fit <args>` run in ``root``, with its own audit cache and without W&B."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        patch.setenv("WANDB_MODE", "disabled")
        OneShuiCLI(["fit", *args])


def meta_data(root: Path, method: UnlearningMethod | None = None, **options) -> IdentityDataModule:
    """The tiny runs' data, bound to their split; as ``method``'s preparation reads it, when given (what
    `one-shui fit` does)."""
    return IdentityDataModule(
        "celebahq",
        str(root / "data/synthetic"),
        **{
            "request_size": 3,
            "synthetic": TINY_SPEC,
            "image_size": 32,
            "batch_size": 16,
            "split_file": str(root / "pre/checkpoints/split.json"),
            "cache_dir": str(root / "cache"),
            **(method.data_options(method.hparams) if method else {}),
            **options,
        },
    )


# --- a quiet Trainer and callbacks ------------------------------------------------------------------

EPOCHS_RUN: list[int] = []  # filled by RecordEpochs, read by the tests


def quiet_trainer(**options) -> L.Trainer:
    """A Trainer without logger, progress bar or model summary; ``options`` set the rest."""
    return L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, **options)


class Crash(Callback):
    """Dies at the start of ``epoch``, as a killed process would (after the previous epoch's checkpoint)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError(f"simulated kill at epoch {self.epoch}")


class RecordEpochs(Callback):
    """Appends every epoch that trains to :data:`EPOCHS_RUN`."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        EPOCHS_RUN.append(trainer.current_epoch)


class PoisonWeights(Callback):
    """Turns the model's first parameter into NaN at the start of ``epoch``, so the loss becomes NaN."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


# --- tiny folders in the real layouts ---------------------------------------------------------------


def write_tiny(dataset: str, root: Path) -> dict:
    """A tiny folder of ``dataset`` in its real layout, and the overrides that read it."""
    if dataset == "celebahq":
        write_celebahq(root, {str(i): 3 for i in range(12)})
    elif dataset == "celeba":
        write_celeba(root, {str(1000 + i): 3 for i in range(12)})
        return {"verify_md5": "false"}
    else:
        write_mufac(root, {"train": {f"F{i:04d}_D": "abc" for i in range(12)}})
    return {}


def real_data_args(dataset: str, tmp_path: Path) -> list[str]:
    """The data config of ``dataset`` pointed at a tiny folder in its real layout."""
    options = {
        "root": str(tmp_path / dataset),
        "request_size": "2",
        "batch_size": "2",
        "num_workers": "0",
        **write_tiny(dataset, tmp_path / dataset),
    }
    return ["--config", str(CONFIGS / "data" / f"{dataset}.yaml")] + [
        f"--data.init_args.{k}={v}" for k, v in options.items()
    ]


# --- the tiny bench ---------------------------------------------------------------------------------

METHODS = [("MetaUnlearn", "meta_unlearn"), ("JiT", "jit"), ("Bad Teacher", "bad_teacher")]
# The tiny experiment of tiny(): 40 people, one epoch of two batches.
TINY = [
    "--data.init_args.synthetic.identities=40",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
]


def tiny_recipe(folder: Path) -> Path:
    """The shipped synthetic recipe with its stand-in shrunk to a second (8 people, one epoch)."""
    recipe = yaml.safe_load((CONFIGS / "train/synthetic.yaml").read_text())
    recipe["model"]["init_args"]["stand_in"].update(identities=8, epochs=1)
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def tiny_bench(folder: Path, seeds=(0, 1), methods=METHODS, **fields) -> Path:
    """A bench config of a few seconds a cell on the tiny synthetic data (N = 3, 40 people, 1 epoch)."""
    config = {
        "name": "tiny",
        "request_size": 3,
        "seeds": list(seeds),
        "data": str(CONFIGS / "data/synthetic.yaml"),
        "train": str(tiny_recipe(folder)),
        "evaluate": str(CONFIGS / "methods/no_unlearning.yaml"),
        "methods": [
            {"label": label, "config": str(CONFIGS / f"methods/{name}.yaml")} for label, name in methods
        ],
        "args": TINY,
        "out": str(folder / "outputs"),
        "wandb": {"mode": "disabled"},
        **fields,
    }
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_tiny(folder: Path, **options) -> tuple[Path, Path]:
    """A tiny bench (:func:`tiny_bench` with ``options``) run in ``folder`` with its own audit cache:
    (the folder, its config file)."""
    folder.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("XDG_CACHE_HOME", str(folder / "cache"))
        config = tiny_bench(folder, **options)
        run_bench(parse(["--config", str(config)]))
    return folder, config


def counted_runs(monkeypatch) -> list[str]:
    """The subcommands (``fit``, ``test``) of the `one-shui` runs that the bench's cells make from now on,
    in order, as they run."""
    calls: list[str] = []
    real = cells_module.run_cli
    monkeypatch.setattr(cells_module, "run_cli", lambda *args: calls.append(args[0]) or real(*args))
    return calls


def arguments_of(bench) -> cells_module.Runner:
    """A runner of ``bench`` that only builds its cells' arguments (no data read, nothing run), every stage's
    checkpoint at ``<stage>/best.ckpt``."""
    runner = object.__new__(cells_module.Runner)
    runner.bench = bench
    runner.record = lambda seed, kind, label, *at: {"checkpoint": f"{label}/best.ckpt"}
    return runner


# --- a harness for the distillation methods' forget ------------------------------------------------


class Few(Subset):
    """The first samples of one pool, as a method is served them here."""

    def __init__(self, images, pool: str, samples: int):
        super().__init__(images, range(min(samples, len(images))))
        self.pool = pool


@dataclass
class Pass:
    """One call of train_epoch by a method: the loader, the learning rate then and the clipping."""

    loader: DataLoader
    lr: float
    max_grad_norm: float | None

    @property
    def pools(self) -> list[str]:
        parts = getattr(self.loader.dataset, "datasets", [self.loader.dataset])
        return [part.pool for part in parts]


def attach(method: UnlearningMethod, data) -> None:
    """Give ``method`` the datamodule as a test run would, without running the evaluation."""
    method.trainer = SimpleNamespace(datamodule=data)
    method.setup("test")


def record_passes(monkeypatch, module, samples: int = 3) -> list[Pass]:
    """Serve the methods only the first ``samples`` of each pool, and record every call of
    ``module.train_epoch`` (the real one still runs)."""
    passes = []
    real_epoch, real_images = module.train_epoch, IdentityDataModule.images

    def recording_epoch(loss_of, batches, optimizer, device, max_grad_norm=None):
        passes.append(Pass(batches, optimizer.param_groups[0]["lr"], max_grad_norm))
        return real_epoch(loss_of, batches, optimizer, device, max_grad_norm)

    def few_images(self, pool, train=False):
        return Few(real_images(self, pool, train), pool, samples)

    monkeypatch.setattr(module, "train_epoch", recording_epoch)
    monkeypatch.setattr(IdentityDataModule, "images", few_images)
    return passes


def augmented(dataset) -> bool:
    """Whether ``dataset`` (or the one under a Subset) serves images with the training transform."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset.augment is not None and any(
        isinstance(t, v2.RandomResizedCrop) for t in dataset.augment.transforms
    )


def cosine(lr: float, epoch: int, epochs: int) -> float:
    """The published schedule's learning rate in ``epoch`` (from 0) of ``epochs``."""
    return lr * (1 + math.cos(math.pi * epoch / epochs)) / 2


# --- counting the files a block opens -----------------------------------------------------------------

_COUNTING: list[list[str]] = []  # the lists the audit hook appends to, while a block counts


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _COUNTING and isinstance(args[0], str | bytes | os.PathLike):
        path = os.path.realpath(os.fsdecode(args[0]))
        for opened in _COUNTING:
            opened.append(path)


sys.addaudithook(_audit)  # a hook cannot be removed; this one records only inside `opened_files`


@contextlib.contextmanager
def opened_files() -> Iterator[list[str]]:
    """Every file Python opens in the block (open, Path.read_bytes, torch.load, ...), as its real path,
    in order: ``opened.count(os.path.realpath(path))`` is how often ``path`` was opened."""
    opened: list[str] = []
    _COUNTING.append(opened)
    try:
        yield opened
    finally:
        _COUNTING.remove(opened)
