"""Choose a 1-SHUI method's settings on VAL and TRAIN only: never on TEST, never on the real forget set.

    python benchmarks/tune.py --seed 0 --grid meta_lr=0.03,0.1,0.3 lr=1e-4,1e-3
    python benchmarks/tune.py --method jit --grid noise_std=0.03,0.1,0.3 lr=0.01,0.1

For each setting, the method is prepared as ``configs/methods/<method>.yaml`` on ``configs/data/<data>.yaml``
does (its fit, in this process, on the pretrain of benchmarks/pretrain_retrain.py; nothing for a method
without preparation), then scored by a VAL-ToW, the ToW with held-out simulated requests in place of the real
one: each request (a fresh draw over TRAIN, the real forget identities taken out) is served with
``forget``; after it, the other TRAIN people (R) should score as before, the forgotten people's other
images (D_sim) like people the model never saw (the original model's VAL metric), and VAL as before:

    VAL-ToW = 100 * (1 - |m(R; theta_u) - m(R; theta)| / 100)
                  * (1 - |m(D_sim; theta_u) - m(VAL; theta)| / 100)
                  * (1 - |m(VAL; theta_u) - m(VAL; theta)| / 100)

averaged over the requests. Higher is better; 100 is perfect. TEST and the real forget set are never
read. Full-data methods (SCRUB, Bad Teacher) read the real forget and retain sets, so they cannot be
scored this way and are refused.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
from pathlib import Path

import torch
from pretrain_retrain import CONFIGS, OUT, run_dir

from one_shui import layout
from one_shui.bench.cells import QUIET
from one_shui.cli import OneShuiCLI
from one_shui.data.datamodule import RequestBatch
from one_shui.methods.base import UnlearningMethod
from one_shui.metrics.utility import utility_metric

HELD_OUT_EPOCH = 1_000_000  # simulated requests of an epoch that meta-training never reaches


@torch.no_grad()
def utility(method: UnlearningMethod, batches) -> float:
    metric = utility_metric(method.model.hparams.task, method.model.hparams.num_classes)
    for images, _, targets in batches:
        metric.update(method.model(images).float(), targets.long())
    return float(metric.compute())


def without(batch, ids: torch.Tensor):
    """The samples of ``batch`` whose identity id is not in ``ids``."""
    keep = ~torch.isin(batch[1], ids)
    return tuple(t[keep] for t in batch)


def val_tow(method: UnlearningMethod, data, requests: int) -> float:
    """The VAL-ToW of a prepared method (see the module docstring)."""
    val, retain = (
        list(data.loader("val")),
        list(data.loader("retain")),
    )  # retain: TRAIN minus the real request
    original = {k: v.clone() for k, v in method.model.state_dict().items()}
    real = method.identity_ids(list(data.split.forget))
    reference = utility(method, val)
    scores = []
    for request in itertools.islice(data.simulated_request_loader(HELD_OUT_EPOCH), requests):
        request: RequestBatch
        others = [without(batch, request.support[1]) for batch in retain]
        before = utility(method, others)
        with torch.enable_grad():
            method.forget(without(request.support, real))
        terms = (
            utility(method, others) - before,
            utility(method, [without(request.forget, real)]) - reference,
            utility(method, val) - reference,
        )
        scores.append(100 * math.prod(1 - abs(term) / 100 for term in terms))
        method.model.load_state_dict(original)
    return statistics.mean(scores)


def prepared(method: str, data: str, seed: int, out: Path, setting: dict[str, str]) -> OneShuiCLI:
    """``configs/methods/<method>.yaml`` with ``setting`` on the pretrain of seed ``seed`` under ``out``,
    prepared (its fit run in this process; nothing for a method without preparation)."""
    pretrain = layout.checkpoint_dir(run_dir(data, seed, out, layout.PRETRAIN)) / layout.BEST
    args = [
        "--config", str(CONFIGS / "data" / f"{data}.yaml"),
        "--config", str(CONFIGS / "methods" / f"{method}.yaml"), *QUIET,
        f"--seed_everything={seed}", f"--data.init_args.seed={seed}",
        f"--model.init_args.pretrain_ckpt={pretrain}",
        "--model.init_args.retrain_ckpt=null", "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
        f"--trainer.default_root_dir={run_dir(data, seed, out, 'tune')}",
        *(f"--{k if '.' in k else 'model.init_args.' + k}={v}" for k, v in setting.items()),
    ]  # fmt: skip
    cli = OneShuiCLI(args, run=False, layout_defaults=False)
    if cli.model.train_pool is not None:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli


def score(method: str, data: str, seed: int, out: Path, setting: dict[str, str], requests: int) -> float:
    cli = prepared(method, data, seed, out, setting)
    if cli.model.reads != ("support",):
        raise SystemExit(
            f"{method} reads {', '.join(cli.model.reads)}: only 1-SHUI methods are scored on VAL"
        )
    return val_tow(cli.model, cli.datamodule, requests)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--method", default="meta_unlearn", help="configs/methods/<method>.yaml")
    parser.add_argument("--data", default="synthetic", help="configs/data/<data>.yaml")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", nargs="*", default=[], help="name=v1,v2 ... (none: the config as it is)")
    parser.add_argument("--requests", type=int, default=5, help="held-out simulated requests per setting")
    parser.add_argument("--out", type=Path, default=OUT, help="where benchmarks/pretrain_retrain.py ran")
    parser.add_argument(
        "--markdown", action="store_true", help="end with the table as docs/tuning.md gives it"
    )
    args = parser.parse_args()
    axes = [(name, values.split(",")) for name, values in (item.split("=", 1) for item in args.grid)]
    results = []
    for values in itertools.product(*(v for _, v in axes)):
        setting = dict(zip((n for n, _ in axes), values, strict=True))
        results.append(
            (
                score(args.method, args.data, args.seed, args.out, setting, args.requests),
                setting,
            )
        )
        print(f"VAL-ToW {results[-1][0]:6.2f}  {setting}", flush=True)
    best = max(results, key=lambda r: r[0])
    print(f"\nbest on VAL: {best[1]} (VAL-ToW {best[0]:.2f})")
    if args.markdown:
        print("", *table(results, best), sep="\n")


def table(results: list[tuple[float, dict[str, str]]], best: tuple[float, dict[str, str]]) -> list[str]:
    """The grid's results as a markdown table (docs/tuning.md), the best in bold."""
    names = list(best[1])
    lines = ["| " + " | ".join([*names, "VAL-ToW"]) + " |", "|" + "---:|" * (len(names) + 1)]
    for tow, setting in results:
        figure = f"**{tow:.2f}**" if (tow, setting) == best else f"{tow:.2f}"
        lines.append("| " + " | ".join([*setting.values(), figure]) + " |")
    return lines


if __name__ == "__main__":
    main()
