"""`one-shui fit|validate|test`: LightningCLI over the one_shui modules and YAML configs.

The model and the data are chosen by ``class_path``; the number of classes, the task kind and the
image size are linked from the data to the model rather than repeated. Checkpoints are read with
``weights_only=True``; ``--ckpt_path last`` resumes from ``<default_root_dir>/checkpoints/last.ckpt``
and starts afresh when there is none yet.
"""

from __future__ import annotations

import sys

import lightning as L
import yaml
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from .checkpoints import CheckpointError, RunRecord, checkpoint_dir
from .data.audit import ImageError
from .data.datamodule import IdentityDataModule
from .data.sources import DatasetLayoutError
from .data.splits import SplitMismatchError
from .methods.base import MethodSetupError
from .methods.classifier import NonFiniteLossError
from .models.backbones import WeightsError

# Errors a user can meet and fix; they are shown as one message, without a traceback.
USER_ERRORS = (
    CheckpointError,
    DatasetLayoutError,
    FileExistsError,
    FileNotFoundError,
    ImageError,
    MethodSetupError,
    NonFiniteLossError,
    SplitMismatchError,
    WeightsError,
)


class OneShuiCLI(LightningCLI):
    """LightningCLI with the data-to-model links, the run record and safe checkpoint loading."""

    def __init__(self, args: list[str] | None = None, run: bool = True):
        self.run_record = RunRecord()
        super().__init__(
            model_class=L.LightningModule,
            subclass_mode_model=True,
            datamodule_class=IdentityDataModule,
            subclass_mode_data=True,
            trainer_defaults={"callbacks": [self.run_record]},
            save_config_callback=None,  # the run record writes config.yaml into the run folder
            parser_kwargs={"parser_mode": "omegaconf"},
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.init_args.image_size", "model.init_args.image_size")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.task", "model.init_args.task", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self._subcommand_config()
        if config.get("weights_only") is None and self.subcommand is not None:
            config["weights_only"] = True  # never unpickle arbitrary objects from a checkpoint
        self.run_record.config = yaml.safe_load(self._parser(self.subcommand).dump(config, skip_none=False))

    def before_fit(self) -> None:
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") == "last":
            last = checkpoint_dir(self.trainer) / "last.ckpt"
            config["ckpt_path"] = str(last) if last.is_file() else None
            rank_zero_info(f"resuming from {last}" if last.is_file() else f"no {last} yet: starting afresh")

    def _subcommand_config(self):
        return self.config[self.subcommand] if self.subcommand else self.config


def main(args: list[str] | None = None) -> None:
    """Console entry point: a user error is one line on stderr and exit status 1."""
    try:
        OneShuiCLI(args)
    except Exception as err:
        cause = user_error(err)
        if cause is None:
            raise
        sys.exit(f"one-shui: {cause}")


def user_error(err: BaseException | None) -> BaseException | None:
    """The user error behind ``err``, if any (jsonargparse wraps errors raised while instantiating)."""
    while err is not None and not isinstance(err, USER_ERRORS):
        err = err.__cause__
    return err
