"""Strength curves (PROTOCOL §9): each method served at several strengths from its one preparation.

A method's strength is a multiple of the operating point of its declared option
(:attr:`~one_shui.methods.base.UnlearningMethod.strength_option`; 1 is the value VAL chose, 0 leaves the
model as it was). After a row's test, its method is served the request again at each strength of the
bench's ``curve``, each time from the original weights, and each point is evaluated on retain, forget and
test as the row is (the same :class:`~one_shui.metrics.evaluation.Evaluation`, on the test's own
loaders): no new Trainer, no MIA. At strength 0 the model is the original one: its point is the Pretrain
row's utilities, not measured again. Each point draws its randomness (JiT's noise, PGU's batches) from its
own stream, seeded by the cell's seed and the strength (:func:`point_seed`): a point does not depend on the
test before it or on the other strengths, and the test's stream goes on after the curve as if unserved.

Per point and seed, paired with Pretrain of the seed: the **retain drop** (Pretrain's retain minus the
point's) and the **share of the memorisation gap closed** (:func:`one_shui.bench.differences.gap_closed`'s
definition). A curve's **ranking number** is the largest share of the gap closed at a retain drop of at
most :data:`MAX_RETAIN_DROP` point along it (:func:`reach`), the mean over seeds with its interval.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import torch

from ..methods.base import UnlearningMethod
from ..methods.classifier import Classifier
from ..metrics.tow import UTILITY_POOLS
from . import differences

MAX_RETAIN_DROP = 1.0  # points of the retain metric the ranking number allows
REACH = "gap_closed_at_1pt"  # the ranking number's column in results.csv
COLUMNS = [
    "row",
    "strength",
    "seed",
    "unlearning_seed",
    "retain",
    "forget",
    "test",
    "retain_drop",
    "gap_closed",
]


def has_curve(method: type[UnlearningMethod]) -> bool:
    """Whether the bench serves ``method`` at its curve's strengths: a 1-SHUI method that declares a
    strength (a full-data reference row's forget is a whole unlearning run over the retain set, per point)."""
    return method.strength_option is not None and tuple(method.reads) == ("support",)


def serve(
    method,
    loaders: Mapping[str, torch.utils.data.DataLoader],
    strengths: Sequence[float],
    as_it_was: Mapping[str, float],
    seed: int,
) -> dict:
    """``method`` (tested: its model is the unlearned one) served its test's support set at each of
    ``strengths``, each from the original weights and with torch's random stream seeded by
    :func:`point_seed` of ``seed`` (the cell's) and the strength, evaluated on the ``loaders`` of the utility
    pools: {strength: {pool: utility}}. At strength 0 the model is the original one, whose utilities the
    Pretrain row measured (``as_it_was``, by pool): they are that point. The model, and torch's random
    stream, are left as the test left them."""
    served = {k: v.clone() for k, v in method.model.state_dict().items()}
    points = {}
    with torch.random.fork_rng(devices=cuda_devices(method.device)):
        original = Classifier.from_checkpoint(method.hparams.pretrain_ckpt, split=method.split).state_dict()
        support = method.support_batch()
        for strength in strengths:
            if strength == 0:
                points[str(float(strength))] = {pool: as_it_was[pool] for pool in UTILITY_POOLS}
                continue
            method.model.load_state_dict(original)
            torch.manual_seed(point_seed(seed, strength))
            with torch.inference_mode(False), torch.enable_grad():
                method.forget_at(support, strength)
            points[str(float(strength))] = utilities(method, loaders)
    method.model.load_state_dict(served)
    return points


def point_seed(seed: int, strength: float) -> int:
    """A curve point's seed, drawn from the cell's ``seed`` and the ``strength``'s exact value alone."""
    return random.Random(f"1-SHUI/curve/{seed}/{float(strength)!r}").getrandbits(63)


def cuda_devices(device: torch.device) -> list[torch.device]:
    """The CUDA devices whose random streams a point on ``device`` draws from (none on the CPU)."""
    return [device] if device.type == "cuda" else []


@torch.inference_mode()
def utilities(method, loaders: Mapping[str, torch.utils.data.DataLoader]) -> dict[str, float]:
    """The method's model on each pool of ``loaders``, as its test evaluates it."""
    evaluation = method.evaluation_of(method.model)
    method.model.eval()
    for pool in UTILITY_POOLS:
        for images, identities, targets in loaders[pool]:
            logits = method.model(images.to(method.device))
            evaluation.update(pool, logits, targets, identities)
    return evaluation.utilities()


def curve_rows(records: Mapping[tuple[int, str, str, int], dict]) -> list[dict]:
    """curves.csv: a row per method, strength, seed and unlearning seed, paired with the seed's Pretrain
    and Retrain rows."""
    rows = []
    for (seed, kind, label, u), record in records.items():
        if kind != "row" or "curve" not in record:
            continue
        before = records[(seed, "row", differences.REFERENCE, 0)]["metrics"]
        retrained = records[(seed, "row", "Retrain", 0)]["metrics"]["forget"]
        for strength, point in record["curve"].items():
            rows.append(
                {
                    "row": label,
                    "strength": float(strength),
                    "seed": seed,
                    "unlearning_seed": u,
                    **{pool: point[pool] for pool in UTILITY_POOLS},
                    "retain_drop": before["retain"] - point["retain"],
                    "gap_closed": differences.share_closed(before["forget"], point["forget"], retrained),
                }
            )
    return rows


def reach(points: Sequence[tuple[float, float]], max_drop: float = MAX_RETAIN_DROP) -> float:
    """The largest share of the gap closed at a retain drop of at most ``max_drop`` along a curve:
    ``points`` are its (retain drop, gap closed) in the order of strength, from Pretrain's (0, 0), which
    every curve starts at (strength 0). Between two points the curve is a straight line, so where it
    crosses ``max_drop`` the share there is interpolated."""
    curve = [(0.0, 0.0), *points]
    best = 0.0
    for (drop, gap), (next_drop, next_gap) in zip(curve, curve[1:], strict=False):
        if drop <= max_drop:
            best = max(best, gap)
        if (drop <= max_drop) != (next_drop <= max_drop):  # the segment crosses max_drop
            at = (max_drop - drop) / (next_drop - drop)
            best = max(best, gap + at * (next_gap - gap))
    if curve[-1][0] <= max_drop:
        best = max(best, curve[-1][1])
    return best


def reaches(rows: Sequence[Mapping]) -> dict[tuple[str, int, int], float]:
    """:func:`reach` of every method's curve at every seed and unlearning seed (those without a gap to
    close left out)."""
    curves: dict[tuple[str, int, int], list[Mapping]] = {}
    for row in rows:
        curves.setdefault((row["row"], *differences.seed_of(row)), []).append(row)
    return {
        key: reach(
            [(row["retain_drop"], row["gap_closed"]) for row in sorted(mine, key=lambda r: r["strength"])]
        )
        for key, mine in curves.items()
        if all(row["gap_closed"] is not None for row in mine)
    }


def add_reach(rows: Sequence[dict], points: Sequence[Mapping]) -> None:
    """Each results row's ranking number (column :data:`REACH`), read from its curve's ``points`` (the
    curve rows) at the row's seed and unlearning seed; None where its curve has no gap to close."""
    reached = reaches(points)
    for row in rows:
        row[REACH] = reached.get((row["row"], *differences.seed_of(row)))


def ranking(rows: Sequence[Mapping]) -> dict[str, differences.Estimate]:
    """Each method's ranking number: :func:`reach` over its seeds, the mean with its interval."""
    by_method: dict[str, list[tuple[int, float]]] = {}
    for (label, seed, _), value in reaches(rows).items():
        by_method.setdefault(label, []).append((seed, value))
    return {label: differences.over_seeds(values) for label, values in by_method.items()}


def summarise(
    rows: Sequence[Mapping],
) -> dict[str, list[tuple[float, differences.Estimate, differences.Estimate]]]:
    """Each method's curve over seeds: (strength, gap closed, retain drop), means with their intervals, in
    the order of strength (strengths where no seed has a gap to close are left out)."""
    points: dict[tuple[str, float], list[Mapping]] = {}
    for row in rows:
        points.setdefault((row["row"], row["strength"]), []).append(row)
    curves: dict[str, list] = {}
    for (label, strength), mine in sorted(points.items(), key=lambda item: item[0][1]):
        gaps = [(row["seed"], row["gap_closed"]) for row in mine if row["gap_closed"] is not None]
        if gaps:
            drop = differences.over_seeds([(row["seed"], row["retain_drop"]) for row in mine])
            curves.setdefault(label, []).append((strength, differences.over_seeds(gaps), drop))
    return curves


def markdown(ranked: Mapping[str, differences.Estimate], strengths: Sequence[float]) -> str:
    """The ranking numbers under the table, with what they mean."""
    lines = [
        "### Strength curves",
        "",
        f"| | gap closed at a retain drop of at most {MAX_RETAIN_DROP:g} point, % |",
        "|---|---:|",
        *(f"| {label} | {e.mean:.1f} [{e.low:.1f}, {e.high:.1f}] |" for label, e in ranked.items()),
        "",
        f"Each method served again at {', '.join(f'{s:g}' for s in strengths)} times its operating point "
        "(its declared strength option; 1 is the VAL choice) from its one preparation; per seed, the "
        "largest share of the memorisation gap closed along the curve at a retain drop of at most "
        f"{MAX_RETAIN_DROP:g} point (interpolated between strengths), the mean over seeds with its 95 % "
        "interval. curves.csv has every point, curves.png the curves.",
    ]
    return "\n".join(lines) + "\n"
