"""`one-shui-bench`: a tiny bench end to end (cells, resume, results, plots, W&B), the config checks and
every bench config of configs/bench."""

from __future__ import annotations

import csv
import glob
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import wandb
import yaml
from helpers import CONFIGS, METHODS, TINY, arguments_of, counted_runs, run_tiny, tiny_bench

from one_shui import layout
from one_shui.atomic import held
from one_shui.bench import cells as cells_module
from one_shui.bench import differences, report
from one_shui.bench import environment as environment_module
from one_shui.bench.cells import Runner
from one_shui.bench.config import BenchConfigError, parse, split_arguments
from one_shui.bench.differences import NESTED
from one_shui.bench.runner import main, request_photos, run_bench
from one_shui.bench.tracking import Tracker, wandb_mode
from one_shui.cli import OneShuiCLI
from one_shui.data import audit as audit_module
from one_shui.data.config import data_parser
from one_shui.data.images import IMAGES
from one_shui.data.splits import Split
from one_shui.methods.loading import config_method, config_model, setting_options

SEED = "outputs/cells/synthetic_celebahq/N3-seed{}"  # a seed's cells, in the run layout


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """The tiny bench, run once: (its folder, its config file)."""
    return run_tiny(tmp_path_factory.mktemp("bench"))


def read(path: Path) -> list[dict]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_results_csv_has_a_row_per_method_and_seed_with_every_metric_and_phase_time(bench):
    folder, _ = bench
    rows = read(folder / "outputs/tiny/results.csv")
    labels = ["Pretrain", "Retrain", "MetaUnlearn", "JiT", "Bad Teacher"]
    assert [(row["row"], int(row["seed"])) for row in rows] == [
        (label, s) for label in labels for s in (0, 1)
    ]
    groups = {row["row"]: row["group"] for row in rows}
    assert groups == {"Pretrain": "original", "Retrain": "original", "MetaUnlearn": "1-SHUI", "JiT": "1-SHUI",
                      "Bad Teacher": "full-data"}  # fmt: skip
    for row in rows:
        for key in (
            "retain",
            "forget",
            "test",
            "tow",
            "mia_auc",
            "rmia_auc",
            "rmia_tpr_at_low_fpr",
            "test_s",
        ):
            assert row[key] != "", (row["row"], key)
        assert 0 <= float(row["rmia_auc"]) <= 1 and 0 < float(row["rmia_low_fpr"]) < 1
    assert {float(row["tow"]) for row in rows if row["row"] == "Retrain"} == {100.0}
    fit = {row["row"]: row["fit_s"] for row in rows}
    assert fit["JiT"] == "" and float(fit["MetaUnlearn"]) > 0 and float(fit["Pretrain"]) > 0  # JiT has no fit
    assert all(row["reference_s"] for row in rows if row["group"] != "original")
    assert len({row["split"] for row in rows}) == 2  # one split per seed


def test_results_md_leads_with_the_paired_table_and_paired_csv_holds_its_intervals(bench):
    folder, _ = bench
    text = (folder / "outputs/tiny/results.md").read_text()
    paired_table, _ = text.split("### Means over seeds")
    lines = [line for line in paired_table.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in lines[1:]] == [
        "Retrain",
        report.GROUPS["1-SHUI"],
        "MetaUnlearn",
        "JiT",
        report.GROUPS["full-data"],
        "Bad Teacher",
    ]  # Pretrain is the origin
    assert lines[0].split("|")[2:-1] == [f" {header} " for _, header, _ in report.PAIRED]
    assert all("[" in cell for cell in lines[1].split("|")[2:6])  # two seeds: retain...ToW have intervals
    assert (
        "Paired differences from Pretrain" in paired_table and "people resampled within seeds" in paired_table
    )

    # the table and paired.csv are the layer's figures on the results.csv and identities.csv written
    rows, identities = (
        report.read_csv(folder / f"outputs/tiny/{name}.csv") for name in ("results", "identities")
    )
    table = differences.paired(rows, identities)
    written = [line for line in paired_table.splitlines() if line.startswith("|")]
    assert written == report.paired_lines(table, {row["row"]: row["group"] for row in rows})
    paired = read(folder / "outputs/tiny/paired.csv")
    assert list(paired[0]) == differences.paired_columns()
    assert [row["mean"] for row in paired] == [str(row["mean"]) for row in differences.paired_rows(table)]
    forget = {row["row"]: row for row in paired if row["statistic"] == "forget_per_person"}
    assert set(forget) == {"Retrain", "MetaUnlearn", "JiT", "Bad Teacher"}
    assert all(row["resampled"] == "people within seeds" and row["seeds"] == "2" for row in forget.values())
    for row in paired:
        if row["low"] != "nan":
            assert float(row["low"]) <= float(row["mean"]) <= float(row["high"]), row
            assert row["excludes_zero"] == str(float(row["low"]) > 0 or float(row["high"]) < 0)


