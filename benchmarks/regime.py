"""Is a bench's data in the paper's regime? The model must learn the task (it carries to new people) and
memorise people only a little, so that forgetting someone is a small, selective change. Prints each
target of issue 16 with the figure a finished bench measured (``results.csv``, mean over its seeds):

    python benchmarks/regime.py --config configs/bench/synthetic.yaml

* Pretrain test metric at least 75, and at least 30 points above chance: the metric of a constant score
  on the TEST pool (multilabel: the mean prevalence of the attributes present; classification: the share
  of the most frequent class), averaged over the seeds' splits;
* Pretrain retain minus test at most 12 points;
* the memorisation gap, Pretrain forget minus Retrain forget, between 5 and 20 points and at least
  3 times its standard deviation over seeds;
* Retrain forget within 5 points of Retrain test (the retrained model sees the forgotten as new people);
* classification (MUFAC layout): test accuracy at least 50 %, gap at least 5 points;
* and, without a target, Pretrain's MIA AUC (forget vs TEST; 0.5: the attack cannot tell them apart).

Then, per method, whether it is selective: the change of retain, forget and test from Pretrain
(selective: forget falls at least a point more than retain), and per forgotten person
(``identities.csv``) how many fell and by how much.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np

from one_shui.bench.cells import bench_data
from one_shui.bench.config import parse


def chance(bench, seed: int) -> float:
    """The metric (x100) of a constant score on the TEST pool of ``seed``'s split."""
    split = [f"--data.init_args.seed={seed}", f"--data.init_args.request_size={bench.request_size}"]
    data = bench_data(replace(bench, args=[*bench.args, *split]))
    data.setup()
    targets = np.asarray(data.table.targets)[data.rows["test"]]
    if targets.ndim == 2:
        present = targets.any(axis=0)
        return 100 * float(targets[:, present].mean())
    return 100 * float(np.bincount(targets).max() / len(targets))


def per_seed(rows: list[dict], label: str, key: str) -> list[float]:
    return [float(row[key]) for row in rows if row["row"] == label]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="a bench config, configs/bench/<name>.yaml")
    parser.add_argument("--out", help="the bench's output folder, if not the config's")
    args = parser.parse_args()
    bench = parse(["--config", args.config, *(["--out", args.out] if args.out else [])])
    with open(bench.folder / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    seeds = sorted({int(row["seed"]) for row in rows})
    base = statistics.mean(chance(bench, seed) for seed in seeds)
    mean = statistics.mean
    test, retain = mean(per_seed(rows, "Pretrain", "test")), mean(per_seed(rows, "Pretrain", "retain"))
    forgotten = zip(per_seed(rows, "Pretrain", "forget"), per_seed(rows, "Retrain", "forget"), strict=True)
    gaps = [before - after for before, after in forgotten]
    gap, spread = mean(gaps), statistics.stdev(gaps) if len(gaps) > 1 else 0.0
    new_people = mean(per_seed(rows, "Retrain", "forget")) - mean(per_seed(rows, "Retrain", "test"))
    checks = [
        (f"Pretrain test {test:.1f} >= 75 and >= chance {base:.1f} + 30", test >= max(75, base + 30)),
        (f"Pretrain retain - test {retain - test:.1f} <= 12", retain - test <= 12),
        (f"gap {gap:.1f} +- {spread:.1f} in [5, 20] and >= 3 std", 5 <= gap <= 20 and gap >= 3 * spread),
        (f"|Retrain forget - Retrain test| {abs(new_people):.1f} <= 5", abs(new_people) <= 5),
    ]
    if rows[0]["metric"] == "acc":
        checks.append((f"test accuracy {test:.1f} >= 50 and gap {gap:.1f} >= 5", test >= 50 and gap >= 5))
    print(f"{bench.name}: seeds {', '.join(map(str, seeds))}, metric {rows[0]['metric']}")
    for text, ok in checks:
        print(f"  [{'met' if ok else 'MISSED'}] {text}")
    print(f"  Pretrain MIA AUC {mean(per_seed(rows, 'Pretrain', 'mia_auc')):.3f} (no target; 0.5: chance)")
    selectivity(rows, bench.folder / "identities.csv")


def selectivity(rows: list[dict], identities: Path) -> None:
    """Each method's change from Pretrain (mean over seeds), and its forgotten people's, one by one."""
    with open(identities, newline="") as handle:
        people = list(csv.DictReader(handle))
    before = {
        pool: statistics.mean(per_seed(rows, "Pretrain", pool)) for pool in ("retain", "forget", "test")
    }
    print("change from Pretrain (retain, forget, test); forgotten people whose forget metric fell:")
    for label in dict.fromkeys(row["row"] for row in rows if row["row"] not in ("Pretrain", "Retrain")):
        change = {pool: statistics.mean(per_seed(rows, label, pool)) - before[pool] for pool in before}
        drops = [float(p["before"]) - float(p["after"]) for p in people if p["row"] == label]
        fell = sum(drop > 0 for drop in drops)
        print(
            f"  {label:>12}: {change['retain']:+6.1f} {change['forget']:+6.1f} {change['test']:+6.1f}  "
            f"{'selective' if change['forget'] < change['retain'] - 1 else 'not selective':>13}; "
            f"{fell}/{len(drops)} people fell, by {statistics.mean(drops):.1f} on average"
        )


if __name__ == "__main__":
    main()
