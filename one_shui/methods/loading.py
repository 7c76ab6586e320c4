"""Finding and loading unlearning methods: a class by its path (only classes of one_shui.methods), a
prepared method from the checkpoint its ``fit`` wrote, a method with nothing to prepare from its YAML."""

from __future__ import annotations

import contextlib
import importlib
import os
from pathlib import Path

import jsonargparse
import yaml

from ..checkpoints import RECORD_KEY, CheckpointError, checkpoint_split, load_checkpoint
from ..errors import MissingFileError, damaged_as
from .base import MethodSetupError, UnlearningMethod


def method_class(name: str) -> type[UnlearningMethod] | None:
    """The class ``name`` ("module.Class") when it is an unlearning method of one_shui.methods; else
    None. Nothing outside one_shui.methods is ever imported."""
    module, _, cls = name.rpartition(".")
    method = None
    if module.startswith(f"{__package__}."):
        with contextlib.suppress(ImportError):
            method = getattr(importlib.import_module(module), cls, None)
    return method if isinstance(method, type) and issubclass(method, UnlearningMethod) else None


def config_model(path: str | os.PathLike) -> tuple[str, dict]:
    """The ``model`` class path and init_args of a YAML config."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"method config {path} does not exist")
    try:
        model = yaml.safe_load(path.read_text(encoding="utf-8"))["model"]
        return str(model["class_path"]), dict(model.get("init_args") or {})
    except (yaml.YAMLError, UnicodeDecodeError, TypeError, KeyError, ValueError) as err:
        raise MethodSetupError(f"{path}: not a method config with a model.class_path ({err!r})") from None


def setting_options(path: str | os.PathLike) -> dict:
    """A setting's own values of a method's options: a YAML of ``model.init_args`` alone
    (``configs/settings/<setting>/<method>.yaml``), which the bench and `one-shui` stack after the
    method's config."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"setting file {path} does not exist")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
        if set(content) != {"model"} or set(content["model"]) != {"init_args"}:
            raise ValueError(f"it holds {sorted(content)}")
        return dict(content["model"]["init_args"])
    except (yaml.YAMLError, UnicodeDecodeError, TypeError, KeyError, ValueError) as err:
        raise MethodSetupError(
            f"{path}: not a setting file, a YAML of model.init_args alone ({err})"
        ) from None


def config_method(path: str | os.PathLike) -> type[UnlearningMethod]:
    """The unlearning method a YAML config runs; refused when it names anything else."""
    name, _ = config_model(path)
    method = method_class(name)
    if method is None:
        raise MethodSetupError(f"{path}: model.class_path {name!r} is not a one_shui UnlearningMethod")
    return method


def load_prepared(
    path: str | os.PathLike, pretrain_ckpt: str | os.PathLike | None = None
) -> UnlearningMethod:
    """The prepared method of ``path`` (what its ``fit`` wrote), on the original model it was prepared
    from: ``pretrain_ckpt``, by default the path recorded when it was prepared. A checkpoint damaged in
    its structure is one :class:`CheckpointError`."""
    checkpoint = load_checkpoint(path)
    method = _checkpoint_method(checkpoint, str(path))
    checkpoint_split(checkpoint, str(path))  # refused by its file's name, before anything is built on it
    hparams, state = checkpoint.get("hyper_parameters"), checkpoint.get("state_dict")
    if not isinstance(hparams, dict) or not isinstance(state, dict):
        raise CheckpointError(
            f"{path}: damaged, it lacks its hyperparameters or its state; fit the method again"
        )
    hparams = {k: v for k, v in hparams.items() if not str(k).startswith("_")}
    recorded = hparams.get("pretrain_ckpt")
    if pretrain_ckpt is None and not isinstance(recorded, str):
        raise CheckpointError(
            f"{path}: damaged, it does not name its pretrain checkpoint; give --pretrain-ckpt"
        )
    original = Path(pretrain_ckpt or recorded)
    if not original.is_file():
        raise MissingFileError(
            f"{path} was prepared on the pretrain checkpoint {original}, which is not there: "
            f"give the path of that checkpoint"
        )
    with damaged_as(CheckpointError, f"{path}: a damaged {method.__name__} checkpoint"):
        prepared = method(**{**hparams, "pretrain_ckpt": str(original), "retrain_ckpt": None})
        prepared.restore(checkpoint, str(path))  # adds the original model's weights to the state
        prepared.load_state_dict(checkpoint["state_dict"])
    return prepared.eval()


def load_from_config(path: str | os.PathLike, pretrain_ckpt: str | os.PathLike) -> UnlearningMethod:
    """A method with nothing to prepare, built from the ``model`` section of its YAML config (as
    ``configs/methods/jit.yaml``) on the original model ``pretrain_ckpt``."""
    path = Path(path)
    method = config_method(path)
    if method.train_pool is not None:
        raise MethodSetupError(
            f"{path}: {method.__name__} must be prepared first: run `one-shui fit --config <data> --config "
            f"{path}` and give the checkpoints/last.ckpt it writes"
        )
    _, options = config_model(path)
    options = {k: v for k, v in options.items() if k not in ("pretrain_ckpt", "retrain_ckpt")}
    arguments = method_options(method, {**options, "pretrain_ckpt": str(pretrain_ckpt)}, str(path))
    return method(**arguments).eval()


def method_options(method: type[UnlearningMethod], options: dict, source: str) -> dict:
    """``options`` of ``method`` (its own and those it passes on), as its signature types them; refused,
    in one line that names ``source``, an option it does not take (with those it does) or a wrong value."""
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(method)
    accepted = {key.partition(".")[0] for key in parser.get_defaults().keys()}  # noqa: SIM118 (a Namespace)
    unknown = sorted(set(options) - accepted)
    if unknown:
        names, verb = ", ".join(map(repr, unknown)), "is" if len(unknown) == 1 else "are"
        raise MethodSetupError(
            f"{source}: {names} {verb} not accepted by {method.__name__}; its options are "
            f"{', '.join(sorted(accepted))}"
        )
    try:
        return parser.parse_object(options).as_dict()
    except jsonargparse.ArgumentError as err:
        raise MethodSetupError(f"{source}: {' '.join(str(err).split())}") from None


def _checkpoint_method(checkpoint: dict, source: str) -> type[UnlearningMethod]:
    """The class a prepared checkpoint names: among the classes of one_shui.methods only."""
    name = checkpoint[RECORD_KEY].get("method")
    if not isinstance(name, str):
        raise CheckpointError(
            f"{source}: not a prepared unlearning method (a pretrain or retrain model?): give the "
            f"checkpoints/last.ckpt that the method's fit wrote"
        )
    method = method_class(name)
    if method is None:
        raise CheckpointError(
            f"{source}: refused, it names {name!r}, which is not a one_shui UnlearningMethod"
        )
    return method