def test_results_md_is_the_paper_table_with_the_best_1shui_value_in_bold(bench):
    folder, _ = bench
    text = (folder / "outputs/tiny/results.md").read_text()
    lines = [line for line in text.split("### Means over seeds")[1].splitlines() if line.startswith("| ")]
    names = [line.split("|")[1].strip() for line in lines[1:]]
    assert names == ["Pretrain", "Retrain", report.GROUPS["1-SHUI"], "MetaUnlearn", "JiT",
                     report.GROUPS["full-data"], "Bad Teacher"]  # fmt: skip
    bold = {}
    for line in lines[1:]:
        for column, cell in enumerate(line.split("|")[2:-1]):
            if cell.strip().startswith("**"):
                bold.setdefault(column, []).append(line.split("|")[1].strip())
    assert set(bold) == set(range(len(report.TABLE)))  # one winner per column...
    assert all(
        len(rows) == 1 and rows[0] in ("MetaUnlearn", "JiT") for rows in bold.values()
    )  # ...a 1-SHUI one
    assert "±" in lines[1]


def test_the_table_says_which_rows_report_the_published_mia_selection(bench):
    folder, _ = bench
    rows = read(folder / "outputs/tiny/results.csv")
    assert {row["mia_selection"] for row in rows} == {"balanced"}
    assert "published selection" not in report.means_markdown(rows)
    published = [{**row, "mia_selection": "published"} if row["row"] == "JiT" else row for row in rows]
    assert (
        "for JiT with the published selection: the forest chosen on the evaluated pools"
        in report.means_markdown(published)
    )


def test_plots_and_the_per_identity_file_are_written(bench):
    folder, _ = bench
    for name in ("paired.png", "roc.png", "forget_per_identity.png", "forget_request.png"):
        assert (folder / "outputs/tiny" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = read(folder / "outputs/tiny/identities.csv")
    assert {row["row"] for row in rows} == {"Retrain", "MetaUnlearn", "JiT", "Bad Teacher"}
    people = [row["identity"] for row in rows if row["row"] == "JiT" and row["seed"] == "0"]
    split = Split.load(next(folder.glob("outputs/cells/*/N3-seed0/pretrain-*/checkpoints/split.json")))
    assert sorted(people) == sorted(split.forget)  # N = 3 people, as the dataset names them


def test_the_request_plot_shows_the_support_portrait_then_the_persons_other_photos(bench):
    folder, config = bench
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        runner = Runner(parse(["--config", str(config)]), tracker=None)
        runner.records[(0, "stage", layout.PRETRAIN, None, 0)] = {
            "checkpoint": str(next(folder.glob("outputs/cells/*/N3-seed0/pretrain-*/checkpoints/best.ckpt")))
        }
        identity, portrait, photos = request_photos(runner, 0)
    split = Split.load(Path(runner.record(0, "stage", layout.PRETRAIN)["checkpoint"]).with_name("split.json"))
    table = runner.data.table
    assert identity in split.forget and portrait == table.root / split.support[identity]
    mine = {
        table.root / name for name, who in zip(table.files, table.identities, strict=True) if who == identity
    }
    assert photos and set(photos) == mine - {portrait}


def test_a_rerun_reuses_every_cell_and_an_interrupted_one_reruns_only_what_is_missing(bench, monkeypatch):
    folder, config = bench
    monkeypatch.chdir(folder)
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder / "cache"))
    before = (folder / "outputs/tiny/results.csv").read_text()
    calls = counted_runs(monkeypatch)
    run_bench(parse(["--config", str(config)]))
    assert calls == [] and (folder / "outputs/tiny/results.csv").read_text() == before
    # A bench stopped inside JiT's cell of seed 1: its record was never written.
    (jit,) = (folder / SEED.format(1)).glob("JiT-*")
    (jit / "cell.json").unlink()
    run_bench(parse(["--config", str(config)]))
    assert calls == ["test"]
    # A changed method option runs that method again, in a new folder; nothing else.
    calls.clear()
    changed = yaml.safe_load(config.read_text())
    changed["name"], changed["methods"][1]["args"] = "changed", ["--model.init_args.noise_std=0.5"]  # JiT's
    config.with_name("changed.yaml").write_text(yaml.safe_dump(changed))
    run_bench(parse(["--config", str(config.with_name("changed.yaml")), "--seeds=[0]"]))
    assert calls == ["test", "test"]  # JiT, and JiT on the retrained model
    assert len(list((folder / SEED.format(0)).glob("JiT-*"))) == 2


