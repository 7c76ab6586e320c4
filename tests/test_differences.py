"""The paired statistics of a bench (PROTOCOL §9) on hand-made tables whose differences are known: the
bootstrap intervals, the share of the memorisation gap closed and the per-person resampling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from one_shui.bench.differences import (
    NESTED,
    RESAMPLES,
    estimate,
    over_seeds,
    paired,
    paired_columns,
    paired_rows,
)


def table(values: dict[str, list[float]], metric: str = "forget") -> list[dict]:
    """results.csv rows: ``values[row][seed]`` of ``metric`` (the other metrics absent)."""
    return [
        {"row": label, "seed": seed, metric: value}
        for label, per_seed in values.items()
        for seed, value in enumerate(per_seed)
    ]


def test_a_paired_difference_far_from_0_is_marked_and_its_interval_holds_it():
    # Pretrain differs by 20 points between seeds; the method lowers each seed by 5 (+-0.2): paired, the
    # interval is narrow around -5, where unpaired spreads would swamp it.
    rows = table({"Pretrain": [90.0, 70.0, 80.0, 60.0], "Method": [84.8, 65.2, 75.0, 55.0]}, "retain")
    (retain,) = paired(rows)[("Method",)].values()
    assert retain.mean == pytest.approx(-5.0)
    assert retain.low <= -5.0 <= retain.high and retain.high < 0 and retain.excludes_zero
    assert retain.high - retain.low < 0.5 and retain.seeds == 4 and retain.resampled == "seeds"


def test_a_difference_of_either_sign_is_not_marked_and_equal_numbers_give_a_zero_width_interval():
    rows = table({"Pretrain": [90.0, 70.0, 80.0], "Noise": [91.0, 69.0, 80.5], "Same": [90.0, 70.0, 80.0]})
    result = paired(rows)
    noise = result[("Noise",)]["forget"]
    assert noise.low < 0 < noise.high and not noise.excludes_zero
    same = result[("Same",)]["forget"]
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0) and not same.excludes_zero


def test_the_interval_of_3_seeds_is_their_resampled_means_and_1_seed_has_none():
    # Percentile over the 10 distinct means of 3 resampled values: within [min, max] of the seeds.
    three = estimate([[1.0, 2.0, 4.0]], "seeds")
    assert 1.0 <= three.low < three.mean < three.high <= 4.0
    one = estimate([[3.0]], "seeds")
    assert one.mean == 3.0 and math.isnan(one.low) and math.isnan(one.high) and not one.excludes_zero


def test_the_bootstrap_is_seeded():
    values = [[float(v) for v in np.random.default_rng(1).normal(-2, 1, 20)] for _ in range(3)]
    assert estimate(values, "people") == estimate(values, "people")
    assert RESAMPLES >= 2000


def test_retrain_closes_the_whole_gap_and_pretrain_like_rows_none():
    rows = table(
        {
            "Pretrain": [90.0, 80.0, 85.0],
            "Retrain": [80.0, 75.0, 77.0],  # gaps 10, 5, 8
            "Unchanged": [90.0, 80.0, 85.0],
            "Half": [85.0, 77.5, 81.0],
            "Over": [70.0, 70.0, 69.0],
        }
    )
    result = paired(rows)
    retrained = result[("Retrain",)]["gap_closed"]
    assert (retrained.mean, retrained.low, retrained.high) == (100.0, 100.0, 100.0)
    unchanged = result[("Unchanged",)]["gap_closed"]
    assert (unchanged.mean, unchanged.low, unchanged.high) == (0.0, 0.0, 0.0)
    assert result[("Half",)]["gap_closed"].mean == pytest.approx(50.0)
    assert result[("Over",)]["gap_closed"].low > 100  # over-forgetting
    assert ("Pretrain",) not in result  # the origin


def test_a_seed_without_a_gap_to_divide_by_is_left_out_of_the_share():
    rows = table({"Pretrain": [90.0, 80.0, 85.0], "Retrain": [80.0, 79.8, 75.0], "Half": [85.0, 75.0, 80.0]})
    share = paired(rows)[("Half",)]["gap_closed"]
    assert share.seeds == 2 and share.mean == pytest.approx(50.0)  # seed 1's gap of 0.2 is left out


def test_forget_per_person_resamples_people_within_seeds_where_identities_csv_has_them():
    rows = table({"Pretrain": [90.0, 80.0], "Method": [88.0, 79.0]})
    rng = np.random.default_rng(0)
    people = {0: rng.normal(-3.0, 1.0, 12), 1: rng.normal(-1.0, 1.0, 8)}  # strata of unequal size
    identities = [
        {"row": "Method", "seed": seed, "identity": f"p{i}", "before": 90.0, "after": 90.0 + d}
        for seed, differences in people.items()
        for i, d in enumerate(differences)
    ]
    result = paired(rows, identities)[("Method",)]
    forget = result["forget_per_person"]
    # the mean over seeds of each seed's mean over people, not the pooled mean of the 20 people
    assert forget.mean == pytest.approx((people[0].mean() + people[1].mean()) / 2)
    assert forget.resampled == "people within seeds" and forget.seeds == 2
    assert forget.low < forget.mean < forget.high < 0 and forget.excludes_zero
    # the people of one seed alone would give a wider interval than two seeds' people together
    alone = estimate([people[1]], "people within seeds")
    assert alone.high - alone.low > forget.high - forget.low
    # the pool's forget stays the seeds' paired values (two seeds: -2 and -1), with or without identities
    assert result["forget"].mean == pytest.approx(-1.5) and result["forget"].resampled == "seeds"
    assert "forget_per_person" not in paired(rows)[("Method",)]


def test_the_sequential_bench_pairs_each_request_with_pretrain_at_that_request():
    rows = [
        {"row": label, "request": k, "seed": seed, "forget": value + k}
        for label, value in (("Pretrain", 90.0), ("Method", 85.0))
        for k in (1, 2)
        for seed in (0, 1)
    ]
    result = paired(rows, by=["request"])
    assert set(result) == {("Method", 1), ("Method", 2)}
    assert all(result[key]["forget"].mean == pytest.approx(-5.0) for key in result)
    lines = paired_rows(result, by=["request"])
    assert list(lines[0]) == paired_columns(["request"])
    assert {(line["row"], line["request"], line["statistic"]) for line in lines} == {
        ("Method", 1, "forget"),
        ("Method", 2, "forget"),
    }


def test_unlearning_seeds_nest_within_training_seeds():
    """A seed's value is the mean over its unlearning seeds; the interval resamples training seeds, then
    unlearning seeds within each: where every training seed has the same mean, only the second level
    spreads it; where each training seed's unlearning seeds agree, it lies within the seeds' means."""
    alike = over_seeds([(s, v) for s in range(3) for v in (0.0, 10.0)])
    assert alike.mean == 5.0 and alike.low < 5.0 < alike.high and alike.resampled == NESTED
    assert alike.seeds == 3 and alike == over_seeds([(s, v) for v in (0.0, 10.0) for s in range(3)])
    agreeing = over_seeds([(s, v) for s, v in enumerate((1.0, 2.0, 4.0)) for _ in range(2)])
    assert agreeing.mean == pytest.approx(7 / 3)
    assert 1.0 <= agreeing.low < agreeing.mean < agreeing.high <= 4.0
    one_each = over_seeds(
        [(0, 1.0), (1, 2.0), (2, 4.0)]
    )  # one unlearning seed: the seeds' interval as before
    assert one_each == estimate([[1.0, 2.0, 4.0]], "seeds")


def test_a_row_at_each_unlearning_seed_pairs_with_pretrain_of_its_training_seed():
    pretrain = [90.0, 70.0, 80.0]
    rows = [{"row": "Pretrain", "seed": s, "forget": v} for s, v in enumerate(pretrain)]
    rows += [{"row": "Retrain", "seed": s, "forget": v - 10} for s, v in enumerate(pretrain)]
    shifts = {0: (-4.0, -6.0), 1: (-5.0, -5.0), 2: (-3.0, -7.0)}  # per seed, its two unlearning seeds
    rows += [
        {"row": "Method", "seed": s, "unlearning_seed": u, "forget": pretrain[s] + shift}
        for s, pair in shifts.items()
        for u, shift in enumerate(pair)
    ]
    result = paired(rows)[("Method",)]
    assert result["forget"].mean == pytest.approx(-5.0) and result["forget"].resampled == NESTED
    assert result["forget"].seeds == 3 and result["forget"].low < -5.0 < result["forget"].high
    assert result["gap_closed"].mean == pytest.approx(50.0) and result["gap_closed"].resampled == NESTED
