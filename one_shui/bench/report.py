"""The bench's results: one row per method x seed (``results.csv``), the per-identity forget metric before
and after unlearning (``identities.csv``), the paired differences from Pretrain (``paired.csv``, computed
by :mod:`one_shui.bench.differences`) and ``results.md``: the paired table, then the paper's table of means
over seeds."""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..atomic import write_text_atomic
from ..metrics.rmia import RMIAResult
from ..metrics.tow import tug_of_war
from .config import ORIGINAL
from .differences import PER_PERSON, Estimate

GROUPS = {
    "original": None,
    "1-SHUI": "*1-SHUI methods (support images only)*",
    "full-data": "*Full-data references (not 1-SHUI: they read all of D_f and D_r)*",
}
COLUMNS = [
    "row", "group", "seed", "unlearning_seed", "method", "reads", "retain", "forget", "test", "tow",
    "mia_auc", "mia_forget_non_member", "rmia_auc", "rmia_tpr_at_low_fpr", "rmia_low_fpr", "fit_s",
    "forget_s", "test_s", "reference_s", "metric", "split", "mia_selection",
]  # fmt: skip
# The table's columns: (results.csv column, header, format, what is best: "max" or "retrain")
TABLE = [
    ("retain", "retain", ".2f", "max"),
    ("forget", "forget", ".2f", "retrain"),
    ("test", "test", ".2f", "max"),
    ("tow", "ToW", ".2f", "max"),
    ("mia_auc", "MIA AUC", ".3f", "retrain"),
    ("rmia_auc", "RMIA AUC", ".3f", "retrain"),
    ("rmia_tpr_at_low_fpr", "RMIA TPR % at low FPR", ".1f", "retrain"),
]

GAP_CLOSED = ("gap_closed", "gap closed %", ".0f")  # a share, not a difference: unsigned


def signed(table: Sequence[tuple], leave_out: frozenset[str] = frozenset()) -> list[tuple[str, str, str]]:
    """A means table's columns as the paired table's: (statistic, header, format), each difference signed."""
    return [(key, header, f"+{form}") for key, header, form, *_ in table if key not in leave_out]


# The paired table's columns: the means table's (its noisy RMIA TPR left out), the gap closed, per person
PAIRED = [
    *signed(TABLE, frozenset({"rmia_tpr_at_low_fpr"})),
    GAP_CLOSED,
    (PER_PERSON, "forget per person", "+.2f"),
]


def group(record: Mapping) -> str:
    if record["label"] in ORIGINAL:
        return "original"
    return "1-SHUI" if record["reads"] == "support" else "full-data"


def reference_of(
    records: Mapping[tuple[int, str, str, int], dict], seed: int, label: str, u: int = 0
) -> dict:
    """RMIA's reference for a row (at unlearning seed ``u``): the same procedure, with the same seeds,
    applied to the retrained model. For Pretrain (no unlearning) that is the retrained model itself, and
    so for Retrain."""
    if label in ORIGINAL:
        return records[(seed, "row", "Retrain", 0)]
    return records[(seed, "reference", label, u)]


def result_rows(
    records: Mapping[tuple[int, str, str, int], dict], attacks: Mapping[tuple[str, int, int], RMIAResult]
) -> list[dict]:
    """One results.csv row per table row, seed and unlearning seed, in the table's order, with its RMIA
    (``attacks``, keyed by label, seed and unlearning seed)."""
    rows = [
        {
            **result_row(records, record, reference_of(records, seed, label, u), attacks[(label, seed, u)]),
            "unlearning_seed": u,
        }
        for (seed, kind, label, u), record in records.items()
        if kind == "row"
    ]
    return in_table_order(rows, ["seed", "unlearning_seed"])


def in_table_order(rows: Sequence[dict], within: Sequence[str]) -> list[dict]:
    """``rows`` in the tables' order: by group, by label as they first come (the config's order), then by
    the ``within`` columns."""
    groups, labels = list(GROUPS), list(dict.fromkeys(row["row"] for row in rows))
    return sorted(
        rows,
        key=lambda row: (groups.index(row["group"]), labels.index(row["row"]), *(row[k] for k in within)),
    )


