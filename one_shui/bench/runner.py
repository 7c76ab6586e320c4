"""`one-shui-bench --config configs/bench/<name>.yaml`: every method on every seed, after that seed's
pretrain and retrain, then the paper's table, plots and W&B dashboards.

    one-shui-bench --config configs/bench/synthetic.yaml               # the embedded default
    one-shui-bench --config configs/bench/celebahq_n20.yaml --seeds '[0]' --data.init_args.root=/datasets

Writes to ``<out>/<name>/``: ``results.csv`` (a row per method x seed: every metric and the wall time of
each phase), ``identities.csv``, ``paired.csv`` (each row's differences from Pretrain with their
intervals), ``results.md`` (the paired table, then the means over seeds) and the PNG plots. Cells
already done are reused, so an interrupted bench run again resumes where it stopped.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

from tqdm import tqdm

from .. import layout
from ..atomic import write_text_atomic
from ..data.splits import Split, images_by_identity
from ..errors import UserError, exit_on_user_error, user_error
from . import curves, differences, environment, person_attack, plots, relearning, report, sequential
from .cells import Runner, plan
from .config import Bench, parse
from .tracking import Tracker


def run_bench(bench: Bench) -> Path:
    """Run (or reuse) every cell, then write the results; returns the results.md path."""
    tracker = Tracker(bench)
    runner, cells = Runner(bench, tracker), plan(bench)
    quiet = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.WARNING)
    # What the imports and the data made lives as long as the bench: out of the collector's sight, the
    # collection after each cell (half a million objects, 0.25 s each time) scans only what came after.
    gc.collect()
    gc.freeze()
    try:
        runner.make_stand_in(cells[0])
        with tqdm(cells, desc=f"bench {bench.name}", unit="cell", dynamic_ncols=True) as bar:
            for cell in bar:
                bar.set_postfix_str(cell.name)
                try:
                    runner.run(cell)
                except Exception as err:
                    cause = user_error(err)
                    if cause is None:
                        raise
                    raise CellError(f"{cell.name}: {cause}") from err
    finally:
        gc.unfreeze()
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
    # one request: the paper's table, with RMIA; several: the table by request (sequential.py)
    write = write_results if bench.requests == 1 else sequential.write_results
    return write(bench, runner, tracker)


def write_results(bench: Bench, runner: Runner, tracker: Tracker) -> Path:
    """The report of a bench of one request: results.csv, identities.csv, paired.csv, results.md and the
    plots (in W&B's summary run too), with the per-person attack where the bench has shadow models; the
    results.md path."""
    # Each run of a W&B sweep has a table of its own.
    folder = bench.folder / f"sweep-{tracker.sweep_run}" if tracker.sweep_run else bench.folder
    records, attacks = runner.at(1), runner.attacks()
    rows = report.result_rows(records, attacks)
    identities = report.identity_rows(records)
    columns, identity_columns = report.COLUMNS, report.IDENTITY_COLUMNS
    seeds = person_attack.seed_attacks(records, runner.data.table)
    people = person_attack.attacks(records, seeds)
    if people:
        person_attack.add_columns(rows, identities, people)
        columns, identity_columns = (
            [*columns, *person_attack.COLUMNS],
            [*identity_columns, *person_attack.IDENTITY_COLUMNS],
        )
    paired = differences.paired(rows, identities)
    if people:  # its differences from Pretrain resample people: paired.csv, beside the others
        person_attack.add_differences(paired, people, seeds)
    relearned = relearning.shares(records)
    if relearned:
        relearning.add_columns(rows, relearned)
        relearning.add_estimates(paired, relearned)
        columns = [*columns, *relearning.COLUMNS]
    strengths, ranked = curves.curve_rows(records), ""
    if strengths:  # the bench's curve: each point, each curve's ranking number in the rows and the table
        report.write_csv(folder / "curves.csv", strengths, curves.COLUMNS)
        curves.add_reach(rows, strengths)
        columns = [*columns, curves.REACH]
        ranked = "\n" + curves.markdown(curves.ranking(strengths), bench.curve)
    if people:
        ranked += "\n" + person_attack.markdown(paired, people, seeds)
    if relearned:
        ranked += "\n" + relearning.markdown(paired, relearning_of(bench))
    report.write_csv(folder / "results.csv", rows, columns)
    report.write_csv(folder / "identities.csv", identities, identity_columns)
    paired_rows = differences.paired_rows(paired)
    report.write_csv(folder / "paired.csv", paired_rows, differences.paired_columns())
    title = f"{bench.name}: N = {bench.request_size}, seeds {report.seeds_of(rows)}"
    env, under = environment.write(folder, tracker.environment, records.values())
    markdown = write_text_atomic(
        folder / "results.md", report.markdown(rows, title, paired) + ranked + "\n" + under
    )
    table, groups = report.summarise(rows), {row["row"]: row["group"] for row in rows}
    seed = bench.seeds[0]
    rocs = {
        "loss MIA": {r["label"]: (r["mia_roc"]["fpr"], r["mia_roc"]["tpr"])
                     for (s, kind, _, u), r in records.items() if kind == "row" and (s, u) == (seed, 0)},
        "RMIA": {label: (a.fpr, a.tpr) for (label, s, u), a in attacks.items() if (s, u) == (seed, 0)},
    }  # fmt: skip
    pngs = [
        plots.paired(paired, groups, rows[0]["metric"], folder / "paired.png", title),
        plots.roc_curves(rocs, seed, folder / "roc.png", title),
        plots.forget_per_identity(identities, rows[0]["metric"], folder / "forget_per_identity.png", title),
        plots.forget_request(*request_photos(runner, seed), folder / "forget_request.png"),
    ]
    if strengths:
        target = paired[("Retrain",)]["retain"].negated()  # Retrain's retain drop: where the whole gap lies
        pngs.append(plots.curves(curves.summarise(strengths), target, folder / "curves.png", title))
    if relearned:
        shown = {label: values for (label, *_), values in paired.items() if relearning.COLUMNS[0] in values}
        pngs.append(plots.relearning(shown, groups, folder / "relearning.png", title))
    if people:
        scores = person_attack.plotted(seeds[seed], people, seed)
        pngs.append(
            plots.person_scores(*scores, groups, folder / "person_scores.png", f"{bench.name}, seed {seed}")
        )
    tracker.summary(folder, rows, table, pngs, env, paired_rows)
    return markdown


def relearning_of(bench: Bench) -> str:
    """The relearning's settings, as the table's title says them."""
    lr = bench.relearn_lr or "the model's training lr"
    sample = bench.relearn_sample or "as many as the support"
    return f"{bench.relearn_steps} steps of plain SGD at {lr}, retain sample: {sample}"


def request_photos(runner: Runner, seed: int) -> tuple[str, Path, list[Path]]:
    """The first forget identity of ``seed``'s split, its support portrait and its other photos."""
    pretrain = Path(runner.record(seed, "stage", layout.PRETRAIN)["checkpoint"])
    split = Split.load(pretrain.with_name(layout.SPLIT))
    identity, table = split.forget[0], runner.data.table
    portrait = table.root / split.support[identity]
    photos = [table.path(row) for row in images_by_identity(table.identities)[identity]]
    return identity, portrait, [photo for photo in photos if photo != portrait]


class CellError(UserError):
    """A cell failed on a user error; the message names the cell and the cause. (A bug in a cell keeps
    its own traceback.)"""


def main(args: list[str] | None = None) -> None:
    """Console entry point: a config or user error is one line on stderr and exit status 1."""
    markdown = exit_on_user_error("one-shui-bench", lambda: run_bench(parse(args)))
    print(markdown.read_text(encoding="utf-8"))
    print(f"results in {markdown.parent}")
