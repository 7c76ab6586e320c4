"""The run layout: the one place that names where each run of a setting keeps its files.

A setting is a dataset, a request size N and a seed; its runs are the pretrain, the retrain and each
method (named by its module: ``meta_unlearn``, ``ssd``, ...):

    outputs/<dataset>/N<N>-seed<seed>/<run>/config.yaml
                                           /checkpoints/{best,last}.ckpt, split.json
                                    /unlearned/<request>.ckpt, <request>.json   (one-shui-forget)

``<dataset>`` is the dataset's layout name, prefixed ``synthetic_`` for the embedded synthetic data
written in that layout. The CLI's defaults, the bench (under ``<out>/cells``) and `one-shui-forget`
all derive their folders here; an explicit path from the user always wins.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import SettingError

OUTPUTS = Path("outputs")
PRETRAIN, RETRAIN = "pretrain", "retrain"
STAGES = {"train": PRETRAIN, "retain": RETRAIN}  # the run a Classifier makes of each training pool
SERVED = "unlearned"  # the run of `one-shui-forget`: the models its requests wrote, with their receipts
BEST, LAST, SPLIT = "best.ckpt", "last.ckpt", "split.json"
UNLEARNED = "unlearned.ckpt"  # the model a sequential bench's cell wrote, served on by the next request


def dataset_name(dataset: str, synthetic: bool) -> str:
    """The dataset's name in the layout: ``celebahq``, or ``synthetic_celebahq`` for the embedded data."""
    return f"synthetic_{dataset}" if synthetic else dataset


def setting_dir(dataset: str, request_size: int, seed: int, root: str | os.PathLike = OUTPUTS) -> Path:
    """The folder of the setting (``dataset``, N, seed): its split and one folder per run."""
    return Path(root) / component(dataset, "dataset") / f"N{request_size}-seed{seed}"


def run_dir(dataset: str, request_size: int, seed: int, run: str, root: str | os.PathLike = OUTPUTS) -> Path:
    """The folder of one run of the setting (``dataset``, N, seed)."""
    return setting_dir(dataset, request_size, seed, root) / component(run, "run")


def component(name: str, what: str) -> str:
    """``name``, which names one folder or file: refused when it could name another place (empty, ``.``
    or ``..``, or holding a path separator or a NUL byte)."""
    if not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in ("/", "\\", "\0")):
        raise SettingError(
            f"{what} {name!r}: must be one folder name (not empty, '.' or '..'; no '/', '\\' or NUL), "
            "so that nothing is written outside its folder"
        )
    return name


def checkpoint_dir(run: str | os.PathLike) -> Path:
    """Where a run keeps its checkpoints and the split JSON beside them."""
    return Path(run) / "checkpoints"
