"""How far a method moves the original model when it serves the real request of the embedded default:
||delta theta|| / ||theta|| over the backbone's parameters (seed 0, the pretrain of
benchmarks/pretrain_retrain.py), and for PGU the share of the training inputs' energy that its protected
subspaces hold.

    python benchmarks/step_size.py                                  # every method at its config's values
    python benchmarks/step_size.py --method jit --set lr=3.0 noise_std=1.0
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from pretrain_retrain import OUT
from torch.nn.utils import parameters_to_vector
from tune import prepared

from one_shui.methods.pgu import PGU, kept_energy

METHODS = ("meta_unlearn", "ssd", "pgu", "jit", "scrub", "bad_teacher")


def kept_energy_shares(method: PGU, data) -> str:
    """Per layer, the share of the training inputs' energy inside the directions PGU protects."""
    support = next(iter(data.loader("support", batch_size=len(data.rows["support"]))))
    bases = method.protected_bases(support[0])
    shares = sorted(100 * kept_energy(method.train_moment(name), basis) for name, basis in bases.items())
    median = statistics.median(shares)
    return f"kept energy share per layer {shares[0]:.0f} to {shares[-1]:.0f} % (median {median:.0f} %)"


def relative_change(method: str, data: str, seed: int, out: Path, setting: dict[str, str]) -> str:
    cli = prepared(method, data, seed, out, setting)
    network = cli.model.model.network
    line = ""
    if isinstance(cli.model, PGU):
        line = "   " + kept_energy_shares(cli.model, cli.datamodule)
    before = parameters_to_vector(network.parameters()).detach().clone()
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    change = parameters_to_vector(network.parameters()).detach() - before
    return f"{method:12s} ||delta theta|| / ||theta|| = {float(change.norm() / before.norm()):.3e}{line}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--method", nargs="*", default=METHODS, help="configs/methods/<method>.yaml")
    parser.add_argument("--data", default="synthetic", help="configs/data/<data>.yaml")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], help="name=value ... for every method")
    parser.add_argument("--out", type=Path, default=OUT, help="where benchmarks/pretrain_retrain.py ran")
    args = parser.parse_args()
    setting = dict(item.split("=", 1) for item in args.set)
    torch.manual_seed(args.seed)
    for method in args.method:
        print(relative_change(method, args.data, args.seed, args.out, setting), flush=True)


if __name__ == "__main__":
    main()
