"""benchmarks/paper_configs.py in its smallest form: the paper's MUFAC N = 5 config, its MetaUnlearn row, end
to end on a tree in MUFAC's real layout and size, from a ViT-B/16 weights file, on the CPU (at 32 px)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "paper_configs.py"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_smallest_paper_config_runs_every_cell_kind_from_a_weights_file_and_writes_its_table(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["--configs", "mufac_n5", "--methods", "MetaUnlearn", "--work", str(tmp_path)]
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=800, cwd=ROOT
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (row,) = [line for line in out.stdout.splitlines() if line.startswith("| mufac_n5 ")]
    assert "| ok: pretrain, retrain, 3 rows tested, 1 fitted, 1 RMIA references |" in row, row
    (results,) = (tmp_path / "out").glob("mufac_n5-*/results.csv")
    with results.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["row"] for row in rows] == ["Pretrain", "Retrain", "MetaUnlearn"]
    assert rows[2]["fit_s"] and rows[2]["reference_s"]  # prepared, tested, and its RMIA reference ran
    assert all(float(rows[2][pool]) >= 0 for pool in ("retain", "forget", "test"))
    assert not list(tmp_path.rglob("*.ckpt")), "the checkpoints are removed once the table is written"
