"""The guard of `one-shui-forget`: the unlearned model is scored on the method's check set (VAL images
that no request touches) and compared with the model it was served on and with the original model of its
chain; a drop of more than ``max_drop`` points from the first, or of more than ``max_total_drop`` from the
second, refuses the request unless forced. A check set too small to resolve those bounds is refused
(:func:`smallest_check_set`). Its figures go into the receipt."""

from __future__ import annotations

import math
from pathlib import Path

from jsonargparse import ArgumentError

from .data.check_set import CheckSet, take_check_set
from .data.config import data_parser
from .data.datamodule import IdentityDataModule
from .errors import MissingFileError, SettingError, UserError
from .methods.base import UnlearningMethod
from .metrics.utility import metric_name

# Points of the check set's metric (mAP or accuracy, x100), chosen on the embedded default's benches:
# docs/tuning.md, "The guard's maximum drop". A chain may lose no more than one request may: on the
# sequential bench (README, "Requests one after another: the sequential bench") the chains of
# MetaUnlearn, PGU and JiT lose at most 0.23 points over three requests on any seed, and SSD's second
# step is refused on its own, so the total bound stops only chains that slide.
MAX_DROP = 5.0
MAX_TOTAL_DROP = 5.0
Z = 1.645  # a drop at the bound stands this many standard errors out of no drop (one-sided 95 %)


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


def smallest_check_set(bound: float) -> int:
    """The fewest check images on which a drop of ``bound`` points stands out of the metric's sampling
    error. A model that loses ``bound`` points of accuracy on VAL's population changes its answer on
    about n * bound / 100 of n check images (mAP, averaged over attributes, moves no faster); that count
    is about Poisson, so its standard error is its square root. For the drop at the bound to lie
    :data:`Z` standard errors from none, n * bound / 100 >= Z^2: n >= 100 Z^2 / bound, 55 images at the
    default 5 points, 271 at 1 point."""
    return math.ceil(100 * Z**2 / bound)


def require_resolving(check: tuple[CheckSet, str], bound: float) -> None:
    """Refuse a check set too small to resolve a drop of ``bound`` points (:func:`smallest_check_set`)."""
    (check_set, source), need = check, smallest_check_set(bound)
    if len(check_set) < need:
        raise GuardError(
            f"the check set of {len(check_set)} VAL images ({source}) cannot resolve a drop of {bound:g} "
            f"points: that needs at least {need} images; prepare the method with "
            f"model.init_args.check_size={need} or more (VAL permitting), or give --max-drop and "
            f"--max-total-drop of at least {100 * Z**2 / len(check_set):.1f}"
        )


def refuses(
    drop: float, total: float, max_drop: float = MAX_DROP, max_total_drop: float = MAX_TOTAL_DROP
) -> bool:
    """Whether the guard refuses a step that lost ``drop`` points from the model it was served on and
    ``total`` from the original model of its chain."""
    return drop > max_drop or total > max_total_drop


def judge(
    method: UnlearningMethod,
    check: tuple[CheckSet, str],
    scores: tuple[float, float, float],
    bounds: tuple[float, float],
    force: bool,
) -> dict:
    """The receipt's ``guard`` entry from the check ``scores`` of the chain's original model, the model
    served on and the unlearned one; refused (nothing written) unforced when the drop from the model
    served on passes ``bounds[0]`` (``--max-drop``) or the drop from the original passes ``bounds[1]``
    (``--max-total-drop``)."""
    metric, (check_set, source) = metric_name(method.model.hparams.task), check
    (original, before, after), (max_drop, max_total_drop) = scores, bounds
    drop, total = before - after, original - after
    figures = {
        "metric": metric,
        "check_set": {"images": len(check_set), "source": source, "sha256": check_set.sha256},
        "original": round(original, 4),
        "before": round(before, 4),
        "after": round(after, 4),
        "drop": round(drop, 4),
        "max_drop": max_drop,
        "total_drop": round(total, 4),
        "max_total_drop": max_total_drop,
        "passed": not refuses(drop, total, max_drop, max_total_drop),
        "forced": force,
    }
    if figures["passed"] or force:
        return figures
    scored = f"the unlearned model scores {after:.2f} {metric} on the check set ({len(check_set)} VAL images)"
    why = (
        f"{drop:.2f} points under the {before:.2f} of the model it was served on (--max-drop {max_drop:g})"
        if drop > max_drop
        else f"{total:.2f} points under the {original:.2f} of the original model of its chain "
        f"(--max-total-drop {max_total_drop:g}; this step alone lost {drop:.2f})"
    )
    raise GuardError(
        f"refused by the guard: {scored}, {why}; nothing is written: serve the request with gentler "
        "settings, or give --force to write it anyway"
    )


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
