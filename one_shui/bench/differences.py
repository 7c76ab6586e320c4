"""Paired statistics of a bench (PROTOCOL §9): what a row changed, with an interval a reviewer can trust.

Every row of one training seed shares that seed's split, pretrain and retrain, so a row's effect is the
paired difference d(r, m, s) = m(r, s) - m(Pretrain, s), per metric m and seed s. Its estimate is the mean
of d over seeds, with a 95 % bootstrap interval (:func:`scipy.stats.bootstrap`, a fixed seed,
:data:`RESAMPLES` resamples) stratified by seed:

- every metric of the table (one value per seed): the mean over seeds, seeds resampled;
- where each forgotten person's forget metric before and after is known (``identities.csv``), also the
  forget difference per person (:data:`PER_PERSON`): the mean over seeds of the mean over people, people
  resampled within each seed. It is another metric than the pool's forget (the metric on one person's
  few images, near its ceiling), so it stands beside it rather than in its place.

The interval is BCa (bias-corrected and accelerated) where every stratum holds more than 3 values (the
people of a seed); otherwise it is the percentile interval, because BCa's acceleration is a jackknife
over the values and is not defined by 3 of them. With the 3 seeds of a bench, the seeds' interval is
that of the 10 distinct resampled means: it runs from about the lowest seed's difference to the highest,
and a difference is marked only when every seed moved the same way. Identical values give an interval of
width 0; a single seed, none (NaN: there is nothing to resample).

With several **unlearning seeds** per training seed (the bench's ``unlearning_seeds``: each method prepared
and served again on the same pretrain with other randomness), a training seed's value is the mean over
its unlearning seeds, and the interval is nested (:func:`over_seeds`): each resample draws training seeds,
then unlearning seeds within each drawn one (the percentile interval of :data:`RESAMPLES` such means).

The **share of the memorisation gap closed**, g(r, s) = (forget(Pretrain, s) - forget(r, s)) /
(forget(Pretrain, s) - forget(Retrain, s)), is 1 for the retrained model's forgetting, 0 for none, above 1
for over-forgetting; seeds whose gap is below :data:`MIN_GAP` points are left out (nothing to divide).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import bootstrap

CONFIDENCE = 0.95
RESAMPLES = 2000
RANDOM_SEED = 0  # the bootstrap's: the same rows give the same intervals
MIN_GAP = 1.0  # points of the forget metric: a seed's memorisation gap below this is not divided by
REFERENCE = "Pretrain"  # the row every difference is taken from
# The results.csv columns compared (a bench's table has the first eight, the sequential bench's some of
# them and the last two).
METRICS = (
    "retain", "forget", "test", "tow", "mia_auc", "mia_forget_non_member", "rmia_auc",
    "rmia_tpr_at_low_fpr", "forget_request", "check_drop",
)  # fmt: skip
GAP_CLOSED = "gap_closed"
PER_PERSON = "forget_per_person"  # each forgotten person's forget metric, after minus before
NESTED = "training seeds, then unlearning seeds"  # what a nested interval resampled
PEOPLE = "people within seeds"  # what an interval over people resampled


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95 % interval, the number of seeds it pairs and what the bootstrap resampled."""

    mean: float
    low: float
    high: float
    seeds: int
    resampled: str  # "seeds" or "people within seeds"

    def negated(self) -> Estimate:
        """The estimate of the opposite difference (the interval mirrored)."""
        return Estimate(-self.mean, -self.high, -self.low, self.seeds, self.resampled)

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly on one side of 0 (never for a missing interval)."""
        return self.low > 0 or self.high < 0


def estimate(strata: Sequence[Sequence[float]], resampled: str) -> Estimate:
    """The mean over ``strata`` of each stratum's mean, with its bootstrap interval resampling within each
    stratum (one stratum of the seeds' values: the seeds are resampled)."""
    samples = [np.asarray(stratum, dtype=float) for stratum in strata]
    mean = float(np.mean([sample.mean() for sample in samples]))
    seeds = len(samples) if len(samples) > 1 else len(samples[0])
    smallest = min(len(sample) for sample in samples)
    if smallest < 2:
        return Estimate(mean, math.nan, math.nan, seeds, resampled)
    if all(np.ptp(sample) == 0 for sample in samples):
        return Estimate(mean, mean, mean, seeds, resampled)
    method = "BCa" if smallest > 3 else "percentile"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # BCa on a stratum of nearly equal values
        result = bootstrap(
            samples,
            _mean_of_means,
            n_resamples=RESAMPLES,
            confidence_level=CONFIDENCE,
            method=method,
            rng=np.random.default_rng(RANDOM_SEED),
        )
    interval = result.confidence_interval
    return Estimate(mean, float(interval.low), float(interval.high), seeds, resampled)


def over_seeds(values: Sequence[tuple[int, float]]) -> Estimate:
    """The mean over training seeds of each seed's mean of its ``values`` ((training seed, value) pairs, a
    value per unlearning seed), with its interval: :func:`estimate`'s over the seeds when each has one
    value, else nested (training seeds resampled, then unlearning seeds within each drawn one; percentile)."""
    strata: dict[int, list[float]] = {}
    for seed, value in sorted(values, key=lambda pair: pair[0]):
        strata.setdefault(seed, []).append(value)
    samples = [np.asarray(stratum, dtype=float) for stratum in strata.values()]
    if all(len(sample) == 1 for sample in samples):
        return estimate([np.concatenate(samples)], "seeds")
    mean = float(np.mean([sample.mean() for sample in samples]))
    rng, seeds = np.random.default_rng(RANDOM_SEED), len(samples)
    # inner[s, b, j]: the mean of a resample of seed s's unlearning seeds, for position j of resample b
    draws = [rng.integers(len(sample), size=(RESAMPLES, seeds, len(sample))) for sample in samples]
    inner = np.stack([sample[draw].mean(-1) for sample, draw in zip(samples, draws, strict=True)])
    drawn = rng.integers(seeds, size=(RESAMPLES, seeds))  # the training seeds of each resample
    means = inner[drawn, np.arange(RESAMPLES)[:, None], np.arange(seeds)].mean(axis=1)
    low, high = np.percentile(means, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
    return Estimate(mean, float(low), float(high), seeds, NESTED)


def over_people(sizes: Sequence[int], statistic, seeds: int) -> Estimate:
    """A statistic of people, e.g. an attack's AUC over positive and negative people, with its percentile
    bootstrap interval resampling people within each of its groups (each seed's positives, each seed's
    negatives): ``sizes`` are the groups' sizes, and ``statistic(*indices)`` takes an index array per group
    (of shape (..., size): a batch of resamples) and gives the value of each (shape (...,)); over
    ``seeds`` training seeds. Percentile, since BCa's jackknife is undefined where every resample gives the
    same value (a perfect attack)."""
    indices = [np.arange(size) for size in sizes]
    mean = float(statistic(*indices))
    result = bootstrap(
        indices,
        lambda *drawn, axis: statistic(*drawn),  # drawn along the last axis, which is the statistic's
        axis=-1,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(RANDOM_SEED),
    )
    interval = result.confidence_interval
    return Estimate(mean, float(interval.low), float(interval.high), seeds, PEOPLE)


def _mean_of_means(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean([sample.mean(axis=axis) for sample in samples], axis=0)


def paired(
    rows: Sequence[Mapping],
    identities: Sequence[Mapping] = (),
    by: Sequence[str] = (),
) -> dict[tuple, dict[str, Estimate]]:
    """Per row (keyed by its label and the ``by`` columns, e.g. the request k), each metric's difference
    from Pretrain at the same seed (and ``by``), the share of the memorisation gap closed and, where
    ``identities`` (identities.csv's rows) has the row's people, the forget difference per person.
    A row's values at each unlearning seed (its ``unlearning_seed``, 0 when absent) pair with Pretrain's
    at the same training seed; the interval nests them (:func:`over_seeds`)."""
    values = {(row["row"], *(row[key] for key in by), *seed_of(row)): row for row in rows}
    people = _per_person(identities)
    result: dict[tuple, dict[str, Estimate]] = {}
    for label, *at in dict.fromkeys((row["row"], *(row[key] for key in by)) for row in rows):
        if label == REFERENCE:
            continue
        seeds = sorted(key[-2:] for key in values if key[0] == label and list(key[1:-2]) == at)
        pairs = [(values[(label, *at, *key)], values.get((REFERENCE, *at, key[0], 0))) for key in seeds]
        pairs = [(row, reference) for row, reference in pairs if reference is not None]
        if not pairs:
            continue
        estimates = {}
        for metric in METRICS:
            differences = [
                (int(row["seed"]), float(row[metric]) - float(reference[metric]))
                for row, reference in pairs
                if row.get(metric) is not None and reference.get(metric) is not None
            ]
            if differences:
                estimates[metric] = over_seeds(differences)
        persons = [people.get((label, *seed_of(row))) for row, _ in pairs]
        if persons and all(persons):
            estimates[PER_PERSON] = estimate(persons, PEOPLE)
        gap = gap_closed(values, label, at, [seed_of(row) for row, _ in pairs])
        if gap is not None:
            estimates[GAP_CLOSED] = gap
        result[(label, *at)] = estimates
    return result


def seed_of(row: Mapping) -> tuple[int, int]:
    """A results row's (training seed, unlearning seed); the unlearning seed is 0 where it has none."""
    return int(row["seed"]), int(row.get("unlearning_seed") or 0)


def _per_person(identities: Sequence[Mapping]) -> dict[tuple[str, int, int], list[float]]:
    """Each row's, seed's and unlearning seed's per-person forget difference (after minus before), in the
    file's order."""
    people: dict[tuple[str, int, int], list[float]] = {}
    for line in identities:
        people.setdefault((line["row"], *seed_of(line)), []).append(
            float(line["after"]) - float(line["before"])
        )
    return people


def gap_closed(
    values: Mapping[tuple, Mapping], label: str, at: Sequence, seeds: Sequence[tuple[int, int]]
) -> Estimate | None:
    """The share of the memorisation gap that ``label`` closed (in %) at each (training seed, unlearning
    seed) of ``seeds`` whose gap is at least :data:`MIN_GAP`, over training seeds; None without a Retrain
    row."""
    shares = []
    for seed, unlearning in seeds:
        before, retrained = values.get((REFERENCE, *at, seed, 0)), values.get(("Retrain", *at, seed, 0))
        row = values[(label, *at, seed, unlearning)]
        if (
            before is None
            or retrained is None
            or None in (before["forget"], retrained["forget"], row["forget"])
        ):
            continue
        share = share_closed(float(before["forget"]), float(row["forget"]), float(retrained["forget"]))
        if share is not None:
            shares.append((seed, share))
    return over_seeds(shares) if shares else None


def share_closed(before: float, after: float, retrained: float) -> float | None:
    """The share (in %) of the memorisation gap, the forget metric ``before`` minus the ``retrained``
    model's, that a model whose forget metric is ``after`` closed; None for a gap below :data:`MIN_GAP`."""
    gap = before - retrained
    return 100 * (before - after) / gap if gap >= MIN_GAP else None


def paired_rows(table: Mapping[tuple, Mapping[str, Estimate]], by: Sequence[str] = ()) -> list[dict]:
    """``paired.csv``'s rows (columns :func:`paired_columns`): one per row (and ``by``) and statistic."""
    return [
        {
            "row": label,
            **dict(zip(by, at, strict=True)),
            "statistic": name,
            "mean": value.mean,
            "low": value.low,
            "high": value.high,
            "excludes_zero": value.excludes_zero,
            "seeds": value.seeds,
            "resampled": value.resampled,
        }
        for (label, *at), estimates in table.items()
        for name, value in estimates.items()
    ]


def paired_columns(by: Sequence[str] = ()) -> list[str]:
    return ["row", *by, "statistic", "mean", "low", "high", "excludes_zero", "seeds", "resampled"]
