"""The report of the sequential bench (a bench config with ``requests: K`` above 1): K requests of N
people each, served one after another, request k on the model that request k - 1 wrote, per method and
seed (the cells are every bench's, :func:`one_shui.bench.cells.plan`).

After each request k the model is tested as in the bench (retain, forget, test, ToW, MIA) on the pools
of that moment: everyone forgotten so far is the forget pool (and this request's people alone give
``request``), everyone else of TRAIN is retained, and ToW is against a model retrained without everyone
forgotten so far. Those retrains, and the Pretrain and Retrain rows at each k, are cells shared by every
method. A method is prepared once, at k = 1, on the original model; its preparation serves every k. The
guard's figures (the check set's score before and after each request, and before request 1) say whether
`one-shui-forget` would have refused the request.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..atomic import write_text_atomic
from ..guard import MAX_DROP, MAX_TOTAL_DROP, refuses
from . import differences, environment, plots, report
from .cells import Runner
from .config import Bench
from .tracking import Tracker

COLUMNS = [
    "row", "group", "seed", "unlearning_seed", "request", "method", "reads", "retain", "forget",
    "forget_request", "test", "tow", "mia_auc", "check_before", "check_after", "check_drop", "fit_s",
    "forget_s", "test_s", "metric", "split",
]  # fmt: skip
# The table's columns after k: (results.csv column, header, format)
TABLE = [
    ("retain", "retain", ".2f"),
    ("forget", "forget (all so far)", ".2f"),
    ("forget_request", "forget (request k)", ".2f"),
    ("test", "test", ".2f"),
    ("tow", "ToW", ".2f"),
    ("mia_auc", "MIA AUC", ".3f"),
    ("check_drop", "check drop", ".2f"),
]
# The paired table's columns after k: the table's (the check drop is a difference already), the gap closed
PAIRED = [*report.signed(TABLE, frozenset({"check_drop"})), report.GAP_CLOSED]


def result_rows(records: Mapping[tuple, dict]) -> list[dict]:
    """One results.csv row per table row, seed, unlearning seed and request, in the table's order."""
    rows = []
    for (seed, kind, label, k, u), record in records.items():
        if kind != "row":
            continue
        metrics, seconds = record["metrics"], record["seconds"]
        before, after = metrics.get("check_before"), metrics.get("check_after")
        rows.append(
            {
                **{key: record[key] for key in ("method", "reads", "metric", "split")},
                "row": label,
                "group": report.group(record),
                "seed": seed,
                "unlearning_seed": u,
                "request": k,
                **{key: metrics.get(key) for key in ("retain", "forget", "test", "mia_auc")},
                "tow": report.tow(record, records[(seed, "row", "Retrain", k, 0)]),
                "forget_request": metrics.get("request"),
                "check_before": before,
                "check_after": after,
                "check_drop": before - after if before is not None and after is not None else None,
                "fit_s": seconds.get("fit"),
                "forget_s": seconds["forget"],
                "test_s": seconds["test"],
            }
        )
    return report.in_table_order(rows, ["request", "seed", "unlearning_seed"])


def summarise(rows: Sequence[Mapping]) -> dict[tuple[str, int], dict[str, tuple[float, float]]]:
    """Mean and standard deviation over seeds of every table column, per row and request."""
    table: dict[tuple[str, int], dict[str, tuple[float, float]]] = {}
    for key in dict.fromkeys((row["row"], row["request"]) for row in rows):
        mine = [row for row in rows if (row["row"], row["request"]) == key]
        table[key] = {}
        for column, *_ in TABLE:
            values = [float(row[column]) for row in mine if row[column] is not None]
            if values:
                table[key][column] = (
                    statistics.mean(values),
                    statistics.stdev(values) if len(values) > 1 else 0.0,
                )
    return table


