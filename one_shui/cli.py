"""`one-shui fit|validate|test`: LightningCLI over the one_shui modules and YAML configs.

The model and the data are chosen by ``class_path``; the number of classes, the task kind and the
image size are linked from the data to the model rather than repeated. What the user leaves out comes
from the run layout (:mod:`one_shui.layout`) of the data's setting (dataset, N, seed): the run's folder,
a retrain's split (its pretrain's ``split.json``), a method's pretrain and retrain checkpoints, and the
prepared method that ``test`` evaluates; ``seed_everything`` defaults to the data's seed. A method's data
is built as the method reads it: its preparation's pool and the split of its original model. A path the
user gives always wins. Checkpoints are read with ``weights_only=True``; ``--ckpt_path last`` resumes from
``<default_root_dir>/checkpoints/last.ckpt`` and starts afresh when there is none yet.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import lightning as L
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from . import layout
from .checkpoints import CheckpointError, RandomState, RunRecord, load_checkpoint, require_archive
from .data.datamodule import IdentityDataModule
from .errors import MissingFileError, SettingError, exit_on_user_error
from .methods.base import MethodSetupError, UnlearningMethod
from .methods.classifier import Classifier
from .quiet import quiet


class OneShuiCLI(LightningCLI):
    """LightningCLI with the data-to-model links, the run layout's defaults, the run record and safe
    checkpoint loading.

    Args:
        layout_defaults: fill what is left out from the run layout (the bench names every path
            itself and turns this off).
    """

    def __init__(self, args: list[str] | None = None, run: bool = True, layout_defaults: bool = True):
        self.run_record = RunRecord()
        self.layout_defaults = layout_defaults
        self._run_options: dict = {}  # a method's run options as the command line gave them
        with quiet():  # what every run would print and nobody needs (one_shui.quiet)
            super().__init__(
                model_class=L.LightningModule,
                subclass_mode_model=True,
                datamodule_class=IdentityDataModule,
                subclass_mode_data=True,
                trainer_defaults={"callbacks": [self.run_record, RandomState()]},
                save_config_callback=None,  # the run record writes config.yaml into the run folder
                parser_kwargs={"parser_mode": "omegaconf"},
                args=args,
                run=run,
            )

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.init_args.image_size", "model.init_args.image_size")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.task", "model.init_args.task", apply_on="instantiate")

    def init_parser(self, **kwargs):
        """Lightning's parser, whose errors are raised (a user error: one line, exit status 1) instead of
        printing the usage and exiting with status 2."""
        return super().init_parser(exit_on_error=False, **kwargs)

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        config = self._subcommand_config()
        if config.get("ckpt_path") and Path(config.ckpt_path).is_file():  # Lightning reads it next
            require_archive(Path(config.ckpt_path))
        if _is_identity_data(config):
            if config.get("seed_everything") is True:  # LightningCLI's default: a random seed
                config["seed_everything"] = config.data.init_args.seed
            if self.layout_defaults:
                _fill_from_layout(config, self.config.get("subcommand"))
        model = config.get("model")
        if model is not None and _is_method(model.class_path):
            self._run_options = {key: model.init_args.get(key) for key in UnlearningMethod.run_options}

    def before_instantiate_classes(self) -> None:
        """Lightning then puts the options a ``--ckpt_path`` was saved with over the command line's; those
        of a method's run (:attr:`UnlearningMethod.run_options`, kept by :meth:`parse_arguments`) are put
        back, so a test of a prepared method against another retrain, or served on another model, is what
        it says; then the data is given what the method reads (:func:`_data_for_method`), before it is
        built. (Both are public hooks, around Lightning's private checkpoint parsing.)"""
        config = self._subcommand_config()
        for key, value in self._run_options.items():
            config.model.init_args[key] = value
        if self._run_options and _is_identity_data(config):
            _data_for_method(config)
        if config.get("weights_only") is None and self.subcommand is not None:
            config["weights_only"] = True  # never unpickle arbitrary objects from a checkpoint
        self.run_record.config = yaml.safe_load(self._parser(self.subcommand).dump(config, skip_none=False))

    def test(self, model, verbose: bool = True, **options) -> list:
        """Lightning's test without its table, which repeats every number once per test pool: the
        results once instead (none with ``--verbose false``, as the bench runs it)."""
        outcome = self.trainer.test(model, verbose=False, **options)
        if verbose and self.trainer.is_global_zero:
            print(results_table(model.results))
        return outcome

    def before_fit(self) -> None:
        if isinstance(self.model, UnlearningMethod) and self.model.train_pool is None:
            raise MethodSetupError(
                f"{type(self.model).__name__} has nothing to prepare: run `one-shui test` with its config "
                "(or serve a request with `one-shui-forget`)"
            )
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") == "last":
            last = layout.checkpoint_dir(self.trainer.default_root_dir) / layout.LAST
            config["ckpt_path"] = str(last) if _resumable(last) else None

    def _subcommand_config(self):
        return self.config[self.config.subcommand] if self.config.get("subcommand") else self.config


def _resumable(last: Path) -> bool:
    """Whether a fit can resume from ``last``; a missing or damaged one (a fit killed while writing it)
    means starting afresh, with a line that says which."""
    if not last.is_file():
        rank_zero_info(f"no {last} yet: starting afresh")
        return False
    try:
        load_checkpoint(last, mmap=True)
    except CheckpointError as err:
        rank_zero_warn(f"{last} is damaged ({err}): starting afresh; it will be overwritten")
        return False
    rank_zero_info(f"resuming from {last}")
    return True


def _is_identity_data(config) -> bool:
    data = config.get("data")
    return data is not None and issubclass(_class(data.class_path), IdentityDataModule)


def _is_method(path: str) -> bool:
    cls = _class(path)
    return isinstance(cls, type) and issubclass(cls, UnlearningMethod)


def _class(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _data_for_method(config) -> None:
    """A method's data, decided before it is built: the pool, transform and batch size its preparation
    declares (:meth:`UnlearningMethod.data_options`) and, unless the user gave a split file, the split
    that its pretrain's run wrote beside the checkpoint, so that the data serves the original model's
    split without making it again (without that file, the data makes it and the method checks it)."""
    data, pretrain = config.data.init_args, config.model.init_args.pretrain_ckpt
    for name, value in _class(config.model.class_path).data_options(config.model.init_args).items():
        data[name] = value
    split = Path(pretrain).with_name(layout.SPLIT) if pretrain else None
    if not data.split_file and split is not None and split.is_file():
        data.split_file = str(split)


def _fill_from_layout(config, subcommand: str | None) -> None:
    """What the user left out, from the run layout of the data's setting (see the module docstring)."""
    data, model = config.data.init_args, _class(config.model.class_path)
    if issubclass(model, Classifier):
        run = layout.STAGES.get(data.train_pool, data.train_pool)
    elif issubclass(model, UnlearningMethod):
        run = model.name()
    else:
        return
    name = layout.dataset_name(data.dataset, data.synthetic is not None)

    def checkpoints(stage: str) -> Path:
        return layout.checkpoint_dir(layout.run_dir(name, data.request_size, data.seed, stage))

    if config.trainer.default_root_dir is None:
        config.trainer.default_root_dir = str(checkpoints(run).parent)
    pretrain = checkpoints(layout.PRETRAIN)
    if run == layout.RETRAIN and not data.split_file:
        data.split_file = _pretrain_file(
            pretrain / layout.SPLIT, "a retrain must use the split of its pretrain: set data.split_file"
        )
    if not issubclass(model, UnlearningMethod):
        return
    options, retrained = config.model.init_args, checkpoints(layout.RETRAIN) / layout.BEST
    if options.pretrain_ckpt is None:
        options.pretrain_ckpt = _pretrain_file(
            pretrain / layout.BEST,
            f"{model.__name__} unlearns the pretrained model: set model.init_args.pretrain_ckpt",
        )
    if options.retrain_ckpt is None and retrained.is_file():
        options.retrain_ckpt = str(retrained)
    elif options.retrain_ckpt is None and subcommand == "test":
        rank_zero_warn(f"no retrained model at {retrained}: no ToW (set model.init_args.retrain_ckpt)")
    prepared = checkpoints(run) / layout.LAST
    if subcommand == "test" and model.train_pool is not None and not config.ckpt_path and prepared.is_file():
        config.ckpt_path = str(prepared)  # the preparation that `fit` left in the layout


def _pretrain_file(path: Path, need: str) -> str:
    """``path``, a file the setting's pretrain writes; refused, saying what is needed, when it is absent."""
    if not path.is_file():
        raise MissingFileError(
            f"{need}, or run the pretrain of this data, N and seed first (there is no {path})"
        )
    return str(path)


def results_table(results: dict) -> str:
    """A test's numbers, one a line: the pools' metrics, ToW, the attacks and the guard's scores, then
    each forgotten person's forget metric (``forget/<metric>/<name>``)."""
    numbers = {key: value for key, value in results.items() if isinstance(value, (int, float))}
    people = [key for key in numbers if key.count("/") == 2]
    keys = [key for key in numbers if key not in people] + people
    width = max(map(len, keys), default=0)
    return "\n".join(["test results", *(f"  {key:<{width}}  {numbers[key]:.4f}" for key in keys)])


def run(args: list[str] | None = None, **options) -> OneShuiCLI:
    """`one-shui <args>` in this process: the CLI, with Lightning's own configuration errors (a negative
    max_epochs...) given as user errors."""
    try:
        return OneShuiCLI(args, **options)
    except MisconfigurationException as err:
        raise SettingError(" ".join(str(err).split())) from None


def main(args: list[str] | None = None) -> None:
    """Console entry point: a user error is one line on stderr and exit status 1."""
    exit_on_user_error("one-shui", lambda: run(args))