def metrics(path: Path) -> list[dict]:
    """results.csv without its wall times."""
    return [{k: v for k, v in row.items() if not k.endswith("_s")} for row in read(path)]


def test_a_finished_cell_with_a_missing_or_damaged_checkpoint_runs_again(bench, monkeypatch, capsys):
    folder, config = bench
    monkeypatch.chdir(folder)
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder / "cache"))
    before = metrics(folder / "outputs/tiny/results.csv")
    (pretrain,) = (folder / SEED.format(1)).glob("pretrain-*")
    (pretrain / "checkpoints/best.ckpt").unlink()  # deleted by hand, or lost
    (jit,) = (folder / SEED.format(1)).glob("JiT-*")
    (jit / "cell.json").write_text('{"torn')  # a record cut short
    calls = counted_runs(monkeypatch)
    run_bench(parse(["--config", str(config)]))
    assert calls == ["fit", "test"]  # seed 1's pretrain, from the start, then its JiT
    printed = capsys.readouterr().err
    assert "pretrain, seed 1: its finished run" in printed and "JiT, seed 1: its finished run" in printed
    assert (pretrain / "checkpoints/best.ckpt").is_file()
    assert metrics(folder / "outputs/tiny/results.csv") == before  # the same cells, the same numbers


def test_the_cells_are_keyed_by_the_data_s_content(bench, tmp_path, monkeypatch):
    """Corrected annotations run every cell again instead of reusing results of the old labels."""
    folder, config = bench
    monkeypatch.chdir(folder)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    shutil.copytree(folder / "data", tmp_path / "data")
    anno = tmp_path / "data/synthetic/CelebAMask-HQ/CelebAMask-HQ-attribute-anno.txt"
    lines = anno.read_text().splitlines()
    name, first, *rest = lines[2].split()
    anno.write_text(
        "\n".join([*lines[:2], " ".join([name, "1" if first == "-1" else "-1", *rest]), *lines[3:]])
    )
    keys = []
    for root in (folder / "data/synthetic", tmp_path / "data/synthetic"):
        bench_config = parse(["--config", str(config), f"--data.init_args.root={root}"])
        keys.append(cells_module.Runner(bench_config, tracker=None).content)
    assert keys[0] != keys[1]
    copy = parse(["--config", str(config), f"--data.init_args.root={tmp_path / 'data/synthetic'}"])
    assert cells_module.Runner(copy, tracker=None).content == keys[1]


