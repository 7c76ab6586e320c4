"""`one-shui-split`: make (or check) the 1-SHUI split of a dataset, save it as JSON and print a summary."""

from __future__ import annotations

import time
from collections import Counter

from jsonargparse import ArgumentParser

from .. import layout
from ..errors import exit_on_user_error
from .config import data_parser
from .datamodule import IdentityDataModule
from .request import write_request


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
    """Console entry point: a user error is one line on stderr and exit status 1."""
    parser = data_parser(description=__doc__, exit_on_error=False)
    parser.add_argument(
        "--out",
        type=str | None,
        default=None,
        help="where to save the split JSON (default: outputs/<dataset>/N<N>-seed<seed>/split.json)",
    )
    parser.add_argument(
        "--request-folder",
        type=str | None,
        default=None,
        help="also write the split's forget request there, ready for one-shui-forget: each forget "
        "identity's support portrait and request.csv (image, identity, targets)",
    )
    exit_on_user_error("one-shui-split", lambda: split(parser, parser.parse_args(args)))


def split(parser: ArgumentParser, cfg) -> None:
    start = time.perf_counter()
    data = parser.instantiate(cfg).data
    data.setup()
    elapsed = time.perf_counter() - start
    out = cfg.out or layout.setting_dir(data.name, data.split.request_size, data.split.seed) / layout.SPLIT
    print(summarise(data))
    print(f"\nsplit saved to {data.save_split(out)} (data ready in {elapsed:.1f} s)")
    if cfg.request_folder:
        request = write_request(data, cfg.request_folder)
        print(f"forget request of {len(data.split.forget)} people written to {request}, with their portraits")
