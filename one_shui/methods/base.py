"""UnlearningMethod: the one interface every unlearning method implements.

``fit`` is the method's preparation (it may read training data, before that data is gone);
``forget(support)`` is the unlearning step and receives only the support images, their targets and
identity ids; ``test`` runs ``forget`` on the datamodule's support pool, then the shared evaluation,
with ToW against the retrained model of the same split.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

from .. import layout
from ..checkpoints import RECORD_KEY, CheckpointError, checkpoint_split
from ..data.check_set import CheckSet, take_check_set
from ..data.datamodule import TEST_POOLS, TrainPool
from ..data.sources import identity_clashes, identity_key
from ..errors import UserError, at_least
from ..metrics.evaluation import ATTACK_POOLS, Evaluation
from ..metrics.tow import UTILITY_POOLS
from ..metrics.utility import check_score, task_loss
from .classifier import Classifier
from .original import OriginalModel

CHECK_SET_KEY = "check_set"  # where a prepared checkpoint carries the check set
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # images, identity ids, targets


@torch.no_grad()
def sgd_step_(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], lr: float) -> None:
    """One plain SGD step on ``params``, in place: p <- p - lr * g."""
    for param, grad in zip(params, grads, strict=True):
        param.sub_(lr * grad)


def support_loss(method: UnlearningMethod, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The mean task loss of ``method``'s model on ``images`` against ``targets`` (BCE or cross-entropy)."""
    return task_loss(method.model.hparams.task, method.model(images), targets)


def support_steps_(
    method: UnlearningMethod,
    images: torch.Tensor,
    targets: torch.Tensor,
    lr: float,
    steps: int,
    mask: Sequence[torch.Tensor] | None = None,
) -> None:
    """``steps`` plain SGD steps of ``lr`` on :func:`support_loss` against ``targets``, all ``images`` in
    each (a negative ``lr`` climbs the loss); with a ``mask``, only the weights where it is 1 move."""
    params = list(method.model.network.parameters())
    for _ in range(steps):
        grads = torch.autograd.grad(support_loss(method, images, targets), params)
        if mask is not None:
            grads = [grad * keep for grad, keep in zip(grads, mask, strict=True)]
        sgd_step_(params, grads, lr)


class UnknownIdentityError(UserError, ValueError):
    """A forget request names someone the model was not trained on."""


class MethodSetupError(UserError, ValueError):
    """A method is set up with a config, data or trainer settings it cannot work with."""


