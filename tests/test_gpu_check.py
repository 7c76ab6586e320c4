"""benchmarks/gpu_check.py: its CPU mode prints every row of the table a GPU run gives; without a GPU, the
full run says so in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def gpu_check(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.slow
def test_the_smoke_run_prints_every_row_of_the_gpu_table():
    out = gpu_check("--smoke")
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "what" not in line]
    names = [row.split("|")[1].strip() for row in rows]
    steps = ["meta step N = 20", "meta step N = 50", "forget N = 20"]
    assert names == ["train step (batch 8)", "evaluation (batch 16)", *steps]
    figures = [row.split("|")[2].strip() for row in rows]
    assert all(float(figure.split()[0]) > 0 for figure in figures)
    assert "x its floor" in figures[-1] and out.stdout.rstrip().endswith("s")


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the full run would run")
def test_the_full_run_without_a_gpu_is_one_message():
    out = gpu_check()
    assert out.returncode == 1 and out.stderr.strip().startswith("gpu_check: no CUDA device here")
