"""UnlearningMethod: the one interface every unlearning method implements.

``fit`` is the method's preparation (it may read training data, before that data is gone);
``forget(support)`` is the unlearning step and receives only the support images, their targets and
identity ids; ``test`` runs ``forget`` on the datamodule's support pool, then the shared evaluation,
with ToW against the retrained model of the same split.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import time
from pathlib import Path
from typing import ClassVar

import jsonargparse
import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

from ..checkpoints import (
    RECORD_KEY,
    CheckpointError,
    checkpoint_dir,
    checkpoint_split,
    load_checkpoint,
    sha256_of,
)
from ..data.datamodule import TEST_SETS
from ..metrics.evaluation import Evaluation
from ..metrics.tow import POOLS
from .classifier import Classifier

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # images, identity ids, targets


class UnknownIdentityError(ValueError):
    """A forget request names someone the model was not trained on."""


class MethodSetupError(ValueError):
    """A method is set up with a config, data or trainer settings it cannot work with."""


class UnlearningMethod(L.LightningModule):
    """Holds the original model, loaded from a pretrain checkpoint, and unlearns it in place.

    Args:
        pretrain_ckpt: the original model; its split is the one every later step must use.
        retrain_ckpt: the retrained model of the same split, for ToW (optional).
        num_classes, task, image_size: linked from the data by the CLI; checked against the checkpoint.

    A method whose ``forget`` reads more than the support set says so in :attr:`reads`; the
    evaluation records it. A method takes its own options after ``pretrain_ckpt``, keyword-only, and
    passes the others on as ``**kwargs`` (LightningCLI resolves them from this signature).
    """

    reads: ClassVar[tuple[str, ...]] = ("support",)  # what forget() reads: 1-SHUI allows the support set only
    train_pool: ClassVar[str] = "train"  # the datamodule's train_pool that fit() reads

    def __init__(
        self,
        pretrain_ckpt: str,
        *,
        retrain_ckpt: str | None = None,
        num_classes: int | None = None,
        task: str | None = None,
        image_size: int | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        checkpoint = load_checkpoint(pretrain_ckpt)  # read once: the split and the model
        self.split = checkpoint_split(checkpoint, pretrain_ckpt)
        self.model = Classifier.from_record(checkpoint, pretrain_ckpt)
        self.original_sha256 = sha256_of(pretrain_ckpt)
        # Identity ids are indices into every identity of the dataset, sorted (the datamodule's order).
        self.identities = sorted({*self.split.train, *self.split.val, *self.split.test})
        expected = {"num_classes": num_classes, "task": task, "image_size": image_size}
        for name, value in expected.items():
            if value is not None and self.model.hparams[name] != value:
                raise MethodSetupError(
                    f"{pretrain_ckpt} holds a model with {name} {self.model.hparams[name]!r}, but the data "
                    f"gives {value!r}: use the data the model was trained on"
                )
        self._retrained = {}  # not a submodule: kept out of this method's checkpoints
        self._prepared = False  # whether fit ran or a prepared checkpoint was loaded
        self._forget_seconds = float("nan")
        self.evaluation = Evaluation(self.model.hparams.task, self.model.hparams.num_classes)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, pretrain_ckpt: str | os.PathLike | None = None
    ) -> UnlearningMethod:
        """The prepared method of ``path`` (what its ``fit`` wrote), on the original model it was
        prepared from: ``pretrain_ckpt``, by default the path recorded when it was prepared."""
        checkpoint = load_checkpoint(path)
        method = _method_class(checkpoint, str(path), cls)
        hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
        original = Path(pretrain_ckpt or hparams["pretrain_ckpt"])
        if not original.is_file():
            raise FileNotFoundError(
                f"{path} was prepared on the pretrain checkpoint {original}, which is not there: "
                f"give the path of that checkpoint"
            )
        prepared = method(**{**hparams, "pretrain_ckpt": str(original), "retrain_ckpt": None})
        prepared.on_load_checkpoint(checkpoint)
        prepared.load_state_dict(checkpoint["state_dict"])
        return prepared.eval()

    @classmethod
    def from_config(cls, path: str | os.PathLike, pretrain_ckpt: str | os.PathLike) -> UnlearningMethod:
        """A method with nothing to prepare, built from the ``model`` section of its YAML config (as
        ``configs/methods/jit_celebahq.yaml``) on the original model ``pretrain_ckpt``."""
        path = Path(path)
        name, options = config_model(path)
        method = method_class(name, cls)
        if method is None:
            raise MethodSetupError(f"{path}: model.class_path {name!r} is not a one_shui {cls.__name__}")
        if method.has_preparation():
            raise MethodSetupError(
                f"{path}: {method.__name__} must be prepared first: run `one-shui fit --config {path}` "
                f"and give the checkpoints/last.ckpt it writes"
            )
        options = {k: v for k, v in options.items() if k not in ("pretrain_ckpt", "retrain_ckpt")}
        parser = jsonargparse.ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(method)
        try:
            arguments = parser.parse_object({**options, "pretrain_ckpt": str(pretrain_ckpt)}).as_dict()
        except jsonargparse.ArgumentError as err:
            raise MethodSetupError(f"{path}: {' '.join(str(err).split())}") from None
        return method(**arguments).eval()

    @classmethod
    def class_path(cls) -> str:
        """The method's "module.Class", as checkpoints and receipts name it (the inverse of method_class)."""
        return f"{cls.__module__}.{cls.__qualname__}"

    @classmethod
    def has_preparation(cls) -> bool:
        """Whether the method has a ``fit`` (a training step) to run before it can forget."""
        return cls.training_step is not L.LightningModule.training_step

    @property
    def backbone(self) -> str:
        return self.model.hparams.backbone

    @property
    def needs_targets(self) -> bool:
        """Whether ``forget`` reads the targets of the support images (else they may be zeros)."""
        return False

    def forget(self, support: Batch) -> None:
        """Unlearn the people of ``support`` from ``self.model``, in place, reading nothing else."""
        raise NotImplementedError

    @property
    def updated_parameters(self) -> tuple[str, ...]:
        """The names of the backbone's parameters that ``forget`` may change (all, unless said)."""
        return tuple(name for name, _ in self.model.model.named_parameters())

    def identity_ids(self, names: list[str]) -> torch.Tensor:
        """The identity ids of people the model was trained on; anyone else is refused by name."""
        trained = set(self.split.train)
        unknown = [name for name in names if name not in trained]
        if unknown:
            raise UnknownIdentityError(
                f"identities {', '.join(map(repr, unknown))} are not among the {len(trained)} people the "
                f"model was trained on (split {self.split.fingerprint}): there is nothing of them to forget"
            )
        position = {name: k for k, name in enumerate(self.identities)}
        return torch.tensor([position[name] for name in names], dtype=torch.long)

    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule
        data.setup(stage)
        self.split.require_same(data.split, "the pretrain checkpoint")
        if stage == "fit" and data.hparams.train_pool != self.train_pool:
            raise MethodSetupError(
                f"{type(self).__name__}'s fit reads data.train_pool: {self.train_pool} (it is "
                f"{data.hparams.train_pool!r}); set it in the data config"
            )

    # --- the prepared method's checkpoint ---------------------------------------------------------

    def configure_callbacks(self) -> list:
        """``fit`` keeps its last state as ``checkpoints/last.ckpt``: the prepared method (unless the
        trainer's checkpointing is off)."""
        if not self.trainer.checkpoint_callbacks:
            return []
        folder = checkpoint_dir(self.trainer)
        return [ModelCheckpoint(folder, save_top_k=0, save_last=True, enable_version_counter=False)]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The original model stays in its pretrain checkpoint; this one holds what fit prepared.
        state = checkpoint["state_dict"]
        checkpoint["state_dict"] = {k: v for k, v in state.items() if not k.startswith("model.")}
        checkpoint.setdefault(RECORD_KEY, {}).update(
            method=self.class_path(), original_sha256=self.original_sha256
        )

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        record = checkpoint.get(RECORD_KEY, {})
        source = f"the {type(self).__name__} checkpoint"
        if record.get("original_sha256") != self.original_sha256:
            raise CheckpointError(
                f"{source} was prepared on another original model than {self.hparams.pretrain_ckpt}: "
                f"use the pretrain checkpoint it was prepared from"
            )
        self.split.require_same(checkpoint_split(checkpoint, source), source)
        original = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        checkpoint["state_dict"] = {**checkpoint["state_dict"], **original}
        self._prepared = True

    def on_train_end(self) -> None:
        self._prepared = True

    # --- test: forget, then the shared evaluation ---------------------------------------------

    def on_test_start(self) -> None:
        if self.has_preparation() and not self._prepared:
            rank_zero_warn(
                f"{type(self).__name__} is tested without its preparation: fit it first, or pass the "
                f"checkpoint its fit wrote (--ckpt_path <run>/checkpoints/last.ckpt)"
            )
        data = self.trainer.datamodule
        support = data.loader("support", batch_size=len(data.rows["support"]))
        # Lightning tests under inference mode; forget() differentiates, so its batch is made outside it.
        with torch.inference_mode(False), torch.enable_grad():
            batch = tuple(t.to(self.device) for t in next(iter(support)))
            start = time.perf_counter()
            self.forget(batch)
            self._forget_seconds = time.perf_counter() - start
        for logger in self.loggers:
            logger.log_hyperparams({"forget_reads": ",".join(self.reads)})
        if self.hparams.retrain_ckpt:
            retrained = Classifier.from_checkpoint(self.hparams.retrain_ckpt, split=self.split)
            self._retrained = {
                "model": retrained.to(self.device),
                "evaluation": Evaluation(retrained.hparams.task, retrained.hparams.num_classes),
            }

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        images, identities, targets = batch
        pool = TEST_SETS[dataloader_idx]
        self.evaluation.update(pool, self.model(images), targets, identities)
        if self._retrained and pool in POOLS:
            self._retrained["evaluation"].update(pool, self._retrained["model"](images), targets, identities)

    def on_test_epoch_end(self) -> None:
        retrained = None
        if self._retrained:
            retrained = self._retrained["evaluation"].utilities()
        self.results = self.evaluation.log(self, retrained)
        self.results["reads"] = ",".join(self.reads)
        self.results["forget_seconds"] = self._forget_seconds


