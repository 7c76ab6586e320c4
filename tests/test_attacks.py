"""The attacks of a bench at the level of a person (PROTOCOL §10): its shadow models as cells, the
likelihood-ratio attack on people, the relearning attack, and what the bench reports of them."""

from __future__ import annotations

import json
import math
import runpy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import CONFIGS, arguments_of, counted_runs, run_tiny
from sklearn.metrics import roc_auc_score, roc_curve

from one_shui.bench import cells as cells_module
from one_shui.bench import differences, person_attack, report
from one_shui.bench.config import parse
from one_shui.bench.differences import over_people
from one_shui.bench.runner import run_bench
from one_shui.data import IdentityDataModule, SyntheticSpec
from one_shui.data.datamodule import TEST_POOLS
from one_shui.data.splits import Split, shadow_half
from one_shui.metrics.lira import LOW_FPRS, Gaussians, auc_of, fit_people, lira, person_scores, tpr_at

SHADOWS = 4


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A tiny bench with shadow models and relearning, run once: (its folder, its config file)."""
    folder = tmp_path_factory.mktemp("attack")
    return run_tiny(folder, seeds=[0], methods=[("JiT", "jit")], shadows=SHADOWS, relearn_steps=3)


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


# --- the attack: one_shui.metrics.lira --------------------------------------------------------------


def test_the_gaussians_share_a_pooled_deviation_and_the_ratio_is_the_hand_computed_one():
    gaussians = Gaussians.fit([1.0, 2.0, 3.0], [0.0, 0.0, 3.0])
    # in: mean 2, squares 2; out: mean 1, squares 6; pooled variance (2 + 6) / (3 + 3 - 2) = 2
    assert (gaussians.in_mean, gaussians.out_mean) == (2.0, 1.0) and gaussians.std == pytest.approx(2**0.5)
    # log N(2.5; 2, 2) - log N(2.5; 1, 2) = (-(0.5 ** 2) + 1.5 ** 2) / (2 x 2)
    assert gaussians.log_ratio(2.5) == pytest.approx(0.5)
    assert gaussians.log_ratio(100.0) > gaussians.log_ratio(3.0) > 0 > gaussians.log_ratio(1.0)
    with pytest.raises(ValueError, match="person p is in 1 and out of 3 shadow models"):
        Gaussians.fit([1.0], [0.0, 1.0, 2.0], "p")
    with pytest.raises(ValueError, match="the same score"):
        Gaussians.fit([1.0, 1.0], [1.0, 1.0], "p")


def test_a_person_s_score_is_the_mean_logit_confidence_of_their_photos():
    scores = person_scores([0.5, 0.9, 0.2, 1.0], ["a", "b", "a", "c"])
    assert scores["a"] == pytest.approx((0.0 + math.log(0.2 / 0.8)) / 2)
    assert scores["b"] == pytest.approx(math.log(9)) and math.isfinite(scores["c"]) and scores["c"] > 30
    assert list(scores) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="3 probabilities for 2 photos"):
        person_scores([0.5, 0.5, 0.5], ["a", "b"])


def test_the_auc_and_the_low_fpr_tprs_are_the_roc_curve_s():
    rng = np.random.default_rng(0)
    for positives, negatives in [(20, 60), (50, 300), (7, 2000)]:
        held = rng.normal(1, 1, positives).round(1)  # rounded: ties between and within the two
        never = rng.normal(0, 1, negatives).round(1)
        labels, values = np.r_[np.ones(positives), np.zeros(negatives)], np.r_[held, never]
        fpr, tpr, _ = roc_curve(labels, values)
        assert auc_of(held, never) == pytest.approx(roc_auc_score(labels, values))
        for low in LOW_FPRS:
            assert tpr_at(held, never, low) == pytest.approx(100 * tpr[fpr <= low + 1e-12].max())
    batch = np.stack([held, held + 5])  # a batch of two: the second all above every negative
    assert auc_of(batch, np.stack([never, never]))[1] == 1.0


def simulated_shadows(rng, people: list[str], shadows: int = 16):
    """Scores of people under shadows in pairs of halves: a person's own base, plus 2 when held, noise 1."""
    base = dict(zip(people, rng.normal(0, 3, len(people)), strict=True))
    made = []
    for _ in range(shadows // 2):
        half = set(rng.permutation(people)[: len(people) // 2])
        for held in (half, set(people) - half):
            made.append((held, {p: base[p] + 2 * (p in held) + rng.normal() for p in people}))
    return base, made


def test_a_model_that_memorises_the_forgotten_is_caught_and_a_retrained_one_sits_near_chance():
    rng = np.random.default_rng(1)
    forgotten, never = [f"f{k}" for k in range(200)], [f"t{k}" for k in range(200)]
    base, shadows = simulated_shadows(rng, forgotten + never)
    gaussians = fit_people(shadows)
    assert gaussians["f0"].in_mean - gaussians["f0"].out_mean == pytest.approx(2, abs=1.5)

    def attacked(shift: float):  # a model that adds ``shift`` to the forgotten people's scores
        scores = {p: base[p] + shift * (p in forgotten) + rng.normal() for p in forgotten + never}
        return lira(scores, gaussians, forgotten, never)

    perfect, member, retrained = attacked(10.0), attacked(2.0), attacked(0.0)
    assert perfect.auc == 1.0 and perfect.tpr_at == {0.01: 100.0, 0.001: 100.0}
    assert min(perfect.ratios[p] for p in forgotten) > 1  # each held a member, by a ratio above e
    assert 0.8 < member.auc < 1.0 and abs(retrained.auc - 0.5) < 0.08
    assert retrained.tpr_at[0.01] < 10 and retrained.lowest_fpr == 1 / 200


def test_an_interval_over_people_holds_its_estimate_and_is_zero_wide_for_a_perfect_attack():
    rng = np.random.default_rng(2)
    held, never = rng.normal(1, 1, 20), rng.normal(0, 1, 60)

    def statistic(positives, negatives):
        return auc_of(held[positives], never[negatives])

    estimate = over_people([20, 60], statistic, seeds=1)
    assert estimate.low < estimate.mean < estimate.high and estimate.resampled == "people within seeds"
    assert estimate.mean == pytest.approx(auc_of(held, never))
    perfect = over_people([20, 60], lambda p, n: auc_of(held[p] + 10, never[n]), seeds=1)
    assert (perfect.low, perfect.mean, perfect.high) == (1.0, 1.0, 1.0)


# --- the bench's report of the attack ---------------------------------------------------------------


def test_a_person_s_photos_are_named_in_the_order_the_test_reads_them(tmp_path):
    data = IdentityDataModule(
        root=str(tmp_path / "data"), request_size=4, synthetic=SyntheticSpec(identities=40, image_size=16),
        image_size=16, batch_size=8, cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    data.setup("test")
    photos = person_attack.photos_of(data.split, data.table)
    for role in person_attack.ROLES:
        loader = data.test_dataloader()[TEST_POOLS.index(role)]  # the roles' pools are named as they are
        read = [data.split.identities[i] for batch in loader for i in batch[1].tolist()]
        assert photos[role] == read
    assert set(photos["forget"]) == set(data.split.forget) and set(photos["test"]) == set(data.split.test)


def test_the_bench_reports_each_row_s_attack_with_intervals_over_people(bench):
    folder, _ = bench
    out = folder / "outputs/tiny"
    rows = report.read_csv(out / "results.csv")
    for row in rows:
        assert 0 <= row["lira_auc"] <= 1 and 0 <= row["lira_tpr_at_01"] <= row["lira_tpr_at_1"] <= 100
    identities = report.read_csv(out / "identities.csv")
    before: dict[str, float] = {}
    for line in identities:  # Pretrain's log ratio of a person, the same beside every row
        assert before.setdefault(line["identity"], line["lira_before"]) == line["lira_before"]
    assert {line["row"] for line in identities} == {"Retrain", "JiT"} and len(before) == 3
    paired = [row for row in report.read_csv(out / "paired.csv") if row["statistic"].startswith("lira")]
    assert {(row["row"], row["statistic"]) for row in paired} == {
        (label, name) for label in ("Retrain", "JiT") for name in person_attack.COLUMNS
    }
    assert all(row["resampled"] == "people within seeds" and row["low"] <= row["high"] for row in paired)
    text = (out / "results.md").read_text()
    section = text.split("### Per-person attack (LiRA on people, 4 shadow models per seed)")[1]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in lines[1:]] == ["Pretrain", "Retrain", "JiT"]
    auc = {row["row"]: row["lira_auc"] for row in rows}
    assert all(
        line.split("|")[2].strip().startswith(f"{auc[line.split('|')[1].strip()]:.3f} [")
        for line in lines[1:]
    )
    assert "with 9 negatives the lowest FPR above 0 is 11.1 %" in section
    assert (out / "person_scores.png").stat().st_size > 0


def test_the_pairs_script_prints_each_pair_s_differences_under_each_attack(bench, monkeypatch, capsys):
    folder, config = bench
    monkeypatch.chdir(folder)
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder / "cache"))
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "attack_pairs.py"
    monkeypatch.setattr("sys.argv", ["attack_pairs.py", "--config", str(config), "--pair", "JiT", "Retrain"])
    runpy.run_path(str(script), run_name="__main__")
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("JiT minus Retrain")]
    assert [line.split(":")[0] for line in printed] == [
        f"JiT minus Retrain, {name}" for name in ("per-person AUC", "RMIA AUC", "loss MIA AUC")
    ]
    assert printed[0].endswith("(people within seeds)") and printed[1].endswith("(seeds)")