def result_row(records: Mapping, record: Mapping, reference: Mapping, result: RMIAResult) -> dict:
    """A results.csv row. The fit of Pretrain and Retrain is their training; ``reference_s``, all of the
    reference cell's time."""
    label, seconds, original = record["label"], record["seconds"], record["label"] in ORIGINAL
    stage = records.get((record["seed"], "stage", label.lower(), 0)) if original else None
    metrics = ("retain", "forget", "test", "mia_auc", "mia_forget_non_member")
    return {
        **{key: record[key] for key in ("seed", "method", "reads", "metric", "split")},
        "row": label,
        "group": group(record),
        **{key: record["metrics"].get(key) for key in metrics},
        "tow": tow(record, records[(record["seed"], "row", "Retrain", 0)]),
        "rmia_auc": result.auc,
        "rmia_tpr_at_low_fpr": result.tpr_at_low_fpr,
        "rmia_low_fpr": result.low_fpr,
        "fit_s": stage["seconds"]["fit"] if stage else seconds.get("fit"),
        "forget_s": seconds["forget"],
        "test_s": seconds["test"],
        "reference_s": None if original else sum(reference["seconds"].values()),
        "mia_selection": record.get("mia_selection", "balanced"),  # cells recorded before the choice existed
    }


def tow(record: Mapping, retrained: Mapping) -> float:
    """A row's ToW against the Retrain row of its seed (and request), from their utilities: what a test
    given the retrained model computes, without running that model again in every row's test."""
    return tug_of_war(record["metrics"], retrained["metrics"])


IDENTITY_COLUMNS = ["row", "group", "seed", "unlearning_seed", "identity", "before", "after"]


def identity_rows(records: Mapping[tuple[int, str, str, int], dict]) -> list[dict]:
    """The forget metric of each forget identity before (Pretrain) and after each row, per seed and
    unlearning seed (:data:`IDENTITY_COLUMNS`)."""
    rows = []
    for (seed, kind, label, u), record in records.items():
        if kind != "row" or label == "Pretrain":
            continue
        before = records[(seed, "row", "Pretrain", 0)]["identities"]
        rows += [
            {"row": label, "group": group(record), "seed": seed, "unlearning_seed": u, "identity": identity,
             "before": value, "after": record["identities"][identity]}
            for identity, value in before.items()
        ]  # fmt: skip
    return rows


