"""The paper's bench configs end to end, before anyone spends a GPU-day on them: each on a tiny tree in its
dataset's real layout, from a ViT-B/16 weights file, every cell kind run, the table written.

    python benchmarks/paper_configs.py                          # every paper config on the CPU (32 px)
    python benchmarks/paper_configs.py --configs mufac_n5       # one of them
    python benchmarks/paper_configs.py --configs mufac_n5 --methods MetaUnlearn   # one row (the slow test)
    python benchmarks/paper_configs.py --trainer gpu            # on a GPU machine: as the configs say, 224 px

For each config (``configs/bench/<name>.yaml``) the script writes, under ``--work``:
  * a tree in the dataset's exact on-disk layout (the annotation files in the official formats, JPEGs at
    the real size: CelebA-HQ 1024 x 1024, CelebA 178 x 218, MUFAC 128 x 128), with just enough people
    for the config's request (2 or 3 images each; for its largest simulated request, where larger);
  * ``vit_b16.safetensors``: a ViT-B/16 with random weights, in the format of timm's ImageNet file, which
    the runs read through the bench's ``weights_file``, as on a machine without internet;
then runs `one-shui-bench` on it with the config's seed 0 alone, in a process of its own: the pretrain, the
retrain, the Pretrain and Retrain rows, every method's fit and test and each one's RMIA reference, the
results written. Every fit runs one epoch of one batch (``--trainer.limit_*``; a method's own steps too);
what a method runs inside its forget (SCRUB's and Bad Teacher's epochs, JiT's samples) is the config's.
The data's workers are the config's (8).

``--trainer gpu`` keeps the config's trainer (bf16-mixed on one GPU), its batch sizes and 224 px.
``--trainer cpu`` (the default) runs in float32 at a batch of 4, and the model reads the images at 32 px
(the weights file's position embedding resampled, as at any other size): at 224 px on 2 cores, MUFAC
N = 5 alone takes about half an hour (``--image-size 224``). Prints a table: per config, its tree, what
ran, and its time; the checkpoints are removed at the end (``--keep``), the tables and logs stay. Exit
status 1 when a config fails (its log is named).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from layouts import write_celeba, write_celebahq, write_mufac  # noqa: E402

from one_shui.methods.loading import config_method  # noqa: E402

PAPER = (
    "celebahq_n20",
    "celebahq_n50",
    "celeba_n5",
    "celeba_n10",
    "mufac_n5",
    "mufac_n10",
    "ablations_celebahq",
    "robustness_celebahq",
    "celebahq_n20_published",
)
SIZES = {"celebahq": 1024, "celeba": (178, 218), "mufac": 128}  # the real images' (width, height)
RETAIN = 6  # TRAIN people beyond the request, so that the retain pool is not empty
TRAIN_SHARE = 0.5  # under the split's 60 % of the images: every request finds its people in TRAIN
ONE_BATCH = [  # the methods' max_steps too: a method's own epochs (MUFAC's MetaUnlearn: 10) come after these
    "--method_args=[--trainer.max_steps=1]",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=1",
    "--trainer.limit_val_batches=1",
    "--trainer.num_sanity_val_steps=0",
]
CPU = ["--trainer.accelerator=cpu", "--trainer.precision=32-true", "--data.init_args.batch_size=4"]
TRAINERS = {  # each form's arguments, and the model's input side (None: the config's)
    "cpu": (CPU, 32),
    "gpu": ([], None),  # the config's own trainer, configs/trainer/gpu.yaml
}


def read(path: str | Path) -> dict:
    return yaml.safe_load((ROOT / path).read_text())


def setting(name: str) -> tuple[str, int]:
    """The config's dataset and the most TRAIN people it asks for at once: its request size, or a method's
    simulated requests (robustness: N_sim up to 50), which the real TRAIN sets, of thousands, hold."""
    bench = read(f"configs/bench/{name}.yaml")
    simulated = [int(arg.rpartition("=")[2]) for method in bench["methods"] for arg in method.get("args", [])
                 if arg.startswith("--data.init_args.simulated_request_size=")]  # fmt: skip
    largest = max([int(bench["request_size"]), *simulated])
    return read(bench["data"])["data"]["init_args"]["dataset"], largest


def methods_of(name: str, labels: list[str]) -> list[str]:
    """The bench arguments that keep the rows of config ``name`` labelled ``labels`` (a label is the row's,
    by default its method's class name); none when ``labels`` is empty: every row."""
    if not labels:
        return []
    methods = read(f"configs/bench/{name}.yaml")["methods"]
    rows = [method.get("label") or config_method(ROOT / method["config"]).__name__ for method in methods]
    kept = [method for method, row in zip(methods, rows, strict=True) if row in labels]
    if not kept:
        sys.exit(f"paper_configs: {name} has no row {labels}; its rows are {rows}")
    return [f"--methods={json.dumps(kept)}"]


def people(largest: int) -> list[int]:
    """Each person's number of images (2 or 3), enough people for ``largest`` of them in TRAIN."""
    count = math.ceil((largest + RETAIN) / TRAIN_SHARE)
    return [2 + k % 2 for k in range(count)]


def write_tree(dataset: str, root: Path, counts: list[int]) -> None:
    """The dataset's tree under ``root``, person ``k`` with ``counts[k]`` images."""
    size = SIZES[dataset]
    if dataset == "celebahq":
        write_celebahq(root, {str(k): n for k, n in enumerate(counts)}, size=size)
    elif dataset == "celeba":
        write_celeba(root, {str(k + 1): n for k, n in enumerate(counts)}, size=size)
    else:
        write_mufac(root, mufac_splits(counts), size=size)


def mufac_splits(counts: list[int]) -> dict[str, dict[str, str]]:
    """MUFAC's three CSVs (merged and split again by the reader): families of up to four people, each
    person's images in one age class."""
    splits: dict[str, dict[str, str]] = {"train": {}, "val": {}, "test": {}}
    for k, n in enumerate(counts):
        split = ("train", "val", "test")[k % 3]
        splits[split][f"F{k // 4 + 1:04d}_{'ABCD'[k % 4]}"] = "abcdefgh"[k % 8] * n
    return splits


def weights_file(path: Path) -> Path:
    """A ViT-B/16 with random weights and timm's ImageNet head, saved as its weights file is."""
    if not path.is_file():
        import timm
        from safetensors.torch import save_file

        model = timm.create_model("vit_base_patch16_224", pretrained=False)
        partial = path.with_suffix(".partial")
        save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(partial))
        partial.replace(path)
    return path