def config_model(path: str | os.PathLike) -> tuple[str, dict]:
    """The ``model`` class path and init_args of a YAML config."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"method config {path} does not exist")
    try:
        model = yaml.safe_load(path.read_text(encoding="utf-8"))["model"]
        return str(model["class_path"]), dict(model.get("init_args") or {})
    except (yaml.YAMLError, UnicodeDecodeError, TypeError, KeyError, ValueError) as err:
        raise MethodSetupError(f"{path}: not a method config with a model.class_path ({err!r})") from None


def method_class(name: str, base: type[UnlearningMethod] | None = None) -> type[UnlearningMethod] | None:
    """The class ``name`` ("module.Class") when it is a ``base`` (by default any unlearning method) of
    one_shui.methods; else None. Nothing outside one_shui.methods is ever imported."""
    module, _, cls = name.rpartition(".")
    method = None
    if module.startswith(f"{__package__}."):
        with contextlib.suppress(ImportError):
            method = getattr(importlib.import_module(module), cls, None)
    return method if isinstance(method, type) and issubclass(method, base or UnlearningMethod) else None


def _method_class(checkpoint: dict, source: str, base: type[UnlearningMethod]) -> type[UnlearningMethod]:
    """The class a prepared checkpoint names: a ``base`` among the classes of one_shui.methods only."""
    name = checkpoint[RECORD_KEY].get("method")
    if name is None:
        raise CheckpointError(
            f"{source}: not a prepared unlearning method (a pretrain or retrain model?): give the "
            f"checkpoints/last.ckpt that the method's fit wrote"
        )
    method = method_class(name, base)
    if method is None:
        raise CheckpointError(
            f"{source}: refused, it names {name!r}, which is not a one_shui {base.__name__}"
        )
    return method