def write_csv(path: Path, rows: Sequence[Mapping], columns: Sequence[str]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(path, buffer.getvalue())


def read_csv(path: Path) -> list[dict]:
    """results.csv back, numbers as floats (empty cells as None)."""
    with open(path, newline="", encoding="utf-8") as file:
        return [{key: _number(value) for key, value in row.items()} for row in csv.DictReader(file)]


def _number(value: str):
    if value == "":
        return None
    try:
        return float(value)
    except ValueError:
        return value


def summarise(rows: Sequence[Mapping]) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean and standard deviation over seeds of every table column, per row (in the rows' order)."""
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for label in dict.fromkeys(row["row"] for row in rows):
        mine = [row for row in rows if row["row"] == label]
        table[label] = {}
        for key, *_ in TABLE:
            values = [float(row[key]) for row in mine if row[key] is not None]
            if values:
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                table[label][key] = (statistics.mean(values), spread)
    return table


def best(table: Mapping[str, Mapping[str, tuple[float, float]]], groups: Mapping[str, str]) -> dict[str, str]:
    """The 1-SHUI row with the best mean of each column: the highest, or the closest to Retrain's."""
    winners = {}
    for key, _, _, rule in TABLE:
        candidates = {
            label: row[key][0] for label, row in table.items() if groups[label] == "1-SHUI" and key in row
        }
        retrained = table.get("Retrain", {}).get(key, (math.nan,))[0]
        if not candidates or (rule == "retrain" and math.isnan(retrained)):
            continue
        winners[key] = max(candidates, key=lambda label: _score(candidates[label], rule, retrained))
    return winners


def _score(value: float, rule: str, retrained: float) -> float:
    return value if rule == "max" else -abs(value - retrained)


def interval_cell(value: Estimate | None, form: str, marked: bool = True) -> str:
    """``mean [low, high]``, where ``marked`` (a difference) followed by ``*`` where the interval excludes 0;
    the mean alone without one."""
    if value is None:
        return "–"
    if math.isnan(value.low):
        return f"{value.mean:{form}}"
    text = f"{value.mean:{form}} [{value.low:{form}}, {value.high:{form}}]"
    return f"{text} *" if marked and value.excludes_zero else text


def paired_lines(
    paired: Mapping[tuple, Mapping[str, Estimate]],
    groups: Mapping[str, str],
    columns: Sequence[tuple[str, str, str]] = PAIRED,
    by: Sequence[str] = (),
) -> list[str]:
    """The paired table's lines: a row per table row (and per ``by`` header, e.g. the request k), grouped;
    Pretrain, the origin, is left out."""
    headers = [*by, *(header for _, header, _ in columns)]
    lines = ["| | " + " | ".join(headers) + " |", "|---|" + "---:|" * len(headers)]
    shown, last = None, None
    for (label, *at), estimates in paired.items():
        heading = GROUPS[groups[label]]
        if heading and heading != shown:
            lines.append(f"| {heading} |" + " |" * len(headers))
            shown = heading
        cells = [*map(str, at), *(interval_cell(estimates.get(key), form) for key, _, form in columns)]
        lines.append(f"| {label if label != last else ''} | " + " | ".join(cells) + " |")
        last = label
    return lines


def seeds_of(rows: Sequence[Mapping]) -> str:
    """The training seeds of ``rows``, and how many unlearning seeds each method had where more than one:
    ``0, 1, 2`` or ``0, 1, 2, each method at 3 unlearning seeds``."""
    seeds = ", ".join(str(seed) for seed in sorted({int(row["seed"]) for row in rows}))
    again = max(int(row.get("unlearning_seed") or 0) for row in rows)
    return f"{seeds}, each method at {again + 1} unlearning seeds" if again else seeds


def paired_caption(rows: Sequence[Mapping], people: bool) -> str:
    """What the paired table shows, and how its intervals were drawn (``people``: forget per person)."""
    seeds = seeds_of(rows)
    nested = (
        " With unlearning seeds, a seed's value is the mean over its unlearning seeds, and the interval "
        "resamples training seeds, then unlearning seeds within each (percentile)."
        if any(int(row.get("unlearning_seed") or 0) for row in rows)
        else ""
    )
    per_person = (
        " Forget per person: each forgotten person's own forget metric (identities.csv, on their few "
        "images, near its ceiling) after minus before, people resampled within seeds (BCa)."
        if people
        else ""
    )
    return (
        f"Paired differences from Pretrain (a row minus Pretrain at the same seed): the mean over seeds "
        f"{seeds} [its 95 % bootstrap interval], * where the interval excludes 0; seeds resampled "
        "(percentile: with 3 seeds the interval runs from about the lowest seed's difference to the "
        "highest). Gap closed: the share of the memorisation gap (Pretrain forget minus Retrain forget) "
        "that the row closed, 100 for the retrained model's forgetting, above 100 for over-forgetting."
        + nested
        + per_person
    )


def markdown(rows: Sequence[Mapping], title: str, paired: Mapping[tuple, Mapping[str, Estimate]]) -> str:
    """The paired table (``paired``: :func:`one_shui.bench.differences.paired` of ``rows``), then the
    paper's table of means: Pretrain, Retrain, the 1-SHUI methods, then the full-data references."""
    groups = {row["row"]: row["group"] for row in rows}
    people = any(PER_PERSON in row for row in paired.values())
    lines = [f"## {title}", "", *paired_lines(paired, groups), "", paired_caption(rows, people), ""]
    return "\n".join(lines) + "\n" + means_markdown(rows)


def means_markdown(rows: Sequence[Mapping]) -> str:
    """The paper's table: Pretrain, Retrain, the 1-SHUI methods, then the full-data references."""
    table = summarise(rows)
    groups = {row["row"]: row["group"] for row in rows}
    winners = best(table, groups)
    metric = rows[0]["metric"]
    low_fpr = statistics.mean(float(row["rmia_low_fpr"]) for row in rows)
    published = sorted({row["row"] for row in rows if row.get("mia_selection") == "published"})
    attack = "MIA: the loss-based attack (forget vs TEST)"
    if published:
        attack += (
            f"; for {', '.join(published)} with the published selection: the forest chosen on the "
            "evaluated pools themselves (optimistic), classes not balanced"
        )
    lines = [
        "### Means over seeds",
        "",
        "| | " + " | ".join(header for _, header, _, _ in TABLE) + " |",
        "|---|" + "---:|" * len(TABLE),
    ]
    shown = None
    for label, values in table.items():
        heading = GROUPS[groups[label]]
        if heading and heading != shown:
            lines.append(f"| {heading} |" + " |" * len(TABLE))
            shown = heading
        cells = []
        for key, _, form, _ in TABLE:
            if key not in values:
                cells.append("–")
                continue
            text = f"{values[key][0]:{form}} ± {values[key][1]:{form}}"
            cells.append(f"**{text}**" if winners.get(key) == label else text)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Mean ± std over seeds {seeds_of(rows)}; retain / forget / test: {metric} x100. "
        f"ToW: 100 is the retrained model's utilities. {attack}. RMIA: "
        "offline, its TPR at the lowest FPR that the population and TEST resolve "
        f"(on average {100 * low_fpr:.2f} %); "
        "its reference is the same row's procedure applied to the retrained model. Bold: the best 1-SHUI "
        "method (highest retain, test and ToW; closest to Retrain for forget and the attacks).",
    ]
    return "\n".join(lines) + "\n"
