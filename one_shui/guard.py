"""The guard of `one-shui-forget`: the unlearned model is scored on the method's check set (VAL images
that no request touches) and compared with the model it was served on; a drop of more than ``max_drop``
points refuses the request unless forced. Its figures go into the receipt."""

from __future__ import annotations

from pathlib import Path

from jsonargparse import ArgumentError

from .data.check_set import CheckSet, take_check_set
from .data.config import data_parser
from .data.datamodule import IdentityDataModule
from .errors import MissingFileError, SettingError, UserError
from .methods.base import UnlearningMethod
from .metrics.utility import metric_name

# Points of the check set's metric (mAP or accuracy, x100), chosen on the embedded default's benches:
# docs/tuning.md, "The guard's maximum drop".
MAX_DROP = 5.0


class GuardError(UserError, ValueError):
    """The unlearned model would lose too much utility, or there is nothing to score it on."""


def check_set_of(
    method: UnlearningMethod, data_config: str | None, source: str, from_config: bool
) -> tuple[CheckSet, str]:
    """The check set the guard scores on and where it came from: the one the prepared method carries, or
    (a method given by its config) drawn from the VAL of ``data_config`` on the original model's split."""
    if data_config is not None:
        if method.check_set is not None:
            raise GuardError(
                f"--data {data_config}: {source} carries its own check set, drawn when it was "
                "prepared; --data is for a method given by its config"
            )
        return take_check_set(config_data(data_config, method), method.hparams.check_size), data_config
    if method.check_set is None:
        fix = (
            "give the data config of the model (--data configs/data/<dataset>.yaml), whose VAL holds it"
            if from_config
            else "prepare the method again (one-shui fit): it was prepared before methods carried one"
        )
        raise GuardError(
            f"{source} has no check set to score the unlearned model on, so the guard cannot judge it "
            f"(and --force has no guard result to overrule): {fix}"
        )
    return method.check_set, "the prepared checkpoint"


def judge(
    method: UnlearningMethod,
    check: tuple[CheckSet, str],
    before: float,
    after: float,
    max_drop: float,
    force: bool,
) -> dict:
    """The receipt's ``guard`` entry; refused (nothing written) when the drop passes ``max_drop`` unforced."""
    metric, (check_set, source) = metric_name(method.model.hparams.task), check
    drop = before - after
    figures = {
        "metric": metric,
        "check_set": {"images": len(check_set), "source": source, "sha256": check_set.sha256},
        "before": round(before, 4),
        "after": round(after, 4),
        "drop": round(drop, 4),
        "max_drop": max_drop,
        "passed": drop <= max_drop,
        "forced": force,
    }
    if not figures["passed"] and not force:
        raise GuardError(
            f"refused by the guard: the unlearned model scores {after:.2f} {metric} on the check set of "
            f"{len(check_set)} VAL images, {drop:.2f} points under the {before:.2f} of the model it was "
            f"served on (--max-drop {max_drop:g}); nothing is written: serve the request with gentler "
            "settings, or give --force to write it anyway"
        )
    return figures


def config_data(path: str, method: UnlearningMethod) -> IdentityDataModule:
    """The data of the config ``path``, on the split and image size of the method's original model."""
    if not Path(path).is_file():
        raise MissingFileError(f"--data {path} does not exist: give the data config of the model")
    split, parser = method.split, data_parser(exit_on_error=False)
    try:
        cfg = parser.parse_args(
            [
                "--config",
                path,
                f"--data.init_args.seed={split.seed}",
                f"--data.init_args.request_size={split.request_size}",
                f"--data.init_args.image_size={method.model.hparams.image_size}",
            ]  # fmt: skip
        )
    except ArgumentError as err:
        raise SettingError(f"--data {path}: not a data config ({' '.join(str(err).split())})") from None
    data = parser.instantiate(cfg).data
    data.use_split(split, str(method.original.path))
    return data
