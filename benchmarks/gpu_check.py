"""What only a GPU shows, in one command of a few minutes on one GPU: a table to paste into the README.

    python benchmarks/gpu_check.py          # ViT-B/16 at 224 px, bf16-mixed, on cuda (8 minutes at most)
    python benchmarks/gpu_check.py --smoke  # the same rows in seconds on the CPU (vit_cpu, 32 px; tests)

Rows (random weights and images: the cost does not depend on them):
  train step       forward + backward + AdamW of the backbone at the training batch: images per second
  meta step N      one meta-training update of MetaUnlearn (meta_step.py's "meta") for N = 20 and N = 50
                   support images, 64 simulated forget images and a VAL batch of 64: time and peak memory
  forget N = 20    serving a request of 20 portraits (MetaUnlearn.forget), against its floor: one forward and
                   backward of the backbone on the portraits
  evaluation       forward in eval mode at the evaluation batch: images per second
Peak memory is the CUDA allocator's peak above what the step started with; on the CPU it is not measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import meta_step  # noqa: E402  (beside this file)

from one_shui.methods.classifier import Classifier  # noqa: E402
from one_shui.metrics.utility import task_loss  # noqa: E402

FULL = {"backbone": "vit_base_patch16_224", "image_size": 224, "device": "cuda", "precision": "bf16-mixed",
        "train_batch": 64, "eval_batch": 256, "repeats": 10, "identities": 300}  # fmt: skip
SMOKE = {"backbone": "vit_cpu", "image_size": 32, "device": "cpu", "precision": "32-true",
         "train_batch": 8, "eval_batch": 16, "repeats": 2, "identities": 100}  # fmt: skip


def timed(run, device: torch.device, repeats: int) -> tuple[float, float]:
    """(median seconds, peak MiB above the start) of ``run()``, after one warm-up call."""
    run()
    meta_step.sync(device)
    start_memory = _reset_peak(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        meta_step.sync(device)
        times.append(time.perf_counter() - start)
    peak = (
        torch.cuda.max_memory_allocated(device) / 2**20 - start_memory
        if device.type == "cuda"
        else float("nan")
    )
    return statistics.median(times), peak


def backbone_rows(settings: dict, device: torch.device) -> list[tuple[str, str, float]]:
    """The train step's and the evaluation's throughput."""
    model = Classifier(settings["backbone"], meta_step.NUM_CLASSES, "multilabel", pretrained=False,
                       image_size=settings["image_size"]).network.to(device)  # fmt: skip
    size, train_batch, eval_batch = settings["image_size"], settings["train_batch"], settings["eval_batch"]
    images = torch.randn(max(train_batch, eval_batch), 3, size, size, device=device)
    targets = torch.randint(0, 2, (train_batch, meta_step.NUM_CLASSES), device=device).float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train():
        optimizer.zero_grad()
        with meta_step.autocast(settings["precision"], device):
            loss = task_loss("multilabel", model(images[:train_batch]), targets)
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def evaluate():
        with meta_step.autocast(settings["precision"], device):
            model(images[:eval_batch])

    model.train()
    seconds, peak = timed(train, device, settings["repeats"])
    rows = [(f"train step (batch {train_batch})", f"{train_batch / seconds:.1f} images/s", peak)]
    model.eval()
    seconds, peak = timed(evaluate, device, settings["repeats"])
    return [*rows, (f"evaluation (batch {eval_batch})", f"{eval_batch / seconds:.1f} images/s", peak)]


def method_rows(settings: dict, device: torch.device) -> list[tuple[str, str, float]]:
    """The meta step for N = 20 and 50, and serving a request of 20 against its floor."""
    rows, seconds = [], {}
    for n, step in ((20, "meta"), (50, "meta"), (20, "floor"), (20, "forget")):
        args = argparse.Namespace(
            n=n, forget=64, per_identity=8, val=64, **{key: settings[key] for key in meta_step.ARGUMENTS}
        )
        seconds[(step, n)], peak = meta_step.measure_here(step, args, timed)
        if step == "meta":
            rows.append((f"meta step N = {n}", f"{seconds[(step, n)]:.3f} s", peak))
    ratio = seconds[("forget", 20)] / seconds[("floor", 20)]
    rows.append(("forget N = 20", f"{seconds[('forget', 20)] * 1e3:.1f} ms, {ratio:.2f}x its floor", peak))
    return rows


def _reset_peak(device: torch.device) -> float:
    if device.type != "cuda":
        return 0.0
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="a few seconds on the CPU, the same rows")
    settings = SMOKE if parser.parse_args().smoke else FULL
    device = torch.device(settings["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here; run it on a GPU machine, or --smoke for the CPU")
    torch.manual_seed(0)
    start = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{settings['backbone']} at {settings['image_size']} px, {settings['precision']}, on {name}, "
          f"torch {torch.__version__}")  # fmt: skip
    print(f"| {'what':<28} | {'figure':<28} | {'peak MiB':>9} |")
    print(f"|{'-' * 30}|{'-' * 30}|{'-' * 10}:|")
    for what, figure, peak in [*backbone_rows(settings, device), *method_rows(settings, device)]:
        memory = f"{peak:.0f}" if peak == peak else "-"  # not measured on the CPU (NaN)
        print(f"| {what:<28} | {figure:<28} | {memory:>9} |")
    print(f"gpu_check: done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
