"""The data layer at CelebA's size: a tree in the CelebA layout (made here, never shipped) through the
reader, the audit, the split and the datamodule's loaders, each stage's time and peak memory.

    python benchmarks/data_layer.py --root /tmp/celeba_sized                 # 202,599 images, 10,177 people
    python benchmarks/data_layer.py --root /tmp/small --images 20000 --identities 1000

The images are 178 x 218 JPEGs (CelebA's aligned size), smooth and each one different, so that the audit
finds no duplicates; the annotation files are in the official formats. Each stage runs in a fresh process
after the stages before it (the audit's cache makes those cheap), so its peak resident memory is its own
plus what it needs of them. The loaders read TRAIN with the paper's train transform at 224 px, batch 64.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 178, 218
STAGES = ("read", "audit", "split", "loaders")


def image_bytes(index: int) -> bytes:
    """A smooth 178 x 218 JPEG of its own: a gradient whose colours and direction follow ``index``."""
    rng = np.random.default_rng(index)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    angle, colours = rng.uniform(0, np.pi), rng.uniform(0, 255, size=(2, 3))
    t = (np.cos(angle) * x / WIDTH + np.sin(angle) * y / HEIGHT)[..., None] / 2 + 0.25
    pixels = ((1 - t) * colours[0] + t * colours[1]).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _write_images(folder: Path, indices: range) -> None:
    for index in indices:
        (folder / f"{index + 1:06d}.jpg").write_bytes(image_bytes(index))


def generate(root: Path, images: int, identities: int, workers: int) -> None:
    """The CelebA tree under ``root``: images, identities (consecutive blocks, as many images each as can
    be), 40 random attributes, the partitions, boxes and landmarks."""
    folder = root / "celeba"
    pictures = folder / "img_align_celeba"
    pictures.mkdir(parents=True, exist_ok=True)
    chunks = [range(start, min(start + 2000, images)) for start in range(0, images, 2000)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_images, [pictures] * len(chunks), chunks))
    rng = np.random.default_rng(0)
    names = [f"{i:06d}.jpg" for i in range(1, images + 1)]
    people = np.sort(rng.integers(1, identities + 1, size=images))
    attributes = [
        "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
        "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby",
        "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male",
        "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose",
        "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair",
        "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
    ]  # fmt: skip
    signs = rng.choice(np.array([-1, 1]), size=(images, len(attributes)))
    rows = (f"{n} " + " ".join(f"{v:2d}" for v in s) for n, s in zip(names, signs, strict=True))
    _lines(folder / "list_attr_celeba.txt", [str(images), " ".join(attributes) + " ", *rows])
    _lines(folder / "identity_CelebA.txt", (f"{n} {p}" for n, p in zip(names, people, strict=True)))
    _lines(folder / "list_eval_partition.txt", (f"{n} {i % 3}" for i, n in enumerate(names)))
    boxes = rng.integers(0, 400, size=(images, 4))
    _lines(
        folder / "list_bbox_celeba.txt",
        [str(images), "image_id x_1 y_1 width height ",
         *(n + "".join(f"{v:5d}" for v in b) for n, b in zip(names, boxes, strict=True))],
    )  # fmt: skip
    marks = rng.integers(0, HEIGHT, size=(images, 10))
    parts = ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")
    landmarks = " ".join(f"{part}_{axis}" for part in parts for axis in "xy")
    rows = (n + "".join(f"{v:5d}" for v in m) for n, m in zip(names, marks, strict=True))
    _lines(folder / "list_landmarks_align_celeba.txt", [str(images), landmarks, *rows])


def _lines(path: Path, lines) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def data(root: Path, cache: Path, workers: int = 0):
    from one_shui.data.datamodule import IdentityDataModule

    return IdentityDataModule(
        "celeba", str(root), request_size=20, verify_md5=False, image_size=224, batch_size=64,
        num_workers=workers, cache_dir=str(cache),
    )  # fmt: skip


def stage(name: str, root: Path, cache: Path, workers: int, batches: int) -> dict:
    """Run stage ``name`` (the ones before it untimed): its seconds and what it made."""
    from one_shui.data.audit import audit_images
    from one_shui.data.sources import read_table

    if name == "read":
        start = time.perf_counter()
        table = read_table("celeba", str(root), verify_md5=False)
        return {"seconds": time.perf_counter() - start, "images": len(table)}
    if name == "audit":
        table = read_table("celeba", str(root), verify_md5=False)
        start = time.perf_counter()
        report = audit_images(table, cache, progress=False)
        return {"seconds": time.perf_counter() - start, "duplicates": len(report.duplicates)}
    module = data(root, cache, workers)
    _ = module.table  # read and (from the cache) audited
    if name == "split":
        start = time.perf_counter()
        module.setup()
        summary = module.summary()
        return {
            "seconds": time.perf_counter() - start,
            "train": summary["train"],
            "support": summary["support"],
        }
    module.setup()
    loader = iter(module.loader("train", train=True))
    next(loader)  # the workers start
    start = time.perf_counter()
    seen = sum(len(next(loader)[0]) for _ in range(batches))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "images_per_second": seen / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, required=True, help="where the tree is made (and kept)")
    parser.add_argument("--images", type=int, default=202_599)
    parser.add_argument("--identities", type=int, default=10_177)
    parser.add_argument("--generate-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batches", type=int, default=20, help="loader batches of 64 timed per worker count")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # one stage, in this process
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cache = args.root / "cache"
    if args.stage:
        result = stage(args.stage, args.root, cache, args.workers, args.batches)
        result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        result["workers_peak_mib"] = children
        print(json.dumps(result))
        return
    if not (args.root / "celeba" / "identity_CelebA.txt").is_file():
        start = time.perf_counter()
        generate(args.root, args.images, args.identities, args.generate_workers)
        seconds = time.perf_counter() - start
        print(f"generated {args.images} images of {args.identities} people in {seconds:.0f} s")
    shutil.rmtree(cache, ignore_errors=True)  # the audit from cold
    runs = [(name, 0) for name in STAGES[:-1]] + [("loaders", w) for w in (0, 1, 2)]
    for name, workers in runs:
        command = [sys.executable, __file__, "--root", str(args.root), "--stage", name,
                   "--workers", str(workers), "--batches", str(args.batches)]  # fmt: skip
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode:
            sys.exit(out.stderr)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        label = f"{name} ({workers} workers)" if name == "loaders" else name
        extra = {k: v for k, v in result.items() if k not in ("seconds", "peak_mib", "workers_peak_mib")}
        print(f"{label:<20} {result['seconds']:8.1f} s   peak {result['peak_mib']:7.0f} MiB   {extra}")


if __name__ == "__main__":
    main()
