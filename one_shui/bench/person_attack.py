"""The per-person attack of a bench with shadow models (PROTOCOL §10; the attack is
:mod:`one_shui.metrics.lira`): per seed, its shadows fit the Gaussians of every forget and TEST person,
then each row's model is attacked, the forgotten people against TEST's. Written as results.csv's
:data:`COLUMNS`, identities.csv's :data:`IDENTITY_COLUMNS`, a table under results.md's and
person_scores.png."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from .. import layout
from ..data.sources import Table
from ..data.splits import Split, pools
from ..metrics.evaluation import POOL_OF_ROLE
from ..metrics.lira import LOW_FPRS, Gaussians, LiRAResult, auc_of, fit_people, lira, person_scores, tpr_at
from .differences import REFERENCE, Estimate, over_people
from .report import interval_cell

# results.csv's columns of the attack, each the statistic of a row's positives' and negatives' log ratios
STATISTICS = {
    "lira_auc": auc_of,
    "lira_tpr_at_1": partial(tpr_at, low=LOW_FPRS[0]),  # the TPR % at 1 % FPR
    "lira_tpr_at_01": partial(tpr_at, low=LOW_FPRS[1]),  # ... and at 0.1 %
}
COLUMNS = list(STATISTICS)
IDENTITY_COLUMNS = ["lira_before", "lira_after"]  # a forgotten person's log ratio under Pretrain, the row
ROLES = ("forget", "test")  # the photos of the positives and of the negatives


@dataclass(frozen=True)
class SeedAttack:
    """What a seed's shadows make of its people: the split, each shadow's (people it trained on, each
    person's score) and each person's Gaussians."""

    split: Split
    photos: dict[str, list[str]]  # the person of each forget and TEST photo, in the test's order
    shadows: list[tuple[frozenset[str], dict[str, float]]]
    gaussians: dict[str, Gaussians]

    def attack(self, record: Mapping) -> LiRAResult:
        return lira(scores_of(record, self.photos), self.gaussians, self.split.forget, self.split.test)


def photos_of(split: Split, table: Table) -> dict[str, list[str]]:
    """The person of each forget and TEST photo, in the order the test reads them (the pools' order)."""
    rows = pools(split, table.files, table.identities)
    return {role: [table.identities[row] for row in rows[POOL_OF_ROLE[role]]] for role in ROLES}


def scores_of(record: Mapping, photos: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Each forget and TEST person's score under the model of a record with the attack's probabilities
    (``photos``: the person of each of their photos)."""
    return {
        person: score
        for role in ROLES
        for person, score in person_scores(record["probabilities"][role], photos[role]).items()
    }


def seed_attacks(records: Mapping[tuple[int, str, str, int], dict], table: Table) -> dict[int, SeedAttack]:
    """Each seed's :class:`SeedAttack`, from its shadow cells' records (seeds without shadows left out)."""
    attacks = {}
    for seed in sorted({seed for seed, kind, _, _ in records if kind == "shadow"}):
        pretrain = Path(records[(seed, "stage", layout.PRETRAIN, 0)]["checkpoint"])
        split = Split.load(pretrain.with_name(layout.SPLIT))
        photos = photos_of(split, table)
        shadows = [
            (frozenset(record["people"]), scores_of(record, photos))
            for (s, kind, _, _), record in records.items()
            if kind == "shadow" and s == seed
        ]
        attacks[seed] = SeedAttack(split, photos, shadows, fit_people(shadows))
    return attacks


def attacks(
    records: Mapping[tuple[int, str, str, int], dict], seeds: Mapping[int, SeedAttack]
) -> dict[tuple[str, int, int], LiRAResult]:
    """The attack on every row of a seed with shadows, keyed by (label, seed, unlearning seed)."""
    return {
        (label, seed, u): seeds[seed].attack(record)
        for (seed, kind, label, u), record in records.items()
        if kind == "row" and seed in seeds
    }


def add_columns(
    rows: Sequence[dict], identities: Sequence[dict], results: Mapping[tuple, LiRAResult]
) -> None:
    """The attack's figures in the results rows (:data:`COLUMNS`) and each forgotten person's log ratio
    before and after in the identities rows (:data:`IDENTITY_COLUMNS`)."""
    for row in rows:
        result = results[(row["row"], row["seed"], row["unlearning_seed"])]
        row.update(zip(COLUMNS, [result.auc, *(result.tpr_at[low] for low in LOW_FPRS)], strict=True))
    for line in identities:
        before = results[("Pretrain", line["seed"], 0)]
        after = results[(line["row"], line["seed"], line["unlearning_seed"])]
        line.update(lira_before=before.ratios[line["identity"]], lira_after=after.ratios[line["identity"]])


def plotted(
    attack: SeedAttack, results: Mapping[tuple, LiRAResult], seed: int
) -> tuple[dict[str, list[float]], dict[str, tuple[list[float], list[float]]]]:
    """What person_scores.png shows of ``seed`` (see :func:`one_shui.bench.plots.person_scores`): each
    forgotten person's log ratio under each shadow with them in and out, then, per row (at unlearning
    seed 0), the forgotten people's and the TEST people's."""
    shadows: dict[str, list[float]] = {"in": [], "out": []}
    for held, scores in attack.shadows:
        for person in attack.split.forget:
            side = "in" if person in held else "out"
            shadows[side].append(attack.gaussians[person].log_ratio(scores[person]))
    forgotten, negatives = attack.split.forget, attack.split.test
    rows = {
        label: ([result.ratios[p] for p in forgotten], [result.ratios[p] for p in negatives])
        for (label, s, u), result in results.items()
        if (s, u) == (seed, 0)
    }
    return shadows, rows


def ratios_of(
    results: Mapping[tuple, LiRAResult], seeds: Mapping[int, SeedAttack], label: str
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """A row's log ratios at each seed: its positives' (unlearning seeds x people) and its negatives'."""
    ratios = {}
    for seed, attack in seeds.items():
        mine = [result for (row, s, _), result in sorted(results.items()) if (row, s) == (label, seed)]
        ratios[seed] = tuple(
            np.array([[result.ratios[person] for person in people] for result in mine])
            for people in (attack.split.forget, attack.split.test)
        )
    return ratios


def people_estimate(
    results: Mapping[tuple, LiRAResult], seeds: Mapping[int, SeedAttack], label: str, name: str,
    reference: str | None = None,
) -> Estimate:  # fmt: skip
    """A row's statistic ``name`` (of :data:`STATISTICS`), or its paired difference from the ``reference``
    row's: the mean over seeds of its mean over unlearning seeds, with the interval that resamples each
    seed's positives and negatives (:func:`one_shui.bench.differences.over_people`)."""
    measure, rows = STATISTICS[name], [ratios_of(results, seeds, label)]
    if reference:
        rows.append(ratios_of(results, seeds, reference))

    def statistic(*drawn: np.ndarray) -> np.ndarray:
        values = []
        for k, seed in enumerate(seeds):
            held, never = drawn[2 * k], drawn[2 * k + 1]
            per_row = [measure(p[:, held], n[:, never]).mean(0) for p, n in (row[seed] for row in rows)]
            values.append(per_row[0] - per_row[1] if reference else per_row[0])
        return np.mean(values, axis=0)

    sizes = [size for attack in seeds.values() for size in (len(attack.split.forget), len(attack.split.test))]
    return over_people(sizes, statistic, len(seeds))


def add_differences(
    paired: dict[tuple, dict[str, Estimate]],
    results: Mapping[tuple, LiRAResult],
    seeds: Mapping[int, SeedAttack],
) -> None:
    """Each row's paired differences from Pretrain in the attack's statistics, beside the others
    (paired.csv), people resampled within seeds."""
    for label in dict.fromkeys(label for label, _, _ in results):
        if label != REFERENCE:
            paired.setdefault((label,), {}).update(
                {name: people_estimate(results, seeds, label, name, REFERENCE) for name in STATISTICS}
            )


HEADERS = ["AUC", "TPR % at 1 % FPR", "TPR % at 0.1 % FPR", "AUC minus Pretrain's", "AUC minus Retrain's"]
FORMS = (".3f", ".1f", ".1f")


def markdown(
    paired: Mapping[tuple, Mapping[str, Estimate]], results: Mapping[tuple, LiRAResult],
    seeds: Mapping[int, SeedAttack],
) -> str:  # fmt: skip
    """The attack's table: each row's AUC and TPRs with their intervals, and its AUC's paired difference
    from Pretrain's and from Retrain's."""
    shadows = min(len(attack.shadows) for attack in seeds.values())
    lines = [
        f"### Per-person attack (LiRA on people, {shadows} shadow models per seed)",
        "",
        "| | " + " | ".join(HEADERS) + " |",
        "|---|" + "---:|" * len(HEADERS),
    ]
    for label in dict.fromkeys(label for label, _, _ in results):
        cells = [
            interval_cell(people_estimate(results, seeds, label, name), form, marked=False)
            for name, form in zip(STATISTICS, FORMS, strict=True)
        ]
        cells.append(interval_cell(paired.get((label,), {}).get("lira_auc"), "+.3f"))
        retrained = (
            people_estimate(results, seeds, label, "lira_auc", "Retrain") if label != "Retrain" else None
        )
        cells.append(interval_cell(retrained, "+.3f"))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    positives = min(len(attack.split.forget) for attack in seeds.values())
    lines += ["", caption(sorted(seeds), positives, min(len(attack.split.test) for attack in seeds.values()))]
    return "\n".join(lines) + "\n"


def caption(seeds: Sequence[int], positives: int, negatives: int) -> str:
    resolved = (
        "both TPRs are at an FPR of 0" if negatives < 100
        else "the 0.1 % TPR is at an FPR of 0" if negatives < 1000
        else "both FPRs are resolved"
    )  # fmt: skip
    return (
        f"Each seed's {positives} forgotten people (positives) against its {negatives} or more TEST people "
        "(negatives), each scored by the log likelihood ratio of the row's model's confidence on their "
        "photos under Gaussians fitted to the shadow models with them in and out (identities.csv: each "
        "forgotten person's, before and after). The mean over seeds "
        f"{', '.join(map(str, seeds))} [95 % percentile bootstrap interval, people resampled within "
        "seeds]. TPR: the highest TPR whose FPR is at most 1 % or 0.1 %; with "
        f"{negatives} negatives the lowest FPR above 0 is {100 / negatives:.1f} %, so {resolved}. "
        "AUC minus Pretrain's, minus Retrain's: the paired difference (the same people, the same seed), * "
        "where its interval excludes 0."
    )