class UnlearningMethod(L.LightningModule):
    """Holds the original model, loaded from a pretrain checkpoint, and unlearns it in place.

    Args:
        pretrain_ckpt: the original model; its split is the one every later step must use (the CLI
            defaults it to the run layout's pretrain checkpoint of the data, N and seed).
        retrain_ckpt: the retrained model of the same split, for ToW (optional).
        num_classes, task, image_size: linked from the data by the CLI; checked against the checkpoint.
        mia: the loss-based attack, ``balanced`` (ours) or ``published`` (its selection on the evaluated
            pools; see :class:`~one_shui.metrics.evaluation.Evaluation`).
        metric_precision: ``float32`` (ours) or ``bf16`` (the published metrics on bfloat16 outputs).
        serve_on: a model that an earlier request wrote from the same original model (the sequential bench's
            previous step): ``test`` puts its weights in place of the original's before ``forget``.
        reference: the test of an RMIA reference (the bench's ``<row>@retrain`` cell, the method on the
            retrained model): it keeps only what RMIA reads of it, each forget, TEST and VAL sample's
            probability of its true label (:attr:`Evaluation.probabilities`), and leaves out the retain
            pool, the metrics, the MIA and the check set.
        check_size: VAL images in the check set (:mod:`one_shui.data.check_set`), drawn when the method
            meets its data and carried by its prepared checkpoint: the guard of `one-shui-forget` and the
            bench's ``check/before`` and ``check/after`` score the model on it.

    What a method needs is declared once, in class attributes with safe defaults: :attr:`reads`,
    :attr:`reads_targets`, :attr:`train_pool` and :attr:`augment_train_pool` (the last two read by the
    CLI before the data is built, :meth:`data_options`, with a ``train_batch_size`` option where the
    method has one), and :attr:`strength_option` (served at a multiple by :meth:`forget_at`).
    A method takes its own options keyword-only and passes the others on as ``**kwargs``
    (LightningCLI resolves them from this signature).
    """

    reads: tuple[str, ...] = ("support",)  # the pools forget() reads: 1-SHUI allows the support set only
    reads_targets: bool = True  # whether forget() reads the support images' targets (else served zeros)
    train_pool: TrainPool | None = None  # the pool fit() (the preparation) reads; None: nothing to prepare
    augment_train_pool: bool = True  # whether fit() reads its pool with the training transform
    # The option whose value scales forget()'s update, which forget() reads through at_strength(); None:
    # the method has no strength (no curve).
    strength_option: str | None = None
    # Options of a run rather than of the preparation: a test keeps its own, not its prepared checkpoint's.
    run_options = ("pretrain_ckpt", "retrain_ckpt", "serve_on", "mia", "metric_precision", "reference")

    def __init__(
        self,
        pretrain_ckpt: str | None = None,
        *,
        retrain_ckpt: str | None = None,
        serve_on: str | None = None,
        num_classes: int | None = None,
        task: str | None = None,
        image_size: int | None = None,
        mia: Literal["balanced", "published"] = "balanced",
        metric_precision: Literal["float32", "bf16"] = "float32",
        reference: bool = False,
        check_size: int = 128,
    ):
        super().__init__()
        at_least("model.init_args", 1, check_size=check_size)
        if pretrain_ckpt is None:
            raise MethodSetupError(
                f"{type(self).__name__} needs the original model: set model.init_args.pretrain_ckpt to its "
                "pretrain checkpoint"
            )
        self.save_hyperparameters()
        # Read once: hashed as read, its split and settings kept (not a submodule), its network the model.
        self.original, self.model = OriginalModel.read(pretrain_ckpt)
        self.split = self.original.split
        self.identities = self.split.identities  # what an identity id indexes, as in the datamodule
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
        self._check: dict[str, float] = {}  # the check set's scores before and after forget, in test
        self.check_set: CheckSet | None = None  # drawn in setup, or read from the prepared checkpoint
        self.strength = 1.0  # forget's strength: a multiple of the operating point (forget_at sets it)
        self.evaluation = self.evaluation_of(self.model)

    def evaluation_of(self, model: Classifier) -> Evaluation:
        """A fresh evaluation of ``model`` with this method's evaluation options."""
        hp = self.hparams
        return Evaluation(model.hparams.task, model.hparams.num_classes, hp.mia, hp.metric_precision)

    @classmethod
    def class_path(cls) -> str:
        """The method's "module.Class", as checkpoints and receipts name it (the inverse of method_class)."""
        return f"{cls.__module__}.{cls.__qualname__}"

    @classmethod
    def name(cls) -> str:
        """The method's run in the layout: its module's name (``meta_unlearn``, ``ssd``, ...)."""
        return cls.__module__.rpartition(".")[2]

    @property
    def backbone(self) -> str:
        return self.model.hparams.backbone

    def forget(self, support: Batch) -> None:
        """Unlearn the people of ``support`` from ``self.model``, in place, reading nothing else."""
        raise NotImplementedError

    def forget_at(self, support: Batch, strength: float) -> None:
        """:meth:`forget` at ``strength`` times the operating point of :attr:`strength_option` (1: the
        method as configured); 0 leaves the model exactly as it was."""
        if self.strength_option is None:
            raise MethodSetupError(f"{type(self).__name__} declares no strength: it has no curve")
        at_least("forget_at", 0, strength=strength)
        if strength == 0:
            return
        self.strength = strength
        try:
            self.forget(support)
        finally:
            self.strength = 1.0

    def at_strength(self, value: float) -> float:
        """``value`` of the strength option (or one that moves with it) at the strength being served."""
        return value * self.strength

    @property
    def updated_parameters(self) -> tuple[str, ...]:
        """The names of the backbone's parameters that ``forget`` may change (all, unless said)."""
        return tuple(name for name, _ in self.model.network.named_parameters())

    def identity_ids(self, names: list[str]) -> torch.Tensor:
        """The identity ids of people the model was trained on; anyone else is refused by name. Names
        match in any Unicode form (:func:`~one_shui.data.sources.identity_key`), as the same text typed on
        another system; a split whose names clash so (made before datasets were refused for it) is
        refused, naming both spellings."""
        clashes = identity_clashes(self.split.train)
        if clashes:
            raise UnknownIdentityError(
                f"split {self.split.fingerprint}: the trained names {' and '.join(map(ascii, clashes[0]))} "
                "are one name once normalised, so a request cannot tell them apart; give each person one "
                "spelling in the data and train again"
            )
        trained = {identity_key(name): name for name in self.split.train}
        spelled = [trained.get(identity_key(name)) for name in names]
        unknown = [name for name, known in zip(names, spelled, strict=True) if known is None]
        if unknown:
            raise UnknownIdentityError(
                f"identities {', '.join(map(repr, unknown))} are not among the {len(trained)} people the "
                f"model was trained on (split {self.split.fingerprint}): there is nothing of them to forget"
            )
        position = {name: k for k, name in enumerate(self.identities)}
        return torch.tensor([position[name] for name in spelled], dtype=torch.long)

    @classmethod
    def data_options(cls, options: Mapping[str, Any]) -> dict:
        """The data settings that the preparation of a method with ``options`` (its init_args) reads, which
        the CLI gives the datamodule: its pool, its transform and, for a method whose options hold a
        ``train_batch_size``, that batch size; none for a method with nothing to prepare."""
        if cls.train_pool is None:
            return {}
        declared = {"train_pool": cls.train_pool, "augment_train": cls.augment_train_pool}
        if options.get("train_batch_size") is not None:
            declared["batch_size"] = options["train_batch_size"]
        return declared

    def setup(self, stage: str) -> None:
        """Check that the datamodule serves the pretrain's split and, for ``fit``, the data the preparation
        declares (:meth:`data_options`); nothing of the data is changed."""
        data = self.trainer.datamodule
        data.setup(stage)
        data.split.require_same(self.split, f"the pretrain checkpoint {self.hparams.pretrain_ckpt}")
        declared = self.data_options(self.hparams)
        served = {name: data.hparams[name] for name in declared}
        if stage == "fit" and served != declared:
            settings = ", ".join(f"data.init_args.{k}={v}" for k, v in declared.items())
            raise MethodSetupError(
                f"{type(self).__name__}'s preparation reads {settings}, but the data is set to "
                f"{', '.join(f'{k}={v}' for k, v in served.items())}: build the data with those (as "
                "`one-shui fit` does)"
            )
        if self.check_set is None:
            self.check_set = take_check_set(data, self.hparams.check_size)

    def check_score(self) -> float:
        """The model's utility on the check set (which must be there)."""
        hp = self.model.hparams
        return check_score(self.model, hp.task, hp.num_classes, self.check_set)

    # --- the prepared method's checkpoint ---------------------------------------------------------

    def configure_callbacks(self) -> list:
        """``fit`` keeps its last state as ``checkpoints/last.ckpt``: the prepared method (unless the
        trainer's checkpointing is off)."""
        if not self.trainer.checkpoint_callbacks:
            return []
        folder = layout.checkpoint_dir(self.trainer.default_root_dir)
        return [ModelCheckpoint(folder, save_top_k=0, save_last=True, enable_version_counter=False)]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The original model stays in its pretrain checkpoint; this one holds what fit prepared.
        state = checkpoint["state_dict"]
        checkpoint["state_dict"] = {k: v for k, v in state.items() if not k.startswith("model.")}
        checkpoint.setdefault(RECORD_KEY, {}).update(
            method=self.class_path(), original_sha256=self.original.sha256
        )
        if self.check_set is not None:
            checkpoint[CHECK_SET_KEY] = self.check_set.to_record()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        trainer = self._trainer
        path = trainer.ckpt_path if trainer is not None else None
        self.restore(checkpoint, str(path) if path else f"the {type(self).__name__} checkpoint")

    def restore(self, checkpoint: dict, source: str) -> None:
        """Check that the prepared checkpoint (``source``, named in errors) was prepared on this original
        model and split, and put the original model's weights and the check set it carries in place."""
        record = checkpoint.get(RECORD_KEY, {})
        if record.get("original_sha256") != self.original.sha256:
            raise CheckpointError(
                f"{source} was prepared on another original model than {self.hparams.pretrain_ckpt}: "
                f"use the pretrain checkpoint it was prepared from"
            )
        self.split.require_same(checkpoint_split(checkpoint, source), source)
        original = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        checkpoint["state_dict"] = {**checkpoint["state_dict"], **original}
        if CHECK_SET_KEY in checkpoint:
            self.check_set = CheckSet.from_record(checkpoint[CHECK_SET_KEY], self.model.hparams, source)
        self._prepared = True

    def on_train_end(self) -> None:
        self._prepared = True

    def unlearned_checkpoint(self, record: dict) -> dict:
        """The original model's checkpoint with the unlearned weights (read by
        :meth:`Classifier.from_checkpoint`), ``record`` added to its own (what was forgotten, how)."""
        return self.original.unlearned_checkpoint(self.model.state_dict(), record)

    # --- test: forget, then the shared evaluation ---------------------------------------------

    def on_test_start(self) -> None:
        if self.train_pool is not None and not self._prepared:
            rank_zero_warn(
                f"{type(self).__name__} is tested without its preparation: fit it first, or pass the "
                f"checkpoint its fit wrote (--ckpt_path <run>/checkpoints/last.ckpt)"
            )
        if self.hparams.serve_on:
            served = Classifier.from_checkpoint(self.hparams.serve_on, split=self.split)
            self.model.load_state_dict(served.state_dict())
        # Lightning tests under inference mode; forget() differentiates, so its batch is made outside it.
        with torch.inference_mode(False), torch.enable_grad():
            batch = self.support_batch()
            # this request's people: in the sequential bench, some of everyone forgotten so far
            self.evaluation.request = set(batch[1].tolist())
            self._check = {} if self.hparams.reference else {"check/before": self.check_score()}
            start = time.perf_counter()
            self.forget(batch)
            self._forget_seconds = time.perf_counter() - start
            if not self.hparams.reference:
                self._check["check/after"] = self.check_score()
        for logger in self.loggers:
            logger.log_hyperparams({"forget_reads": ",".join(self.reads)})
        if self.hparams.retrain_ckpt:
            retrained = Classifier.from_checkpoint(self.hparams.retrain_ckpt, split=self.split)
            self._retrained = {
                "model": retrained.to(self.device),
                "evaluation": self.evaluation_of(retrained),
            }

    def support_batch(self) -> Batch:
        """The datamodule's support pool as one batch, on this module's device (what ``forget`` serves)."""
        data = self.trainer.datamodule
        support = data.loader("support", batch_size=len(data.rows["support"]))
        return tuple(t.to(self.device) for t in next(iter(support)))

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        images, identities, targets = batch
        pool = TEST_POOLS[dataloader_idx]
        if self.hparams.reference and pool not in ATTACK_POOLS:
            return
        self.evaluation.update(pool, self.model(images), targets, identities)
        if self._retrained and pool in UTILITY_POOLS:
            self._retrained["evaluation"].update(pool, self._retrained["model"](images), targets, identities)

    def on_test_epoch_end(self) -> None:
        if self.hparams.reference:
            self.results = {"probabilities": self.evaluation.attack_probabilities()}
            self.evaluation.reset()
        else:
            retrained = self._retrained["evaluation"].utilities() if self._retrained else None
            self.results = self.evaluation.log(self, retrained, self.identities)
        self.results["reads"] = ",".join(self.reads)
        self.results["mia_selection"] = self.hparams.mia
        self.results["forget_seconds"] = self._forget_seconds
        self.results.update(self._check)