def stopped(
    rows: Sequence[Mapping], max_drop: float = MAX_DROP, max_total_drop: float = MAX_TOTAL_DROP
) -> dict[tuple[str, int], int]:
    """How many seeds' (and unlearning seeds') request the guard of `one-shui-forget` would have refused,
    per row and request: a check drop of more than ``max_drop`` from the model served on, or of more than
    ``max_total_drop`` from the original model of the chain (its check score before request 1)."""
    original = {
        (r["row"], r["seed"], r["unlearning_seed"]): r["check_before"] for r in rows if r["request"] == 1
    }
    counts: dict[tuple[str, int], int] = {}
    for row in rows:
        start = original.get((row["row"], row["seed"], row["unlearning_seed"]))
        key, after = (row["row"], row["request"]), row["check_after"]
        total = start - after if start is not None and after is not None else None
        refused = refuses(row["check_drop"] or 0.0, total or 0.0, max_drop, max_total_drop)
        counts[key] = counts.get(key, 0) + refused
    return counts


def markdown(rows: Sequence[Mapping], title: str, paired: Mapping[tuple, Mapping]) -> str:
    """The tables by request: each row's paired differences from Pretrain after each request k (``paired``:
    :func:`one_shui.bench.differences.paired` by request), then its metrics, mean ± std over seeds."""
    table, refused = summarise(rows), stopped(rows)
    runs = Counter((row["row"], row["request"]) for row in rows)  # seeds x unlearning seeds
    groups = {row["row"]: row["group"] for row in rows}
    lines = [
        f"## {title}",
        "",
        *report.paired_lines(paired, groups, PAIRED, by=["k"]),
        "",
        report.paired_caption(rows, people=False)
        + " After request k, against Pretrain after request k (the original model on that k's pools).",
        "",
        "### Means over seeds",
        "",
        "| | k | " + " | ".join(header for _, header, _ in TABLE) + " | guard stops |",
        "|---|---:|" + "---:|" * (len(TABLE) + 1),
    ]
    for (label, k), values in table.items():
        cells = [
            f"{values[key][0]:{form}} ± {values[key][1]:{form}}" if key in values else "–"
            for key, _, form in TABLE
        ]
        lines.append(
            f"| {label if k == 1 else ''} | {k} | "
            + " | ".join(cells)
            + f" | {refused[(label, k)]}/{runs[(label, k)]} |"
        )
    lines += [
        "",
        f"Mean ± std over seeds {report.seeds_of(rows)}; metrics as in the bench "
        f"({rows[0]['metric']} x100), after request k, each served on the model request k - 1 wrote. Forget "
        "(all so far): everyone forgotten by requests 1 to k; forget (request k): its people alone. ToW: "
        "against a model retrained without everyone forgotten so far. Check drop: the check set's score "
        "before the request minus after it; guard stops: the seeds where `one-shui-forget` would refuse the "
        f"request (a drop above {MAX_DROP:g}, or above {MAX_TOTAL_DROP:g} from the model before request 1).",
    ]
    return "\n".join(lines) + "\n"


def write_results(bench: Bench, runner: Runner, tracker: Tracker) -> Path:
    """results.csv, paired.csv, results.md and the plot by request (in W&B's summary run too); the
    results.md path."""
    folder = bench.folder / f"sweep-{tracker.sweep_run}" if tracker.sweep_run else bench.folder
    rows = result_rows(runner.records)
    paired = differences.paired(rows, by=["request"])
    report.write_csv(folder / "results.csv", rows, COLUMNS)
    paired_rows = differences.paired_rows(paired, by=["request"])
    report.write_csv(folder / "paired.csv", paired_rows, differences.paired_columns(["request"]))
    seeds = report.seeds_of(rows)
    title = f"{bench.name}: {bench.requests} requests of N = {bench.request_size} people, seeds {seeds}"
    env, under = environment.write(folder, tracker.environment, runner.records.values())
    markdown_path = write_text_atomic(folder / "results.md", markdown(rows, title, paired) + "\n" + under)
    table = summarise(rows)
    png = plots.by_request(table, rows[0]["metric"], folder / "by_request.png", title)
    means = {f"{label}/k{k}": values for (label, k), values in table.items()}
    tracker.summary(folder, rows, means, [png], env, paired_rows)
    return markdown_path