def test_an_image_replaced_behind_a_faked_hint_changes_the_cells_keys(bench, tmp_path, monkeypatch):
    """An image replaced by another of the same size, its modification time put back: with a hint that
    such a change fools (here the audit's hint cut to size and modification time, as where change times
    cannot be trusted), a plain audit keeps the cached hash, but the bench hashes the bytes again, so
    every cell that reads the data gets a new key."""
    folder, config = bench
    monkeypatch.chdir(folder)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(audit_module, "_hint", lambda path: [path.stat().st_size, path.stat().st_mtime_ns])
    shutil.copytree(folder / "data", tmp_path / "data")
    root = tmp_path / "data/synthetic"
    bench_config = parse(["--config", str(config), f"--data.init_args.root={root}"])
    runner = cells_module.Runner(bench_config, tracker=None)
    before, table = runner.content, runner.data.table
    small, *_, large = sorted(
        (table.root / name for name in table.files), key=lambda path: path.stat().st_size
    )
    stat = large.stat()
    large.write_bytes(small.read_bytes().ljust(stat.st_size, b"\0"))  # another face, the same size
    os.utime(large, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    parser, (_, runs, _) = data_parser(), split_arguments(bench_config.args)
    plain = parser.parse_args(["--config", bench_config.data, *(a for a in runs if a.startswith("--data."))])
    assert parser.instantiate(plain).data.content_fingerprint == before  # the hint trusted alone: stale
    assert cells_module.Runner(bench_config, tracker=None).content != before


def test_a_cell_held_by_another_bench_is_waited_for(tmp_path):
    """The lock of a cell: a second holder waits (saying so) until the first lets go."""
    events = []
    lock = tmp_path / "cell/.lock"
    first_holds, release = threading.Event(), threading.Event()

    def first():
        with held(lock, busy=lambda: events.append("first waited")):
            first_holds.set()
            release.wait(10)
            events.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    first_holds.wait(10)
    threading.Timer(0.5, release.set).start()
    with held(lock, busy=lambda: events.append("second waits")):
        events.append("second holds")
    thread.join()
    assert events == ["second waits", "first done", "second holds"]


def test_the_reference_of_each_row_is_its_procedure_on_the_retrained_model():
    """At the same unlearning seed; Pretrain's and Retrain's is the retrained model."""
    records = {(0, "row", label, 0): {"probabilities": label} for label in ("Pretrain", "Retrain", "JiT")}
    records[(0, "row", "JiT", 1)] = {"probabilities": "JiT, unlearning seed 1"}
    for u in (0, 1):
        records[(0, "reference", "JiT", u)] = {"probabilities": f"JiT on retrain, unlearning seed {u}"}
    assert report.reference_of(records, 0, "Pretrain") is records[(0, "row", "Retrain", 0)]
    assert report.reference_of(records, 0, "Retrain") is records[(0, "row", "Retrain", 0)]
    assert report.reference_of(records, 0, "JiT") is records[(0, "reference", "JiT", 0)]
    assert report.reference_of(records, 0, "JiT", 1) is records[(0, "reference", "JiT", 1)]


def test_best_is_the_highest_or_the_closest_to_retrain_among_1shui_rows_only():
    table = {
        "Retrain": {"forget": (40.0, 0), "tow": (100.0, 0)},
        "A": {"forget": (45.0, 0), "tow": (60.0, 0)},
        "B": {"forget": (38.0, 0), "tow": (55.0, 0)},
        "Full": {"forget": (40.0, 0), "tow": (90.0, 0)},
    }
    groups = {"Retrain": "original", "A": "1-SHUI", "B": "1-SHUI", "Full": "full-data"}
    assert report.best(table, groups) == {"forget": "B", "tow": "A"}


@pytest.mark.slow
def test_one_wandb_run_per_cell_and_a_summary_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = tiny_bench(tmp_path, seeds=[0], methods=METHODS[1:2], wandb={"mode": "offline", "project": "t"})
    configs = []
    real = Tracker._init
    monkeypatch.setattr(
        Tracker, "_init", lambda self, folder, **kw: configs.append(kw["config"]) or real(self, folder, **kw)
    )
    try:
        run_bench(parse(["--config", str(config)]))
    finally:
        wandb.teardown()  # W&B keeps the settings of its first run in the process: start the next test afresh
    assert len(configs) == 7 and all(
        c["environment"]["torch"] == importlib.metadata.version("torch") for c in configs
    )
    assert configs[-1]["environment"]["precisions"] == ["32-true"]  # the summary's: of the runs, as they ran
    cells = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / SEED.format(0)).iterdir())
    assert cells == ["JiT", "JiT@retrain", "Pretrain", "Retrain", "pretrain", "retrain"]
    for cell in (tmp_path / SEED.format(0)).iterdir():
        assert len(list(cell.glob("wandb/offline-run-*/run-*.wandb"))) == 1, cell.name
    assert len(list((tmp_path / "outputs/tiny").glob("wandb/offline-run-*/run-*.wandb"))) == 1  # the summary
    # the sync command the bench printed names every run it wrote, and nothing else
    (command,) = re.findall(r"`(wandb sync [^`]+)`", capsys.readouterr().err)
    synced = {Path(path).resolve() for pattern in command.split()[2:] for path in glob.glob(pattern)}
    assert synced == {run.parent.resolve() for run in tmp_path.glob("outputs/**/offline-run-*/run-*.wandb")}
    assert len(synced) == 7


def test_wandb_mode_is_the_config_s_then_the_environment_s_then_online_only_with_a_key(tmp_path, monkeypatch):
    for key in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert wandb_mode(None) == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    os.chmod(tmp_path / "netrc", 0o600)
    assert wandb_mode(None) == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode(None) == "disabled" and wandb_mode("offline") == "offline"


def test_one_shui_arguments_pass_through_to_the_runs_and_the_methods():
    own, runs, methods = split_arguments(
        [
            "--config",
            "b.yaml",
            "--trainer.max_epochs",
            "2",
            "--model.init_args.lr=3",
            "--data.init_args.root=/d",
        ]
    )
    assert own == ["--config", "b.yaml"]
    assert runs == ["--trainer.max_epochs=2", "--data.init_args.root=/d"]
    assert methods == ["--model.init_args.lr=3"]


