"""Time and peak memory of MetaUnlearn's steps against plain training steps on the same images.

    python benchmarks/meta_step.py                                   # the CPU config (vit_cpu, 32 px)
    python benchmarks/meta_step.py --backbone vit_base_patch16_224 --image-size 224 \
        --device cuda --precision bf16-mixed                         # ViT-B/16 on a GPU
    python benchmarks/meta_step.py --backbone vit_base_patch16_224 --image-size 224 --forget 64 --repeats 1
                                                                     # the paper's step on this CPU

(a) floor: one plain forward + backward of the backbone on the N support images (task loss);
(b) forget: serving a request, MetaUnlearn.forget on the same N images;
(c) meta update: one meta-training update (inner step with its graph, outer objective, backward, AdamW);
(d) plain step: one forward + backward + SGD step on the images the meta update reads
    (support + simulated forget set + VAL batch).
Targets: (b) within 1.5x of (a); (c) within 5x of (d). Random weights and images: the cost does not
depend on them. Peak memory is the CUDA allocator's peak on a GPU, and the growth of the process's
peak resident memory on the CPU (each step measured first, in a fresh process).
"""

from __future__ import annotations

import argparse
import itertools
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from one_shui import __version__
from one_shui.checkpoints import RECORD_FORMAT, RECORD_KEY
from one_shui.data.datamodule import RequestBatch
from one_shui.data.splits import make_split
from one_shui.methods.classifier import Classifier
from one_shui.methods.meta_unlearn import MetaUnlearn
from one_shui.metrics.utility import task_loss

STEPS = ("floor", "forget", "meta", "plain")
NUM_CLASSES = 40
ARGUMENTS = ("backbone", "image_size", "identities", "device", "precision", "repeats")  # a model's setting


def original_checkpoint(folder: Path, args: argparse.Namespace) -> Path:
    """A pretrain checkpoint of a random-weight model with a split over made-up identities."""
    people = [f"p{i}" for i in range(args.identities) for _ in range(args.per_identity + 1)]
    files = [f"{person}_{k}.jpg" for k, person in enumerate(people)]
    split = make_split(
        files, people, dataset="bench", dataset_fingerprint="bench", seed=0, request_size=args.n
    )
    model = Classifier(args.backbone, NUM_CLASSES, "multilabel", pretrained=False, image_size=args.image_size)
    record = {
        "format": RECORD_FORMAT,
        "version": __version__,
        "split": split.to_dict(),
        "backbone": args.backbone,
    }
    path = folder / "pretrain.ckpt"
    torch.save(
        {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), RECORD_KEY: record}, path
    )
    return path


def batch(size: int, args: argparse.Namespace, device: torch.device, people: torch.Tensor):
    """``size`` random images of random people among ``people`` (identity ids), with random targets."""
    images = torch.randn(size, 3, args.image_size, args.image_size, device=device)
    ids = people[torch.randint(0, len(people), (size,), device=device)]
    return images, ids, torch.randint(0, 2, (size, NUM_CLASSES), device=device).float()


def step_fn(name: str, method: MetaUnlearn, args: argparse.Namespace, device: torch.device):
    """The step ``name`` as a function of no arguments, on fixed random data."""
    trained = torch.nonzero(method.train_index >= 0).flatten()
    support = batch(args.n, args, device, trained)
    forget = batch(args.forget or args.n * args.per_identity, args, device, trained)
    validation = batch(args.val, args, device, trained)
    backbone = method.model.network
    if name == "floor":
        return lambda: task_loss("multilabel", backbone(support[0]), support[2]).backward()
    if name == "forget":
        return lambda: method.forget(support)
    if name == "meta":
        optimizer = torch.optim.AdamW(method.meta_loss.parameters(), lr=1e-4, amsgrad=True)
        request = RequestBatch(identities=(), support=support, forget=forget)

        def meta():
            optimizer.zero_grad()
            method.meta_objective(
                request, itertools.repeat(validation)
            ).backward()  # a VAL batch per forget batch
            optimizer.step()

        return meta
    images = torch.cat([support[0], forget[0], validation[0]])
    targets = torch.cat([support[2], forget[2], validation[2]])
    sgd = torch.optim.SGD(backbone.parameters(), lr=1e-3, momentum=0.9)

    def plain():
        sgd.zero_grad()
        task_loss("multilabel", backbone(images), targets).backward()
        sgd.step()

    return plain


def prepared_step(name: str, args: argparse.Namespace):
    """Step ``name`` on a fresh random-weight MetaUnlearn, as a function of no arguments, with its device."""
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        method = MetaUnlearn(str(original_checkpoint(Path(folder), args)), num_classes=NUM_CLASSES).to(device)
    method.meta_loss.train()
    if name in ("floor", "plain"):
        method.model.requires_grad_(True)
    return step_fn(name, method, args, device), device


def autocast(precision: str, device: torch.device):
    """bfloat16 autocast for ``bf16-mixed``, else nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16-mixed" else nullcontext()


def measure(name: str, args: argparse.Namespace) -> tuple[float, float, float]:
    """(median seconds, spread, peak MiB) of step ``name``, its memory measured on the first run."""
    run, device = prepared_step(name, args)
    with autocast(args.precision, device):
        base = _peak(device, reset=True)
        run()
        sync(device)
        peak = _peak(device) - base
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            run()
            sync(device)
            times.append(time.perf_counter() - start)
    return statistics.median(times), statistics.pstdev(times), peak


def measure_here(name: str, args: argparse.Namespace, timer) -> tuple[float, float]:
    """Step ``name`` timed by ``timer(run, device, repeats)`` in this process (gpu_check.py)."""
    run, device = prepared_step(name, args)
    with autocast(args.precision, device):
        return timer(run, device, args.repeats)


def _peak(device: torch.device, reset: bool = False) -> float:
    if device.type == "cuda":
        if reset:
            torch.cuda.reset_peak_memory_stats(device)
            return torch.cuda.memory_allocated(device) / 2**20
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="vit_cpu")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--n", type=int, default=20, help="identities (support images) of a request")
    parser.add_argument("--per-identity", type=int, default=8, help="simulated forget images per identity")
    parser.add_argument("--forget", type=int, help="simulated forget images (default: N x --per-identity)")
    parser.add_argument("--val", type=int, default=64, help="VAL batch of the meta-objective")
    parser.add_argument("--identities", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("32-true", "bf16-mixed"), default="32-true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)  # one step, in this process
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.step:
        print(*measure(args.step, args))
        return
    results = {}
    for name in STEPS:  # each in a fresh process, so that its memory peak is its own
        out = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--step", name], capture_output=True, text=True
        )
        if out.returncode:
            sys.exit(out.stderr)
        results[name] = [float(v) for v in out.stdout.split()[-3:]]
    print(
        f"{args.backbone} at {args.image_size} px, {args.precision} on {args.device}, N = {args.n}, "
        f"{args.forget or args.n * args.per_identity} simulated forget images, VAL batch {args.val}, "
        f"median of {args.repeats}"
    )
    for name, (seconds, spread, peak) in results.items():
        print(f"  {name:>6}: {seconds * 1e3:9.1f} ms +- {spread * 1e3:6.1f}   peak +{peak:8.1f} MiB")
    floor, forget, meta, plain = (results[name][0] for name in STEPS)
    print(
        f"  forget / floor = {forget / floor:.2f} (target <= 1.5); "
        f"meta / plain = {meta / plain:.2f} (target <= 5)"
    )


if __name__ == "__main__":
    main()
