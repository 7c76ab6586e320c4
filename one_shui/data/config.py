"""A data config read alone: the ``data`` section of a config file (or ``--data.*`` arguments) parsed into
an :class:`IdentityDataModule`, without a model or a trainer (the split command, the guard, the bench)."""

from __future__ import annotations

from jsonargparse import ActionConfigFile, ArgumentParser

from .datamodule import IdentityDataModule


def data_parser(**options) -> ArgumentParser:
    """A parser of the data section alone: ``--config`` files and ``--data.*`` arguments."""
    parser = ArgumentParser(default_config_files=None, **options)
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_subclass_arguments(IdentityDataModule, "data", required=True)
    return parser
