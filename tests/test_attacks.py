"""The per-person attack of a bench (PROTOCOL §10): its shadow models as cells."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import CONFIGS, arguments_of, counted_runs, run_tiny

from one_shui.bench import cells as cells_module
from one_shui.bench.config import parse
from one_shui.bench.runner import run_bench
from one_shui.data.splits import Split, shadow_half

SHADOWS = 4


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A tiny bench with shadow models, run once: (its folder, its config file)."""
    return run_tiny(tmp_path_factory.mktemp("attack"), seeds=[0], methods=[("JiT", "jit")], shadows=SHADOWS)


def shadow_records(folder: Path) -> list[dict]:
    paths = (folder / "outputs/cells").glob("**/shadow_*/cell.json")
    return sorted((json.loads(path.read_text()) for path in paths), key=lambda record: record["label"])


def test_each_shadow_is_a_cell_trained_on_its_half_and_tested_on_the_attack_s_samples(bench):
    folder, _ = bench
    records = shadow_records(folder)
    assert [record["label"] for record in records] == [f"shadow {k}" for k in range(SHADOWS)]
    (pretrain,) = (folder / "outputs/cells").glob("**/pretrain-*/checkpoints/split.json")
    split = Split.load(pretrain)
    pretrain_row = json.loads(next((folder / "outputs/cells").glob("**/Pretrain-*/cell.json")).read_text())
    for k, record in enumerate(records):
        assert record["people"] == sorted(shadow_half(split, k)) and record["split"] == split.fingerprint
        assert Path(record["checkpoint"]).is_file() and record["seconds"]["fit"] > 0
        sizes = {role: len(values) for role, values in record["probabilities"].items()}
        assert sizes == {role: len(values) for role, values in pretrain_row["probabilities"].items()}
    # each its own training noise: no two shadows give the same outputs
    assert len({json.dumps(record["probabilities"]["test"]) for record in records}) == SHADOWS


def test_a_rerun_reuses_the_shadows_and_more_shadows_train_only_the_new_ones(bench, monkeypatch):
    folder, config = bench
    monkeypatch.chdir(folder)
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder / "cache"))
    calls = counted_runs(monkeypatch)
    run_bench(parse(["--config", str(config)]))
    assert calls == []
    run_bench(parse(["--config", str(config), f"--shadows={SHADOWS + 2}"]))
    assert calls == ["fit", "test", "fit", "test"]  # shadows 4 and 5 only
    assert len(shadow_records(folder)) == SHADOWS + 2


def test_a_shadow_trains_with_the_pretrain_s_recipe_on_its_pool_at_its_own_seed(monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)
    bench = parse(["--config", str(CONFIGS / "bench/synthetic.yaml"), "--seeds=[3]", "--shadows=4"])
    runner = arguments_of(bench)
    cells = cells_module.plan(bench)
    shadows = [cell for cell in cells if cell.kind == "shadow"]
    assert cells[-4:] == shadows and [cell.shadow for cell in shadows] == [0, 1, 2, 3]
    pretrain = runner._arguments(cells[0])[0]
    for cell in shadows:
        args = runner._arguments(cell)[0]
        seed = 3 + cells_module.SHADOW_STRIDE * (cell.shadow + 1)
        assert f"--seed_everything={seed}" in args and "--data.init_args.seed=3" in args
        assert (
            args[: pretrain.index("--seed_everything=3")] == pretrain[: pretrain.index("--seed_everything=3")]
        )
        assert (
            "--data.init_args.train_pool=shadow" in args and f"--data.init_args.shadow={cell.shadow}" in args
        )
        assert "--data.init_args.split_file=pretrain/split.json" in args
    assert not [cell for cell in cells_module.plan(replace(bench, shadows=0)) if cell.kind == "shadow"]
