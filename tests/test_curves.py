"""Strength curves: served from one preparation, paired with Pretrain, and the ranking number."""

from __future__ import annotations

import csv

import pytest
import torch
import wandb
from helpers import meta_data, quiet_trainer, run_tiny

from one_shui.bench import curves
from one_shui.bench.tracking import Tracker
from one_shui.methods.base import TEST_POOLS
from one_shui.methods.jit import JiT
from one_shui.metrics.tow import UTILITY_POOLS


def test_the_ranking_number_interpolates_where_the_curve_crosses_one_point():
    # (retain drop, gap closed) by strength: from 20 % at 0.5 point to 60 % at 1.5 points
    assert curves.reach([(0.5, 20.0), (1.5, 60.0)]) == pytest.approx(40.0)


def test_a_curve_that_never_costs_a_point_ranks_by_its_last_share():
    assert curves.reach([(0.1, 5.0), (0.2, 10.0), (0.3, 12.0)]) == pytest.approx(12.0)


def test_a_curve_already_past_one_point_at_its_first_strength_is_read_from_pretrain():
    # the curve starts at Pretrain's (0, 0): halfway to a drop of 2 points is a drop of 1
    assert curves.reach([(2.0, 50.0), (4.0, 90.0)]) == pytest.approx(25.0)


def test_a_curve_that_comes_back_under_one_point_counts_its_best_point():
    assert curves.reach([(0.5, 10.0), (3.0, 30.0), (0.8, 45.0)]) == pytest.approx(45.0)


def test_the_ranking_is_the_mean_over_seeds_with_its_interval():
    rows = [
        {"row": "A", "seed": seed, "strength": strength, "retain_drop": drop, "gap_closed": gap}
        for seed, points in ((0, [(0.5, 20.0), (1.5, 60.0)]), (1, [(0.5, 30.0), (1.5, 70.0)]))
        for strength, (drop, gap) in zip((1.0, 2.0), points, strict=True)
    ]
    rank = curves.ranking(rows)["A"]
    assert rank.mean == pytest.approx(45.0) and rank.low <= 40.0 < 50.0 <= rank.high and rank.seeds == 2


def test_each_results_row_gets_the_ranking_number_of_its_own_curve():
    """At its seed and unlearning seed; a row without a curve, or whose curve has no gap, gets none."""
    points = [
        {"row": "A", "seed": 0, "unlearning_seed": u, "strength": 1.0, "retain_drop": 0.5, "gap_closed": gap}
        for u, gap in enumerate((20.0, 30.0))
    ]
    points.append({"row": "A", "seed": 1, "strength": 1.0, "retain_drop": 0.5, "gap_closed": None})
    rows = [{"row": "A", "seed": 0, "unlearning_seed": u} for u in (0, 1)]
    rows += [
        {"row": "A", "seed": 1, "unlearning_seed": 0},
        {"row": "Pretrain", "seed": 0, "unlearning_seed": 0},
    ]
    curves.add_reach(rows, points)
    assert [row[curves.REACH] for row in rows] == [20.0, 30.0, None, None]


@pytest.mark.slow
def test_a_tiny_bench_serves_each_curve_from_one_preparation_and_strength_0_is_pretrain(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("WANDB_SILENT", "true")
    summaries = []
    real = Tracker.summary
    monkeypatch.setattr(Tracker, "summary", lambda self, *args: summaries.append(args) or real(self, *args))
    try:
        folder, _ = run_tiny(
            tmp_path, seeds=[0, 1], methods=[("JiT", "jit")], curve=[0, 1, 3],
            wandb={"mode": "offline", "project": "t"},
        )  # fmt: skip
    finally:
        wandb.teardown()
    out = folder / "outputs/tiny"
    with open(out / "curves.csv", newline="") as file:
        points = list(csv.DictReader(file))
    with open(out / "results.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert {(p["row"], float(p["strength"]), p["seed"]) for p in points} == {
        ("JiT", s, seed) for s in (0.0, 1.0, 3.0) for seed in ("0", "1")
    }
    for point in points:
        if float(point["strength"]) == 0:  # the model as it was: Pretrain's numbers, exactly
            pretrain = next(r for r in rows if r["row"] == "Pretrain" and r["seed"] == point["seed"])
            assert all(float(point[pool]) == float(pretrain[pool]) for pool in ("retain", "forget", "test"))
            assert float(point["retain_drop"]) == 0 and float(point["gap_closed"] or 0) == 0
    # the ranking number's column, filled where a seed has a gap to close (the tiny model may have none)
    gaps = {p["seed"] for p in points if p["gap_closed"]}
    assert all(bool(row[curves.REACH]) == (row["seed"] in gaps) for row in rows if row["row"] == "JiT")
    assert "### Strength curves" in (out / "results.md").read_text()
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _, logged_rows, _, plots, _, _ = summaries[0]
    assert out / "curves.png" in plots and all(curves.REACH in row for row in logged_rows)
    assert len(list(out.glob("wandb/offline-run-*/run-*.wandb"))) == 1


def test_a_curve_point_draws_from_its_own_stream_whatever_ran_before_it(runs, monkeypatch):
    """Each point's random stream is seeded by the cell's seed and its strength: JiT at a strength draws
    the same noise (and gives the same point) whether other strengths or other draws came before it, other
    noise at another seed, and the caller's stream goes on after the curve as if none had been served."""
    root, pretrain, _ = runs
    method = JiT(str(pretrain), copies=2)
    trainer = quiet_trainer()
    trainer.test(method, datamodule=meta_data(root), verbose=False)
    loaders = dict(zip(TEST_POOLS, trainer.test_dataloaders, strict=True))
    as_it_was = dict.fromkeys(UTILITY_POOLS, 50.0)
    streams = []
    real = JiT.forget_at
    monkeypatch.setattr(
        JiT, "forget_at", lambda self, *a: streams.append(torch.get_rng_state()) or real(self, *a)
    )

    alone = curves.serve(method, loaders, [3.0], as_it_was, seed=0)
    torch.rand(1000)  # the caller drew before the curve
    before = torch.get_rng_state()
    after_others = curves.serve(method, loaders, [0.0, 1.0, 3.0], as_it_was, seed=0)
    assert torch.equal(torch.get_rng_state(), before)
    curves.serve(method, loaders, [3.0], as_it_was, seed=1)

    assert after_others["0.0"] == as_it_was and after_others["3.0"] == alone["3.0"]
    at_3, at_1, at_3_again, at_3_seed_1 = streams
    assert torch.equal(at_3, at_3_again) and not torch.equal(at_3, at_1)
    assert not torch.equal(at_3, at_3_seed_1)
