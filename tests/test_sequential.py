"""Requests one after another: the pools after request k, and the sequential bench end to end (a tiny
one): each request served on the model the one before wrote, retrains without everyone forgotten so far,
the table by request, the guard's figures, and resuming."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import wandb
import yaml
from helpers import counted_runs, run_tiny, tiny_bench

from one_shui.bench import differences, report
from one_shui.bench import sequential as sequential_module
from one_shui.bench.config import parse
from one_shui.bench.runner import main, run_bench
from one_shui.data.splits import Split, make_split, pools, requests_of, sequential_pools
from one_shui.errors import SettingError

SEED = "outputs/cells/synthetic_celebahq/N4-seed{}"  # the split holds K x N = 2 x 2 people


def split_of(people: int = 30, request_size: int = 6) -> tuple[Split, list[str], list[str]]:
    identities = [f"p{i // 5}" for i in range(5 * people)]
    files = [f"{i}.jpg" for i in range(len(identities))]
    split = make_split(
        files, identities, dataset="x", dataset_fingerprint="f", seed=0, request_size=request_size
    )
    return split, files, identities


def test_after_request_k_everyone_of_requests_1_to_k_is_forgotten_and_k_s_portraits_are_the_support():
    split, files, identities = split_of()
    served = requests_of(split, 3)
    assert [len(people) for people in served] == [2, 2, 2] and sum(served, ()) == split.forget
    whole = pools(split, files, identities)
    assert sequential_pools(split, files, identities, 1, 1) == whole  # one request: the bench's pools
    for k in (1, 2, 3):
        rows = sequential_pools(split, files, identities, 3, k)
        forgotten = set(sum(served[:k], ()))
        assert {identities[r] for r in rows["forget"]} == forgotten
        assert not {identities[r] for r in rows["retain"]} & forgotten
        assert sorted(rows["retain"] + rows["forget"]) == sorted(whole["retain"] + whole["forget"])
        assert {identities[r] for r in rows["support"]} == set(served[k - 1])
        assert all(rows[pool] == whole[pool] for pool in ("train", "val", "test"))


@pytest.mark.parametrize(("requests", "k"), [(4, 1), (3, 4), (3, 0)])
def test_requests_that_do_not_cut_the_forget_request_are_refused(requests, k):
    split, files, identities = split_of()
    with pytest.raises(SettingError, match="data.request"):
        sequential_pools(split, files, identities, requests, k)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    """A tiny sequential bench (2 requests of 2 people, MetaUnlearn and JiT, seeds 0 and 1), run once."""
    methods = [("MetaUnlearn", "meta_unlearn"), ("JiT", "jit")]
    return run_tiny(tmp_path_factory.mktemp("sequential"), methods=methods, request_size=2, requests=2)


def rows_of(folder: Path, name: str = "results.csv") -> list[dict]:
    with open(folder / "outputs/tiny" / name, newline="") as file:
        return list(csv.DictReader(file))


def test_each_request_is_served_on_the_model_the_request_before_wrote(sequential):
    folder, _ = sequential
    rows = rows_of(folder)
    expected = [
        (label, k, seed)
        for label in ("Pretrain", "Retrain", "MetaUnlearn", "JiT")
        for k in (1, 2)
        for seed in (0, 1)
    ]
    assert [(row["row"], int(row["request"]), int(row["seed"])) for row in rows] == expected
    by = {(row["row"], int(row["request"]), int(row["seed"])): row for row in rows}
    for label in ("MetaUnlearn", "JiT"):
        for seed in (0, 1):
            first, second = by[(label, 1, seed)], by[(label, 2, seed)]
            # the check set scored before request 2 is the model request 1 wrote, not the original
            assert float(second["check_before"]) == pytest.approx(float(first["check_after"]), abs=1e-4)
            assert float(first["check_before"]) == pytest.approx(
                float(by[("Pretrain", 1, seed)]["check_after"])
            )
            assert float(first["forget_request"]) == pytest.approx(
                float(first["forget"])
            )  # one request so far
    assert (
        by[("MetaUnlearn", 2, 0)]["fit_s"] == "" and float(by[("MetaUnlearn", 1, 0)]["fit_s"]) > 0
    )  # prepared once
    assert {float(row["tow"]) for row in rows if row["row"] == "Retrain"} == {100.0}


def test_each_request_has_its_retrain_without_everyone_forgotten_so_far(sequential):
    folder, _ = sequential
    cells = folder / SEED.format(0)
    for k in (1, 2):
        (retrain,) = cells.glob(f"retrain@k{k}-*")
        data = yaml.safe_load((retrain / "config.yaml").read_text())["data"]["init_args"]
        assert (data["train_pool"], data["requests"], data["request"]) == ("retain", 2, k)


def test_the_table_by_request_and_its_plot(sequential):
    folder, _ = sequential
    paired_table, means = (folder / "outputs/tiny/results.md").read_text().split("### Means over seeds")
    assert "| k | retain | forget (all so far) | forget (request k) |" in means and "guard stops" in means
    assert means.count("| MetaUnlearn | 1 |") == 1 and "|  | 2 |" in means
    # paired with Pretrain at the same request k
    assert "| k | retain | forget (all so far) | forget (request k) |" in paired_table
    assert "| Pretrain |" not in paired_table and paired_table.count("| MetaUnlearn | 1 |") == 1
    rows = [
        {**row, "request": int(row["request"])}
        for row in report.read_csv(folder / "outputs/tiny/results.csv")
    ]
    table = differences.paired(rows, by=["request"])
    groups = {row["row"]: row["group"] for row in rows}
    lines = [line for line in paired_table.splitlines() if line.startswith("|")]
    assert lines == report.paired_lines(table, groups, sequential_module.PAIRED, by=["k"])
    paired = {(row["row"], row["request"], row["statistic"]) for row in rows_of(folder, "paired.csv")}
    assert {("JiT", "1", "forget_request"), ("JiT", "2", "forget_request")} <= paired
    assert (folder / "outputs/tiny/by_request.png").stat().st_size > 0


def test_a_rerun_reuses_every_cell_and_a_lost_request_reruns_it_alone(sequential, monkeypatch):
    folder, config = sequential
    monkeypatch.chdir(folder)
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder / "cache"))
    calls = counted_runs(monkeypatch)
    run_bench(parse(["--config", str(config)]))
    assert calls == []
    (jit,) = (folder / SEED.format(1)).glob("JiT@k2-*")
    (jit / "cell.json").unlink()
    run_bench(parse(["--config", str(config)]))
    assert calls == ["test"]
    # the model that request 2 is served on, lost: request 1 runs again (then request 2 is reused)
    calls.clear()
    (jit,) = (folder / SEED.format(1)).glob("JiT@k1-*")
    (jit / "checkpoints/unlearned.ckpt").unlink()
    run_bench(parse(["--config", str(config)]))
    assert calls == ["test"] and (jit / "checkpoints/unlearned.ckpt").is_file()


def test_a_method_that_cannot_serve_requests_is_refused_by_the_sequential_bench(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_bench(tmp_path, methods=[("SCRUB", "scrub")], request_size=2, requests=2)
    with pytest.raises(SystemExit) as exit:
        main(["--config", str(config)])
    assert "SCRUB reads the full forget and retain sets" in str(exit.value.code)
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_one_wandb_run_per_request_cell_and_a_summary_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    wandb_config = {"mode": "offline", "project": "t"}
    config = tiny_bench(
        tmp_path, seeds=[0], methods=[("JiT", "jit")], request_size=2, requests=2, wandb=wandb_config
    )
    try:
        run_bench(parse(["--config", str(config)]))
    finally:
        wandb.teardown()
    cells = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / SEED.format(0)).iterdir())
    assert cells == [f"{label}@k{k}" for label in ("JiT", "Pretrain", "Retrain") for k in (1, 2)] + [
        "pretrain",
        "retrain@k1",
        "retrain@k2",
    ]
    for cell in (tmp_path / SEED.format(0)).iterdir():
        assert len(list(cell.glob("wandb/offline-run-*/run-*.wandb"))) == 1, cell.name
    assert len(list((tmp_path / "outputs/tiny").glob("wandb/offline-run-*/run-*.wandb"))) == 1


def test_guard_stops_count_a_chain_that_slides_past_the_total_bound():
    """Steps of 3 check points each: no step passes --max-drop 5, but the second request is 6 points under
    the model before request 1, so the guard of `one-shui-forget` would refuse it (and the third)."""
    rows = [
        {"row": "M", "seed": seed, "unlearning_seed": 0, "request": k, "check_before": 90.0 - 3 * (k - 1),
         "check_after": 90.0 - 3 * k, "check_drop": 3.0}
        for seed in (0, 1) for k in (1, 2, 3)
    ]  # fmt: skip
    assert sequential_module.stopped(rows) == {("M", 1): 0, ("M", 2): 2, ("M", 3): 2}
    assert sequential_module.stopped(rows, max_total_drop=7) == {("M", 1): 0, ("M", 2): 0, ("M", 3): 2}
