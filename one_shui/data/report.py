"""`one-shui-split`: make (or check) the 1-SHUI split of a dataset, save it as JSON and print a summary."""

from __future__ import annotations

import time
from collections import Counter

from jsonargparse import ActionConfigFile, ArgumentParser

from .datamodule import IdentityDataModule


def summarise(data: IdentityDataModule) -> str:
    """A plain-text report: every pool's identities and images, then the forget request."""
    table, split, counts = data.table, data.split, data.summary()
    total = len(table)
    lines = [
        f"dataset {table.name} at {table.root}: {total} images, {len(set(table.identities))} identities, "
        f"{table.task} over {table.num_classes} classes",
        f"split seed {split.seed}, request size N = {split.request_size}, "
        f"fingerprint {split.fingerprint[:16]}",
        "",
        f"{'pool':<8} {'identities':>10} {'images':>8} {'share':>7}",
    ]
    lines += [
        f"{pool:<8} {ids:>10} {images:>8} {100 * images / total:>6.1f}%"
        for pool, (ids, images) in counts.items()
    ]
    per_identity = Counter(table.identities)
    lines += ["", "forget request (identity: images in training, support image):"]
    lines += [
        f"  {identity}: {per_identity[identity] - 1}, {split.support[identity]}" for identity in split.forget
    ]
    return "\n".join(lines)


def main(args: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__, default_config_files=None)
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_subclass_arguments(IdentityDataModule, "data", required=True)
    parser.add_argument(
        "--out",
        type=str | None,
        default=None,
        help="where to save the split JSON (default: outputs/splits/<dataset>-N<N>-seed<seed>.json)",
    )
    cfg = parser.parse_args(args)
    start = time.perf_counter()
    data = parser.instantiate(cfg).data
    data.setup()
    elapsed = time.perf_counter() - start
    out = cfg.out or f"outputs/splits/{data.table.name}-N{data.split.request_size}-seed{data.split.seed}.json"
    print(summarise(data))
    print(f"\nsplit saved to {data.save_split(out)} (data ready in {elapsed:.1f} s)")
