"""Paired comparisons between two rows of a finished bench with shadow models: the difference of the
per-person attack's AUC (people resampled within seeds, as the bench's table) beside the population
attacks' (RMIA and the loss MIA, seeds resampled) and, where the bench relearns, of the share of the gap
kept after relearning on each sample (seeds resampled), so that a ranking is read with its intervals:

    python benchmarks/attack_pairs.py --config configs/bench/attacks_synthetic.yaml --seeds '[0,1,2]' \\
        --pair SSD SCRUB --pair 'Gradient ascent' SLUG

Every other argument is the bench's; its cells are reused (a cell not run yet runs first).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from one_shui.bench import differences, person_attack, relearning, report
from one_shui.bench.cells import Runner, plan
from one_shui.bench.config import parse
from one_shui.bench.tracking import Tracker


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pair", nargs=2, action="append", required=True, metavar=("ROW", "OTHER"))
    options, rest = parser.parse_known_args()
    bench = parse(rest)
    runner = Runner(bench, Tracker(bench))
    for cell in plan(bench):
        runner.run(cell)
    records = runner.at(1)
    seeds = person_attack.seed_attacks(records, runner.data.table)
    people = person_attack.attacks(records, seeds)
    rows = report.result_rows(records, runner.attacks())
    relearning.add_columns(rows, relearning.shares(records))
    values = {(row["row"], row["seed"], row["unlearning_seed"]): row for row in rows}
    for row, other in options.pair:
        lines = [("per-person AUC", person_attack.people_estimate(people, seeds, row, "lira_auc", other))]
        compared = [("rmia_auc", "RMIA AUC"), ("mia_auc", "loss MIA AUC")]
        compared += [(key, f"gap kept after relearning on {key[5:]} %") for key in relearning.KEPT]
        for metric, name in compared:
            pairs = [
                (s, value[metric] - values[(other, s, u)][metric])
                for (r, s, u), value in values.items()
                if r == row and value[metric] is not None and values[(other, s, u)][metric] is not None
            ]
            if pairs:
                lines.append((name, differences.over_seeds(pairs)))
        for name, estimate in lines:
            cell = report.interval_cell(estimate, "+.1f" if name.endswith("%") else "+.3f")
            print(f"{row} minus {other}, {name}: {cell} ({estimate.resampled})")
    print(f"bench {bench.name} in {Path(bench.out) / bench.name}")


if __name__ == "__main__":
    main()