def run(name: str, work: Path, trainer: list[str], weights: Path, labels: list[str]) -> dict:
    """The bench of config ``name`` on its tree: what it ran, its time, its log."""
    dataset, largest = setting(name)
    counts = people(largest)
    tree = work / "data" / f"{dataset}-{len(counts)}"
    if not tree.is_dir():
        partial = tree.with_name(tree.name + ".partial")
        write_tree(dataset, partial, counts)
        partial.replace(tree)
    log = work / f"{name}.log"
    args = [
        Path(sys.executable).with_name("one-shui-bench"),
        f"--config=configs/bench/{name}.yaml",
        "--seeds=[0]",
        *methods_of(name, labels),
        f"--out={work / 'out'}",
        "--wandb.mode=disabled",
        f"--weights_file={weights}",
        f"--data.init_args.root={tree}",
        *(["--data.init_args.verify_md5=false"] if dataset == "celeba" else []),
        *ONE_BATCH,
        *trainer,
    ]
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - start
    said = [line for line in log.read_text().splitlines() if line.startswith("results in ")]
    table = (
        Path(said[-1].removeprefix("results in ")) / "results.csv" if done.returncode == 0 and said else None
    )
    return {
        "tree": f"{dataset}, {len(counts)} people, {sum(counts)} images",
        "ran": "ok: " + ran(table) if table else f"FAILED (status {done.returncode}): see {log}",
        "seconds": seconds,
        "ok": table is not None,
    }


def ran(results: Path) -> str:
    """What the bench's results.csv shows that it ran: its rows, the methods' fits and their references."""
    with results.open(newline="") as file:
        rows = list(csv.DictReader(file))
    fits = sum(bool(row["fit_s"]) for row in rows if row["group"] != "original")  # beside the stages
    references = sum(bool(row["reference_s"]) for row in rows)
    return f"pretrain, retrain, {len(rows)} rows tested, {fits} fitted, {references} RMIA references"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", nargs="+", choices=PAPER, default=list(PAPER))
    parser.add_argument("--methods", nargs="+", default=[], help="only these rows (labels) of each config")
    parser.add_argument("--trainer", choices=sorted(TRAINERS), default="cpu")
    parser.add_argument("--image-size", type=int, help="the model's input side (cpu: 32; gpu: the config's)")
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/paper_configs"), help="trees, weights, benches"
    )
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints (several GB a config)")
    options = parser.parse_args(argv)
    work = options.work.resolve()
    if options.trainer == "gpu" and not torch.cuda.is_available():
        sys.exit("paper_configs: no CUDA device here; run --trainer gpu on a GPU machine, or --trainer cpu")
    work.mkdir(parents=True, exist_ok=True)
    weights = weights_file(work / "vit_b16.safetensors")
    trainer, image_size = TRAINERS[options.trainer]
    image_size = options.image_size or image_size
    if image_size:
        trainer = [*trainer, f"--data.init_args.image_size={image_size}"]
    size = f", {image_size} px" if image_size else ""
    print(f"| config ({options.trainer}{size}) | tree | ran | time |\n|---|---|---|---:|", flush=True)
    failed = 0
    try:
        for name in options.configs:
            result = run(name, work, trainer, weights, options.methods)
            failed += not result["ok"]
            minutes, seconds = divmod(round(result["seconds"]), 60)
            print(
                f"| {name} | {result['tree']} | {result['ran']} | {minutes} min {seconds:02d} s |", flush=True
            )
    finally:
        if not options.keep:  # the tables and logs stay
            shutil.rmtree(work / "out" / "cells", ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
