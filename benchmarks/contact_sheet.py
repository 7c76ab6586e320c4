"""A contact sheet of the embedded procedural faces: the first people of the dataset a row each, their
photos side by side, for the README (docs/faces.png).

    python benchmarks/contact_sheet.py                       # 8 people of configs/data/synthetic.yaml
    python benchmarks/contact_sheet.py --people 6 --out sheet.png
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from one_shui.atomic import write_bytes_atomic
from one_shui.data.config import data_parser
from one_shui.data.images import read_rgb
from one_shui.data.sources import read_table
from one_shui.data.splits import images_by_identity
from one_shui.data.synthetic import SyntheticSpec, write_synthetic

CONFIGS = Path(__file__).parents[1] / "configs"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="synthetic", help="configs/data/<data>.yaml (a synthetic one)")
    parser.add_argument("--people", type=int, default=8)
    parser.add_argument("--photos", type=int, default=8, help="photos per person at most")
    parser.add_argument("--zoom", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("docs/faces.png"))
    args = parser.parse_args()
    options = (
        data_parser().parse_args(["--config", str(CONFIGS / "data" / f"{args.data}.yaml")]).data.init_args
    )
    spec = SyntheticSpec(**vars(options.synthetic))
    with tempfile.TemporaryDirectory() as tmp:
        table = read_table(
            options.dataset, write_synthetic(tmp, options.dataset, spec, progress=False).parent
        )
        by_person = images_by_identity(table.identities)
        people = sorted(by_person, key=int)[: args.people]  # the first people of the data
        rows = []
        for person in people:
            paths = [table.path(row) for row in by_person[person][: args.photos]]
            tiles = [np.asarray(read_rgb(path, path)) for path in paths]
            tiles += [np.full_like(tiles[0], 255)] * (args.photos - len(tiles))
            rows.append(np.concatenate(tiles, axis=1))
    sheet = Image.fromarray(np.concatenate(rows, axis=0))
    sheet = sheet.resize((sheet.width * args.zoom, sheet.height * args.zoom), Image.NEAREST)
    png = io.BytesIO()
    sheet.save(png, format="png")
    write_bytes_atomic(args.out, png.getvalue())
    print(f"{len(people)} people of {args.data} in {args.out}")


if __name__ == "__main__":
    main()
