"""Pretrain and retrain over seeds through the `one-shui` CLI; print wall times, the utility of both
models on retain / forget / test and the memorisation gap (forget metric of pretrain minus retrain).

    python benchmarks/pretrain_retrain.py                      # the embedded default, seeds 0 1 2
    python benchmarks/pretrain_retrain.py --dataset synthetic_mufac --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from one_shui.bench.cells import QUIET, run_cli
from one_shui.cli import OneShuiCLI
from one_shui.metrics.tow import POOLS

CONFIGS = Path(__file__).parents[1] / "configs"


def run(subcommand: str, config: str, seed: int, run_dir: Path, *extra: str) -> tuple[OneShuiCLI, float]:
    """`one-shui <subcommand> --config configs/<config>.yaml` in ``run_dir``: the CLI and its time."""
    args = ["--config", str(CONFIGS / f"{config}.yaml"), *QUIET]
    args += [f"--seed_everything={seed}", f"--data.init_args.seed={seed}"]
    return run_cli(subcommand, [*args, f"--trainer.default_root_dir={run_dir}", *extra])


def measure(dataset: str, seed: int, out: Path) -> dict[str, float]:
    row: dict[str, float] = {}
    for experiment in ("pretrain", "retrain"):
        bound = [f"--data.init_args.split_file={out / f'seed{seed}' / 'pretrain/checkpoints/best.ckpt'}"]
        extra = bound if experiment == "retrain" else []
        config, run_dir = f"{experiment}/{dataset}", out / f"seed{seed}" / experiment
        cli, row[f"{experiment} s"] = run("fit", config, seed, run_dir, *extra)
        best = cli.trainer.checkpoint_callback.best_model_path
        cli, _ = run("test", config, seed, run_dir, *extra, f"--ckpt_path={best}")
        metric = cli.model.metric
        for pool in POOLS:
            row[f"{experiment} {pool}"] = float(cli.trainer.callback_metrics[f"{pool}/{metric}"])
    row["gap"] = row["pretrain forget"] - row["retrain forget"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="synthetic", help="configs/{pretrain,retrain}/<dataset>.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmarks/pretrain_retrain"))
    args = parser.parse_args()
    rows = [measure(args.dataset, seed, args.out / args.dataset) for seed in args.seeds]
    print(f"\n{args.dataset}, seeds {args.seeds}")
    for key in rows[0]:
        values = [row[key] for row in rows]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        each = ", ".join(f"{v:.2f}" for v in values)
        print(f"{key:>18}: {statistics.mean(values):7.2f} +- {spread:5.2f}   ({each})")


if __name__ == "__main__":
    main()
