"""The environment a bench ran in: the versions of Python and of the packages that decide its numbers, the
commit, the device, the CPU and its vector capability (which kernels torch picks: the same CPU kind gives
the same numbers), the threads and the precision of its runs. Written beside its results
(``environment.json``), under its table, and into the config of every W&B run."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path

import torch

from .. import __version__
from ..atomic import write_text_atomic

PACKAGE = Path(__file__).resolve().parents[1]  # one_shui's own folder
PACKAGES = ("torch", "torchvision", "lightning", "timm", "torchmetrics", "numpy", "scikit-learn", "pillow")


def environment() -> dict:
    """What this process runs with (the device and precision of the runs are added from their records)."""
    return {
        "python": platform.python_version(),
        **{name: importlib.metadata.version(name) for name in PACKAGES},
        "one_shui": __version__,
        "commit": commit(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the vector kernels torch picks
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def of_runs(base: dict, records: Iterable[dict]) -> dict:
    """``base`` with the devices and precisions the bench's runs used (as their records say)."""
    records = list(records)
    return {
        **base,
        "devices": sorted({record["device"] for record in records if record.get("device")}),
        "precisions": sorted({record["precision"] for record in records if record.get("precision")}),
    }


def commit(source: Path = PACKAGE) -> str | None:
    """The git commit of the one_shui source (the package's folder ``source``), ``+dirty`` when the
    repository has uncommitted changes to tracked files, or untracked files in the package or in
    ``configs/`` beside it (a new method's file or YAML); None outside git."""
    try:
        root, head, status = (
            subprocess.run(["git", *args], cwd=source, capture_output=True, text=True, check=True).stdout
            for args in (
                ["rev-parse", "--show-toplevel"],
                ["rev-parse", "HEAD"],
                ["status", "--porcelain", "--untracked-files=all"],
            )
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    watched = (f"{source.relative_to(Path(root.strip()).resolve()).as_posix()}/", "configs/")
    changes = [
        line for line in status.splitlines() if not line.startswith("??") or line[3:].startswith(watched)
    ]
    return f"{head.strip()}+dirty" if changes else head.strip()


def cpu_name() -> str:
    """The CPU's model name (Linux), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write(folder: Path, tracker_environment: dict, records: Iterable[dict]) -> tuple[dict, str]:
    """``environment.json`` in ``folder``; the environment and the line for under the table."""
    env = of_runs(tracker_environment, records)
    write_text_atomic(folder / "environment.json", json.dumps(env, indent=2) + "\n")
    return env, markdown(env)


def markdown(env: dict) -> str:
    """The line under a bench's table."""
    versions = ", ".join(f"{name} {env[name]}" for name in ("torch", "lightning", "timm", "torchmetrics"))
    devices = ", ".join(env.get("devices") or ["?"])
    if env.get("cuda") and any(device.startswith("cuda") for device in env.get("devices", [])):
        devices += f" ({env['cuda']})"
    precisions = ", ".join(env.get("precisions") or ["?"])
    return (
        f"Environment: Python {env['python']}, {versions}; {devices} on {env['cpu']} "
        f"({env['cpu_capability']}) with {env['threads']} threads, precision {precisions}; commit "
        f"{env['commit'] or 'unknown'}. Everything in environment.json.\n"
    )
