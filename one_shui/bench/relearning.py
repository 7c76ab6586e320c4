"""A relearning attack (PROTOCOL §10): does the forgotten knowledge come back after a few steps of
fine-tuning? A method that removes what it forgot leaves nothing to come back; one that only hides it
gives it back to an attacker who fine-tunes the released model on a few photos that are not the
forgotten ones.

After a row's test, its model (the unlearned one) is fine-tuned ``steps`` steps of plain SGD on the task
loss, each on the whole of one of two samples, from the tested weights each time: (a) ``support``, the
request's portraits (the attacker holds the photo the person sent), (b) ``retain``, ``sample`` photos
drawn from the retain pool (the attacker holds ordinary training data). Each is then evaluated on
retain, forget and test as the row is (:func:`one_shui.bench.curves.utilities`). The model, and torch's
random stream, are left as the test left them.

Per seed, with g the memorisation gap (Pretrain forget minus Retrain forget, at least
:data:`~one_shui.bench.differences.MIN_GAP`), a row's **relearned share** on a sample is the forget
metric it regained, less what the retrained model regains from the same fine-tuning (it learns from
those photos too), over g, in %: 100 x ((after - before) - (after_retrain - before_retrain)) / g. 0 at
0 steps and for Retrain; for a row that closed the whole gap by hiding it, up to 100. Below 0 for a
row that closed little: the retrained model regains photos of people it never saw, and a model that
still knows them has nothing to regain. What stays closed, the **kept share**, is the share of the gap
closed (:func:`one_shui.bench.differences.share_closed`) less the relearned share: the row's forgetting as
an attacker who fine-tunes finds it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import default_collate

from ..methods.base import support_steps_
from . import curves, differences, report

SAMPLES = ("support", "retain")  # what the attacker fine-tunes on
RELEARNED = [f"relearned_{sample}" for sample in SAMPLES]  # the relearned share per sample
KEPT = [f"kept_{sample}" for sample in SAMPLES]  # the share of the gap closed that stays closed after it
COLUMNS = [*RELEARNED, *KEPT]  # results.csv's


@dataclass(frozen=True)
class Relearning:
    """The fine-tuning of the attack: ``steps`` steps of ``lr`` on the support, or on ``sample`` retain
    photos (the bench's ``relearn_*`` keys resolved for a model)."""

    steps: int
    lr: float
    sample: int


def relearn(method, loaders: Mapping[str, torch.utils.data.DataLoader], how: Relearning, seed: int) -> dict:
    """``method``'s model (tested) fine-tuned on each of :data:`SAMPLES` (its retain sample drawn with
    ``seed``), each from the tested weights: {sample: {pool: utility}}."""
    tested = {k: v.clone() for k, v in method.model.state_dict().items()}
    params = list(method.model.network.parameters())
    trainable = [param.requires_grad for param in params]  # a method may have frozen them (MetaUnlearn)
    after = {}
    with torch.random.fork_rng(devices=curves.cuda_devices(method.device)):
        for name in SAMPLES:
            images, targets = photos(method, loaders["retain"].dataset, name, how.sample, seed)
            method.model.load_state_dict(tested)
            with torch.inference_mode(False), torch.enable_grad():
                method.model.network.requires_grad_(True)  # the attacker fine-tunes every weight
                support_steps_(method, images.clone(), targets.clone(), how.lr, how.steps)
            after[name] = curves.utilities(method, loaders)
    method.model.load_state_dict(tested)
    for param, flag in zip(params, trainable, strict=True):
        param.requires_grad_(flag)
    return after


def photos(method, retain, name: str, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and targets the attacker fine-tunes on: the support batch, or ``size`` photos of the
    ``retain`` dataset drawn with ``seed``, as the test reads them."""
    if name == "support":
        images, _, targets = method.support_batch()
        return images, targets
    picked = random.Random(f"1-SHUI/relearn/{seed}").sample(range(len(retain)), min(size, len(retain)))
    images, _, targets = default_collate([retain[i] for i in picked])
    return images.to(method.device), targets.to(method.device)


def shares(records: Mapping[tuple[int, str, str, int], dict]) -> dict[tuple[str, int, int], dict[str, float]]:
    """Each row's relearned and kept shares on each sample (:data:`COLUMNS`), keyed by (label, seed,
    unlearning seed), at the seeds whose gap is at least MIN_GAP; rows without relearning left out."""
    result = {}
    for (seed, kind, label, u), record in records.items():
        if kind != "row" or "relearn" not in record:
            continue
        before = records[(seed, "row", differences.REFERENCE, 0)]["metrics"]["forget"]
        retrained = records[(seed, "row", "Retrain", 0)]
        closed = differences.share_closed(before, record["metrics"]["forget"], retrained["metrics"]["forget"])
        if closed is None:  # a gap under MIN_GAP
            continue
        gap = before - retrained["metrics"]["forget"]
        relearned = [100 * (regained(record, name) - regained(retrained, name)) / gap for name in SAMPLES]
        result[(label, seed, u)] = {
            **dict(zip(RELEARNED, relearned, strict=True)),
            **{column: closed - share for column, share in zip(KEPT, relearned, strict=True)},
        }
    return result


def regained(record: Mapping, name: str) -> float:
    """The forget metric a row's model regained from fine-tuning on the sample ``name``."""
    return record["relearn"][name]["forget"] - record["metrics"]["forget"]


def add_columns(rows: Sequence[dict], relearned: Mapping[tuple, Mapping[str, float]]) -> None:
    """Each results row's relearned shares (:data:`COLUMNS`; empty at a seed whose gap is too small)."""
    for row in rows:
        row.update(relearned.get((row["row"], row["seed"], row["unlearning_seed"]), dict.fromkeys(COLUMNS)))


def add_estimates(
    paired: dict[tuple, dict[str, differences.Estimate]], relearned: Mapping[tuple, Mapping[str, float]]
) -> None:
    """Each row's relearned and kept shares over seeds, with their intervals (seeds resampled; unlearning
    seeds nested), beside its paired differences (paired.csv)."""
    for label in dict.fromkeys(label for label, _, _ in relearned):
        if label == differences.REFERENCE:
            continue
        for column in COLUMNS:
            values = [(seed, shown[column]) for (row, seed, _), shown in relearned.items() if row == label]
            paired.setdefault((label,), {})[column] = differences.over_seeds(values)


HEADERS = [
    "gap closed %", "relearned % (support)", "relearned % (retain)", "kept % (support)", "kept % (retain)",
]  # fmt: skip


def markdown(paired: Mapping[tuple, Mapping[str, differences.Estimate]], how: str) -> str:
    """The relearning table: per row, the share of the gap it closed, the shares that came back and what
    stays closed."""
    lines = [
        f"### Relearning ({how})",
        "",
        "| | " + " | ".join(HEADERS) + " |",
        "|---|" + "---:|" * len(HEADERS),
    ]
    for (label, *_), estimates in paired.items():
        if COLUMNS[0] not in estimates:
            continue
        cells = [
            report.interval_cell(estimates.get(key), ".0f") for key in (differences.GAP_CLOSED, *COLUMNS)
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Relearned: the share of the memorisation gap (Pretrain forget minus Retrain forget) that came back "
        "after the row's model was fine-tuned on the request's portraits (support) or on as many retain "
        "photos (retain), less what the retrained model regains from the same fine-tuning; the mean over "
        "seeds [95 % bootstrap interval, seeds resampled], * where it excludes 0. A method that removes "
        "relearns about 0; one that hides relearns up to what it closed; one that closed nothing relearns "
        "less than 0 (the retrained model regains people it never saw; a model that still knows them has "
        "nothing to regain). Kept: the gap closed less the relearned share, what stays closed.",
    ]
    return "\n".join(lines) + "\n"