JIT = str(CONFIGS / "methods/jit.yaml")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"train": "missing.yaml"}, "train config missing.yaml does not exist"),
        ({"seeds": [1, 1]}, "seeds must be distinct"),
        ({"shadows": 3}, "shadows must be 0 or an even number of at least 4"),
        ({"shadows": 4, "requests": 3}, "on a bench of one request (got shadows 4 and requests 3)"),
        ({"relearn_steps": 5, "requests": 3}, "relearning runs on a bench of one request"),
        ({"relearn_lr": 0}, "relearn_lr must be above 0 and relearn_sample at least 1"),
        ({"methods": [{"config": "absent.yaml"}]}, "method config absent.yaml does not exist"),
        ({"methods": [{"config": JIT}, {"config": JIT}]}, "unique"),
        ({"methods": [{"label": "Retrain", "config": JIT}]}, "unique"),
        ({"methods": [{"label": "X", "config": "x.yaml"}]}, "'os.system' is not a one_shui UnlearningMethod"),
        ({"method_count": 1}, "method_count"),
        (
            {"methods": [{"config": JIT, "options": {"noise": 1}}]},
            "jit.yaml: options: 'noise' is not accepted by JiT; its options are ",
        ),
        ({"methods": [{"config": JIT, "options": {"lr": "fast"}}]}, 'jit.yaml: options: Parser key "lr"'),
        ({"evaluation_options": {"mia": "strong"}}, "bench tiny, evaluation_options: "),
        ({"methods": [{"config": JIT, "setting": "none.yaml"}]}, "setting file none.yaml does not exist"),
        (
            {"methods": [{"config": JIT, "setting": "s.yaml"}]},
            "s.yaml: 'noise' is not accepted by JiT; its options are ",
        ),
        (
            {"methods": [{"config": JIT, "setting": "x.yaml"}]},
            "x.yaml: not a setting file, a YAML of model.init_args alone",
        ),
    ],
)
def test_a_bench_config_that_cannot_run_is_one_message_before_anything_runs(
    tmp_path, monkeypatch, change, message
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.yaml").write_text("model:\n  class_path: os.system\n")
    (tmp_path / "s.yaml").write_text("model:\n  init_args:\n    noise: 1\n")
    config = {**yaml.safe_load(tiny_bench(tmp_path).read_text()), **change}
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as exit:
        main(["--config", str(tmp_path / "bench.yaml")])
    assert str(exit.value.code).startswith("one-shui-bench: ") and message in str(exit.value.code)
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_a_failing_cell_is_named_in_one_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # The Pretrain row tests the model on the MUFAC-layout data: not the data it was trained on.
    evaluate = tmp_path / "evaluate.yaml"
    evaluate.write_text(
        "model:\n  class_path: one_shui.methods.no_unlearning.NoUnlearning\n"
        "data:\n  init_args:\n    dataset: mufac\n"
    )
    config = tiny_bench(tmp_path, seeds=[0], methods=[], evaluate=str(evaluate))
    with pytest.raises(SystemExit) as exit:
        main(["--config", str(config)])
    assert str(exit.value.code).startswith("one-shui-bench: Pretrain, seed 0: ")


BENCHES = sorted((CONFIGS / "bench").glob("*.yaml"))
# Benches of one seed, and why: the others give their tables over 3.
ONE_SEED = {
    "attacks_synthetic": "its 16 shadow models fit 25 minutes on 2 CPU cores at one seed; it resamples people"
}


@pytest.mark.parametrize("path", BENCHES, ids=[path.stem for path in BENCHES])
def test_every_bench_config_is_valid_and_its_method_arguments_parse(path, monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)
    bench = parse(["--config", str(path)])
    assert len(bench.seeds) == (1 if path.stem in ONE_SEED else 3) and bench.methods
    rows = [([bench.evaluate], [])]
    rows += [([method.config, *filter(None, [method.setting])], method.arguments) for method in bench.methods]
    for configs, args in rows:  # the arguments of every row must be ones its `one-shui fit` accepts
        stacked = [arg for config in configs for arg in ("--config", config)]
        with pytest.raises(SystemExit) as exit:
            OneShuiCLI(
                ["fit", "--config", bench.data, *stacked, *bench.evaluation_arguments, *args,
                 "--print_config"]
            )  # fmt: skip
        assert exit.value.code in (None, 0)


def test_a_method_s_setting_file_is_stacked_after_its_config_and_its_content_keys_the_cell(
    monkeypatch, tmp_path
):
    monkeypatch.chdir(CONFIGS.parent)
    bench = parse(["--config", str(CONFIGS / "bench/synthetic.yaml"), "--seeds=[0]"])
    runner = arguments_of(bench)
    (cell,) = [c for c in cells_module.plan(bench) if c.label == "MetaUnlearn" and c.kind == "row"]
    args, configs, _ = runner._arguments(cell)
    at = args.index(cell.config)
    assert args[at + 1 : at + 3] == ["--config", cell.setting] and configs[-1] == cell.setting
    setting = tmp_path / "setting.yaml"  # the same path, other values: another cell
    setting.write_text(Path(cell.setting).read_text())
    moved = replace(cell, setting=str(setting))
    key = cells_module.digest(*runner._arguments(moved)[:2], None, "data")
    setting.write_text("model:\n  init_args:\n    meta_lr: 0.02\n")
    assert cells_module.digest(*runner._arguments(moved)[:2], None, "data") != key


@pytest.mark.slow
def test_the_readme_s_step_by_step_path_gives_the_bench_s_row_for_its_seed(tmp_path, monkeypatch):
    """The README's commands (pretrain, retrain, then MetaUnlearn's fit and test with the setting file, in
    the run layout) give the numbers of the bench's MetaUnlearn row for that seed: both shrunk alike."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    setting = str(CONFIGS / "settings/synthetic/meta_unlearn.yaml")
    config = yaml.safe_load(tiny_bench(tmp_path, seeds=(0,)).read_text())
    config["methods"] = [{"config": str(CONFIGS / "methods/meta_unlearn.yaml"), "setting": setting}]
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(config))
    run_bench(parse(["--config", str(tmp_path / "bench.yaml")]))
    (record,) = glob.glob(f"{SEED.format(0)}/MetaUnlearn-*/cell.json")
    bench = json.loads(Path(record).read_text())["metrics"]

    data, shrunk = ["--config", config["data"]], [*TINY, "--data.init_args.request_size=3"]
    recipe = ["--config", config["train"]]
    method = ["--config", config["methods"][0]["config"], "--config", setting]
    OneShuiCLI(["fit", *data, *recipe, *shrunk])  # the README's pretrain, retrain, then MetaUnlearn
    OneShuiCLI(["fit", *data, *recipe, "--data.init_args.train_pool", "retain", *shrunk])
    OneShuiCLI(["fit", *data, *method, *shrunk])
    given = OneShuiCLI(["test", *data, *method, *shrunk]).model.results
    metric = json.loads(Path(record).read_text())["metric"]
    for pool in ("retain", "forget", "test"):  # the bench's ToW comes from these and the Retrain row's
        assert given[f"{pool}/{metric}"] == pytest.approx(bench[pool], abs=1e-6), pool
    assert given["mia_auc"] == pytest.approx(bench["mia_auc"], abs=1e-6)


def test_evaluation_arguments_reach_every_row_and_no_training(monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)
    bench = parse(["--config", str(CONFIGS / "bench/synthetic.yaml"), "--seeds=[0]"])
    bench = replace(bench, evaluation_args=["--model.init_args.mia=published"])
    runner = arguments_of(bench)
    for cell in cells_module.plan(bench):
        args = runner._arguments(cell)[0]
        assert ("--model.init_args.mia=published" in args) == (cell.kind != "stage"), cell


def test_the_weights_file_reaches_the_runs_of_the_train_recipe_alone_and_must_exist(monkeypatch, tmp_path):
    """The pretrain, the retrain and the shadows start from the file (a machine without internet); the
    methods' and the evaluation's runs, which start from those models and have no such option, do not."""
    monkeypatch.chdir(CONFIGS.parent)
    weights = tmp_path / "vit_b16.safetensors"
    weights.write_bytes(b"weights")
    config = ["--config", str(CONFIGS / "bench/synthetic.yaml"), "--seeds=[0]", "--shadows=4"]
    bench = parse([*config, f"--weights_file={weights}"])
    runner = arguments_of(bench)
    given = f"--model.init_args.weights_file={weights}"
    kinds = {cell.kind: given in runner._arguments(cell)[0] for cell in cells_module.plan(bench)}
    assert kinds == {"stage": True, "shadow": True, "row": False, "reference": False}
    weights.unlink()
    with pytest.raises(BenchConfigError, match=f"weights_file {weights} does not exist"):
        parse([*config, f"--weights_file={weights}"])


def test_each_unlearning_seed_runs_every_method_anew_with_its_own_seeds_on_the_same_stages(monkeypatch):
    """Unlearning seed 0 is the cell of a bench with one (same arguments, same folder); seed u > 0 has its
    own cells, whose seed and simulated requests move by UNLEARNING_STRIDE x u, on the same pretrain."""
    monkeypatch.chdir(CONFIGS.parent)
    bench = parse(["--config", str(CONFIGS / "bench/synthetic.yaml"), "--seeds=[3]", "--unlearning_seeds=2"])
    runner = arguments_of(bench)
    cells = cells_module.plan(bench)
    again = [cell for cell in cells if cell.unlearning == 1]
    assert {(cell.label, cell.kind) for cell in again} == {
        (method.label, kind) for method in bench.methods for kind in ("row", "reference")
    }
    one = {cell.name: cell for cell in cells_module.plan(replace(bench, unlearning_seeds=1))}
    for cell in cells:
        args = runner._arguments(cell)[0]
        seed = 3 + cells_module.UNLEARNING_STRIDE * cell.unlearning
        assert f"--seed_everything={seed}" in args and "--data.init_args.seed=3" in args
        assert (f"--data.init_args.simulation_seed={seed}" in args) == (cell.unlearning == 1)
        if cell.unlearning:
            assert cell.tag.endswith("@u1") and cell.name.endswith("unlearning seed 1")
        else:
            assert args == runner._arguments(one[cell.name])[0] and cell.tag == one[cell.name].tag
    with pytest.raises(BenchConfigError, match="unlearning_seeds must be at least 1"):
        parse(["--config", str(CONFIGS / "bench/synthetic.yaml"), "--unlearning_seeds=0"])


@pytest.mark.slow
def test_a_bench_of_two_unlearning_seeds_reports_both_nested_within_the_seed(tmp_path):
    folder, _ = run_tiny(tmp_path, seeds=[0], methods=[("JiT", "jit")], unlearning_seeds=2)
    rows = read(folder / "outputs/tiny/results.csv")
    jit = [row for row in rows if row["row"] == "JiT"]
    assert [row["unlearning_seed"] for row in jit] == ["0", "1"]
    assert {row["unlearning_seed"] for row in rows if row["row"] in ("Pretrain", "Retrain")} == {"0"}
    assert jit[0]["retain"] != jit[1]["retain"]  # JiT's noise drawn anew
    paired_rows = read(folder / "outputs/tiny/paired.csv")
    retain = next(row for row in paired_rows if (row["row"], row["statistic"]) == ("JiT", "retain"))
    assert retain["resampled"] == NESTED and retain["seeds"] == "1"
    assert float(retain["low"]) < float(retain["mean"]) < float(retain["high"])
    assert "each method at 2 unlearning seeds" in (folder / "outputs/tiny/results.md").read_text()


def test_the_embedded_default_runs_every_method_of_one_shui(monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)
    bench = parse(["--config", str(CONFIGS / "bench/synthetic.yaml")])
    classes = {path.stem for path in (CONFIGS.parent / "one_shui/methods").glob("*.py")}
    helpers = {"__init__", "base", "classifier", "distillation", "loading", "no_unlearning", "original"}
    helpers |= {"training_pass"}
    assert {config_method(method.config).name() for method in bench.methods} == classes - helpers


def test_the_environment_is_written_beside_the_results_and_under_the_table(bench):
    folder, _ = bench
    env = json.loads((folder / "outputs/tiny/environment.json").read_text())
    for name in ("torch", "lightning", "timm", "torchmetrics"):
        assert env[name] == importlib.metadata.version(name)
    assert (
        env["devices"] == ["cpu"]
        and env["precisions"] == ["32-true"]
        and env["threads"] == torch.get_num_threads()
        and env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    )
    table = (folder / "outputs/tiny/results.md").read_text()
    assert f"Environment: Python {platform.python_version()}, torch {env['torch']}" in table
    assert f"({env['cpu_capability']}) with {env['threads']} threads" in table and "environment.json" in table


def test_bench_records_are_json_and_a_reference_s_holds_what_rmia_reads_of_it(bench):
    folder, _ = bench
    record = json.loads(next((folder / SEED.format(0)).glob("JiT@retrain-*/cell.json")).read_text())
    assert record["kind"] == "reference" and record["original"] == "retrain" and "metrics" not in record
    assert set(record["probabilities"]) == {"forget", "test", "population"}


def test_the_results_notebook_shows_a_bench_s_table_and_plots(bench, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    folder, _ = bench
    monkeypatch.setenv("ONE_SHUI_RESULTS", str(folder / "outputs/tiny"))
    notebook = nbformat.read(CONFIGS.parent / "notebooks/results.ipynb", as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    markdown = "".join(output.get("data", {}).get("text/markdown", "") for output in outputs)
    assert "| MetaUnlearn |" in markdown and "| Bad Teacher |" in markdown and "±" in markdown
    assert sum("image/png" in output.get("data", {}) for output in outputs) == 4


SWEEPS = sorted((CONFIGS / "sweeps").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("path", SWEEPS, ids=[path.stem for path in SWEEPS])
def test_every_sweep_runs_the_bench_with_arguments_its_runs_accept(path, monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)
    sweep = yaml.safe_load(path.read_text())
    command = sweep["command"]
    assert command[:2] == ["${env}", "one-shui-bench"] and command[-1] == "${args}"
    for name, spec in sweep["parameters"].items():
        for value in spec["values"]:
            # W&B's ${args}: --name=value (or --name value, as some of its versions write it)
            bench = parse([*command[2:-1], f"--{name}={value}"])
            assert parse([*command[2:-1], f"--{name}", str(value)]) == bench
            for method in bench.methods:
                with pytest.raises(SystemExit) as exit:
                    OneShuiCLI(
                        ["fit", "--config", bench.data, "--config", method.config, *bench.args,
                         *bench.method_args, "--print_config"]
                    )  # fmt: skip
                assert exit.value.code in (None, 0)


@pytest.mark.slow
def test_the_same_machine_lock_and_seed_give_an_identical_results_csv(tmp_path):
    """Two benches from nothing (their own cells, data and stand-in), one after the other: the same
    results.csv and identities.csv, the wall times aside."""
    first, second = (
        run_tiny(tmp_path / run, seeds=[0], methods=METHODS[:2])[0] / "outputs/tiny"
        for run in ("first", "second")
    )
    assert metrics(first / "results.csv") == metrics(second / "results.csv")
    assert (first / "identities.csv").read_text() == (second / "identities.csv").read_text()


@pytest.mark.slow
def test_every_image_a_bench_reads_is_decoded_once_in_all_its_cells(tmp_path):
    """The pretrain, the retrain, the Pretrain, Retrain, method and reference cells of a seed each build
    their loaders; none of them decodes an image that an earlier one (or epoch) decoded (a bench that
    rebuilt its pools per cell would decode each image once per cell)."""
    IMAGES.clear()
    decoded = IMAGES.decoded
    folder, _ = run_tiny(tmp_path, seeds=[0], methods=[("JiT", "jit")])
    images = list((folder / "data/synthetic/CelebAMask-HQ/CelebA-HQ-img").iterdir())
    assert 0 < IMAGES.decoded - decoded <= len(images)


@pytest.mark.parametrize(
    ("new", "dirty"), [("notes.txt", False), ("pkg/my_method.py", True), ("configs/my.yaml", True)]
)
def test_an_untracked_file_in_the_package_or_its_configs_makes_the_commit_dirty(tmp_path, new, dirty):
    """A bench run with a method file or YAML not yet committed did not run the commit it names."""

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=tmp_path, check=True,
                       capture_output=True)  # fmt: skip

    (tmp_path / "pkg").mkdir()
    (tmp_path / "configs").mkdir()
    (tmp_path / "pkg/__init__.py").write_text("")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "first")
    head = environment_module.commit(tmp_path / "pkg")
    assert head is not None and not head.endswith("+dirty")
    (tmp_path / new).write_text("")
    assert environment_module.commit(tmp_path / "pkg") == (f"{head}+dirty" if dirty else head)


def test_a_bench_run_with_other_settings_writes_its_own_folder(monkeypatch):
    """`--seeds '[0]' --trainer.max_epochs=2` on the demo's config must not write over the demo's table."""
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    config = str(CONFIGS / "bench/synthetic.yaml")
    demo = parse(["--config", config])
    changed = parse(["--config", config, "--seeds", "[0]", "--trainer.max_epochs=2"])
    assert (
        demo.name == "synthetic" and changed.name.startswith("synthetic-") and changed.folder != demo.folder
    )
    assert parse(["--config", config, "--seeds=[0]", "--trainer.max_epochs", "2"]).name == changed.name
    assert parse(["--config", config, "--seeds=[1]"]).name not in (changed.name, demo.name)
    assert parse(["--config", config, "--seeds=[0]", "--name", "mine"]).name == "mine"
    assert parse(["--config", config, "--wandb.mode=offline"]).name == "synthetic"  # W&B's: not the results
    monkeypatch.setenv("WANDB_SWEEP_ID", "s")  # a sweep's runs share the config's name (one W&B group)
    assert parse(["--config", config, "--seeds=[0]"]).name == "synthetic"


def test_the_readme_s_metaunlearn_commands_read_the_bench_s_setting_file():
    """The README's step-by-step MetaUnlearn path stacks the setting file the bench runs on the embedded
    default (VAL's choice) after the method's YAML, whose values (the paper's for CelebA-HQ) it changes."""
    readme = (CONFIGS.parent / "README.md").read_text()
    (line,) = [line for line in readme.splitlines() if line.startswith('M="--config configs/methods/')]
    given = line.split('"')[1].split()
    bench = yaml.safe_load((CONFIGS / "bench/synthetic.yaml").read_text())
    (method,) = [m for m in bench["methods"] if m["config"].endswith("meta_unlearn.yaml")]
    assert given == ["--config", method["config"], "--config", method["setting"]] and "options" not in method
    _, defaults = config_model(CONFIGS.parent / method["config"])
    setting = setting_options(CONFIGS.parent / method["setting"])
    assert setting and all(setting[key] != defaults.get(key) for key in setting)
    assert "one-shui fit  --config $D $M" in readme and "one-shui test --config $D $M" in readme
