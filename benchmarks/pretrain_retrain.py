"""Pretrain and retrain over seeds through the `one-shui` CLI; print wall times, the utility of both
models on retain / forget / test and the memorisation gap (forget metric of pretrain minus retrain).

    python benchmarks/pretrain_retrain.py                      # the embedded default, seeds 0 1 2
    python benchmarks/pretrain_retrain.py --data synthetic_mufac --train synthetic_mufac --seeds 0 1 2

The runs go to the run layout under ``--out`` (outputs/benchmarks/pretrain_retrain/<dataset>/N<N>-seed<s>/),
where benchmarks/tune.py finds them.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from tqdm import tqdm

from one_shui import layout
from one_shui.bench.cells import QUIET, run_cli
from one_shui.cli import OneShuiCLI
from one_shui.data.config import data_parser
from one_shui.metrics.tow import UTILITY_POOLS

CONFIGS = Path(__file__).parents[1] / "configs"
OUT = Path("outputs/benchmarks/pretrain_retrain")


def setting(data: str) -> tuple[str, int]:
    """The layout name and the request size of ``configs/data/<data>.yaml``."""
    options = data_parser().parse_args(["--config", str(CONFIGS / "data" / f"{data}.yaml")]).data.init_args
    return layout.dataset_name(options.dataset, options.synthetic is not None), options.request_size


def run_dir(data: str, seed: int, out: Path, stage: str) -> Path:
    """The layout's folder of ``stage`` for ``data`` and ``seed`` under ``out``."""
    name, size = setting(data)
    return layout.run_dir(name, size, seed, stage, root=out)


def run(
    subcommand: str, configs: list[str], seed: int, folder: Path, *extra: str
) -> tuple[OneShuiCLI, float]:
    """`one-shui <subcommand>` on ``configs`` (names under configs/) in ``folder``: the CLI and its time."""
    args = [arg for config in configs for arg in ("--config", str(CONFIGS / f"{config}.yaml"))] + QUIET
    args += [f"--seed_everything={seed}", f"--data.init_args.seed={seed}"]
    return run_cli(subcommand, [*args, f"--trainer.default_root_dir={folder}", *extra])


def measure(data: str, train: str, seed: int, out: Path, bar: tqdm) -> dict[str, float]:
    """Pretrain and retrain at ``seed``, each then tested; ``bar`` moves by one at each stage's end."""
    row: dict[str, float] = {}
    split = layout.checkpoint_dir(run_dir(data, seed, out, layout.PRETRAIN)) / layout.SPLIT
    for stage in (layout.PRETRAIN, layout.RETRAIN):
        bar.set_postfix_str(f"{stage}, seed {seed}")
        pool = ["--data.init_args.train_pool=retain", f"--data.init_args.split_file={split}"]
        extra = pool if stage == layout.RETRAIN else []
        configs, folder = [f"data/{data}", f"train/{train}"], run_dir(data, seed, out, stage)
        cli, row[f"{stage} s"] = run("fit", configs, seed, folder, *extra)
        best = cli.trainer.checkpoint_callback.best_model_path
        cli, _ = run("test", configs, seed, folder, *extra, f"--ckpt_path={best}")
        metric = cli.model.metric
        for pool in UTILITY_POOLS:
            row[f"{stage} {pool}"] = float(cli.trainer.callback_metrics[f"{pool}/{metric}"])
        bar.update()
    row["gap"] = row["pretrain forget"] - row["retrain forget"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="synthetic", help="configs/data/<data>.yaml")
    parser.add_argument("--train", default="synthetic", help="configs/train/<train>.yaml, its recipe")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    # the work counted before it starts: a pretrain and a retrain per seed (a stand-in, made on first use,
    # shows its own progress inside the first)
    with tqdm(total=2 * len(args.seeds), desc="pretrain and retrain", unit="run", dynamic_ncols=True) as bar:
        rows = [measure(args.data, args.train, seed, args.out, bar) for seed in args.seeds]
    print(f"\n{args.data}, seeds {args.seeds}")
    for key in rows[0]:
        values = [row[key] for row in rows]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        each = ", ".join(f"{v:.2f}" for v in values)
        print(f"{key:>18}: {statistics.mean(values):7.2f} +- {spread:5.2f}   ({each})")


if __name__ == "__main__":
    main()
