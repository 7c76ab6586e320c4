"""Unlearning methods over seeds through the `one-shui` CLI, after the pretrain and retrain of each seed
(run first when missing): retain / forget / test utility, ToW and MIA of every method, mean +- std,
with the wall time of each method's fit (its preparation) and test (forget, then the evaluation).

    python benchmarks/unlearning.py                        # the embedded default, seeds 0 1 2
    python benchmarks/unlearning.py --methods no_unlearning meta_unlearn:update=last_blocks,meta_lr=3

A method is ``configs/methods/<name>_<dataset>.yaml``; ``<name>:<key>=<value>,...`` sets its model
options, e.g. ``meta_unlearn:update=last_blocks``. Run folders are those of
benchmarks/pretrain_retrain.py.
"""

from __future__ import annotations

import argparse
import re
import statistics
from pathlib import Path

from pretrain_retrain import CONFIGS, measure, run

from one_shui.methods.base import config_model, method_class
from one_shui.metrics.tow import POOLS

KEYS = [*POOLS, "tow", "mia_auc", "mia_forget_non_member", "forget_seconds"]


def needs_fit(config: str) -> bool:
    """Whether the method of ``configs/<config>.yaml`` has a preparation (a training step)."""
    return method_class(config_model(CONFIGS / f"{config}.yaml")[0]).has_preparation()


def method_row(method: str, dataset: str, seed: int, out: Path, original: str = "pretrain") -> dict:
    """Fit (when the method has a preparation) and test ``method`` on ``seed``: metrics and wall times.

    ``original`` is the model the method starts from: ``retrain`` with ``no_unlearning`` is the Retrain row.
    """
    name, _, options = method.partition(":")
    folder, config = out / f"seed{seed}", f"methods/{name}_{dataset}"
    run_dir = folder / (re.sub(r"[^\w.-]+", "_", method) if original == "pretrain" else original)
    bound = [
        f"--data.init_args.split_file={folder / 'pretrain/checkpoints/best.ckpt'}",
        f"--model.init_args.pretrain_ckpt={folder / original / 'checkpoints/best.ckpt'}",
        f"--model.init_args.retrain_ckpt={folder / 'retrain/checkpoints/best.ckpt'}",
        *(f"--model.init_args.{option}" for option in options.split(",") if option),
    ]
    row, resume = {}, []
    if needs_fit(config):
        _, row["fit s"] = run("fit", config, seed, run_dir, *bound)
        resume = [f"--ckpt_path={run_dir / 'checkpoints/last.ckpt'}"]
    cli, row["test s"] = run("test", config, seed, run_dir, *bound, *resume)
    results, metric = cli.model.results, cli.model.evaluation.metric
    row.update({key: float(results[f"{key}/{metric}" if key in POOLS else key]) for key in KEYS})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--methods", nargs="+", default=["no_unlearning", "meta_unlearn", "meta_unlearn:update=last_blocks"]
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmarks/pretrain_retrain"))
    args = parser.parse_args()
    out = args.out / args.dataset
    table: dict[str, list[dict[str, float]]] = {method: [] for method in ["retrain", *args.methods]}
    for seed in args.seeds:
        if not (out / f"seed{seed}" / "retrain/checkpoints/best.ckpt").is_file():
            measure(args.dataset, seed, out)
        table["retrain"].append(method_row("no_unlearning", args.dataset, seed, out, original="retrain"))
        for method in args.methods:
            table[method].append(method_row(method, args.dataset, seed, out))
    print(f"\n{args.dataset}, seeds {args.seeds}: mean +- std")
    for method, rows in table.items():
        cells = []
        for key in rows[0]:
            values = [row[key] for row in rows]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{key} {statistics.mean(values):.2f} +- {spread:.2f}")
        print(f"{method:>26}: " + " | ".join(cells))


if __name__ == "__main__":
    main()