def test_the_bench_reports_each_row_s_relearned_share_with_its_interval(bench, monkeypatch):
    folder, config = bench
    monkeypatch.chdir(folder)
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder / "cache"))
    cells = [json.loads(path.read_text()) for path in (folder / "outputs/cells").glob("**/cell.json")]
    relearned = {record["label"] for record in cells if "relearn" in record}
    assert relearned == {"Pretrain", "Retrain", "JiT"}  # the rows, not the references or the shadows
    assert all(set(record["relearn"]) == {"support", "retain"} for record in cells if "relearn" in record)
    # The tiny models have no gap of a point to share out: reported with any gap, the cells reused.
    monkeypatch.setattr(differences, "MIN_GAP", -math.inf)
    calls = counted_runs(monkeypatch)
    run_bench(parse(["--config", str(config)]))
    assert calls == []
    out = folder / "outputs/tiny"
    rows = report.read_csv(out / "results.csv")
    assert all(row["relearned_support"] is not None and row["relearned_retain"] is not None for row in rows)
    assert {row["row"]: row["relearned_support"] for row in rows}["Retrain"] == 0.0
    paired = {(row["row"], row["statistic"]) for row in report.read_csv(out / "paired.csv")}
    assert {
        ("JiT", "relearned_support"),
        ("JiT", "relearned_retain"),
        ("Retrain", "relearned_retain"),
    } <= paired
    section = (out / "results.md").read_text().split("### Relearning (3 steps of plain SGD")[1]
    assert [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ")][1:] == [
        "Retrain",
        "JiT",
    ]
    assert (out / "relearning.png").stat().st_size > 0
