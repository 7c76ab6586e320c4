"""`one-shui-forget`: a real request served from portraits, and every way a request can be refused."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import meta_data
from PIL import Image
from test_cli import CONFIGS

from one_shui.checkpoints import load_checkpoint, sha256_of
from one_shui.forget import main
from one_shui.methods.classifier import Classifier
from one_shui.methods.jit import JiT
from one_shui.methods.loading import load_prepared


def write_request(folder: Path, rows: list[dict[str, str]], columns=("image", "identity", "targets")) -> Path:
    path = folder / "request.csv"
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def request_rows(runs, tmp_path) -> list[dict[str, str]]:
    """The split's support portraits copied to a request folder, one resized to another size."""
    data = meta_data(runs[0])
    data.setup()
    _, targets = data.row_labels
    rows = []
    for k, row in enumerate(data.rows["support"]):
        name = f"portrait{k}.png"
        with Image.open(data.table.path(row)) as image:
            (image.resize((50, 40)) if k == 0 else image).save(tmp_path / name)
        values = " ".join(str(int(v)) for v in targets[row])
        rows.append({"image": name, "identity": data.table.identities[row], "targets": values})
    return rows


def forget(*args) -> str | None:
    """Run `one-shui-forget`; its one-line error, or None when it succeeded."""
    try:
        main([str(a) for a in args])
    except SystemExit as exit:
        return str(exit.code)
    return None


def test_forget_writes_the_unlearned_model_and_its_receipt(prepared, runs, request_rows, tmp_path):
    request = write_request(tmp_path, request_rows)
    out = tmp_path / "served" / "unlearned.ckpt"
    assert forget(prepared, request, "--out", out) is None

    receipt = json.loads(out.with_suffix(".json").read_text())
    assert receipt["identities"] == sorted(row["identity"] for row in request_rows)
    assert receipt["method"] == "one_shui.methods.meta_unlearn.MetaUnlearn"
    assert receipt["output"]["sha256"] == sha256_of(out)
    assert receipt["inputs"]["request"]["sha256"] == sha256_of(request)
    assert [p["sha256"] for p in receipt["inputs"]["portraits"]] == [
        sha256_of(tmp_path / row["image"]) for row in request_rows
    ]
    assert receipt["seconds"]["forget"] > 0

    # The output is a model checkpoint with the split, holding what forget() does to the support batch.
    method = load_prepared(prepared)
    unlearned = Classifier.from_checkpoint(out, split=method.split)
    original = {k: v.clone() for k, v in method.model.state_dict().items()}
    data = meta_data(runs[0])
    images, ids, targets = next(iter(data.loader("support")))
    images[0] = data.images("support").transform(Image.open(tmp_path / "portrait0.png").convert("RGB"))
    method.forget((images, ids, targets))
    expected = method.model.state_dict()
    assert all(torch.allclose(expected[k], v, atol=1e-6) for k, v in unlearned.state_dict().items())
    assert any(not torch.equal(original[k], v) for k, v in unlearned.state_dict().items())
    assert load_checkpoint(out)["one_shui"]["unlearned"]["identities"] == receipt["identities"]


def corrupt(rows, tmp_path, how: str) -> list[dict[str, str]]:
    rows = [dict(row) for row in rows]
    if how == "not an image":
        (tmp_path / "notes.png").write_text("not an image")
        rows[0]["image"] = "notes.png"
    elif how == "missing image":
        rows[0]["image"] = "absent.png"
    elif how == "outside the folder":
        shutil.copy(tmp_path / rows[0]["image"], tmp_path.parent / "outside.png")
        rows[0]["image"] = "../outside.png"
    elif how == "unknown identity":
        rows[0]["identity"] = "nobody"
    elif how == "bad targets":
        rows[0]["targets"] = "1 0 1"
    elif how == "empty":
        rows = []
    return rows


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("not an image", "not a readable image"),
        ("missing image", "does not exist"),
        ("outside the folder", "outside the portrait folder"),
        ("unknown identity", "'nobody' are not among"),
        ("bad targets", "give 40 values 0 or 1"),
        ("empty", "names no portrait"),
    ],
)
def test_a_bad_request_is_refused_with_one_message_and_no_output(
    prepared, request_rows, tmp_path, how, message
):
    request = write_request(tmp_path, corrupt(request_rows, tmp_path, how))
    out = tmp_path / "unlearned.ckpt"
    error = forget(prepared, request, "--out", out)
    assert error is not None and message in error and "\n" not in error
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_people_never_trained_on_are_refused(prepared, runs, request_rows, tmp_path):
    data = meta_data(runs[0])
    data.setup()
    stranger = data.split.val[0]  # in the data, but never in the model's training set
    rows = [dict(request_rows[0], identity=stranger)]
    error = forget(prepared, write_request(tmp_path, rows), "--out", tmp_path / "u.ckpt")
    assert f"{stranger!r} are not among" in error


def test_a_request_without_the_columns_the_method_reads_is_refused(prepared, request_rows, tmp_path):
    no_targets = write_request(tmp_path, request_rows, columns=("image", "identity"))
    assert "reads the targets" in forget(prepared, no_targets, "--out", tmp_path / "u.ckpt")
    no_identity = write_request(tmp_path, request_rows, columns=("image",))
    assert "missing column(s) identity" in forget(prepared, no_identity, "--out", tmp_path / "u.ckpt")


def test_targets_are_required_exactly_when_the_method_declares_it_reads_them(
    runs, request_rows, tmp_path, monkeypatch
):
    """JiT declares it reads no targets, so it serves a request without them; the same method declaring
    it reads them is refused that request instead of being served zeros."""
    request = write_request(tmp_path, request_rows, columns=("image", "identity"))
    config, pretrain = method_config(tmp_path), runs[1]
    assert forget(config, request, "--pretrain-ckpt", pretrain, "--out", tmp_path / "a.ckpt") is None
    monkeypatch.setattr(JiT, "reads_targets", True)
    error = forget(config, request, "--pretrain-ckpt", pretrain, "--out", tmp_path / "b.ckpt")
    assert error is not None and "reads the targets" in error
    assert not (tmp_path / "b.ckpt").exists()


def test_the_output_defaults_to_the_run_layout_of_the_original_model(
    prepared, request_rows, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    request = write_request(tmp_path, request_rows)
    assert forget(prepared, request) is None
    split = load_prepared(prepared).split
    out = (
        tmp_path / f"outputs/synthetic_celebahq/N{split.request_size}-seed{split.seed}/unlearned/request.ckpt"
    )
    assert json.loads(out.with_suffix(".json").read_text())["output"]["sha256"] == sha256_of(out)


def test_checkpoints_that_are_not_the_prepared_method_of_this_model_are_refused(
    prepared, runs, request_rows, tmp_path
):
    _, pretrain, retrain = runs
    request = write_request(tmp_path, request_rows)
    out = tmp_path / "u.ckpt"
    assert "not a prepared unlearning method" in forget(pretrain, request, "--out", out)
    assert "prepared on another original model" in forget(
        prepared, request, "--out", out, "--pretrain-ckpt", retrain
    )
    forged = load_checkpoint(prepared)
    forged["one_shui"]["method"] = "os.system"  # a prepared checkpoint never names code outside one_shui
    torch.save(forged, tmp_path / "forged.ckpt")
    assert "refused, it names 'os.system'" in forget(tmp_path / "forged.ckpt", request, "--out", out)
    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    assert "not a PyTorch checkpoint" in forget(tmp_path / "junk.ckpt", request, "--out", out)
    assert not out.exists()


def test_an_existing_output_is_never_overwritten(prepared, request_rows, tmp_path):
    request = write_request(tmp_path, request_rows)
    out = tmp_path / "u.ckpt"
    out.write_text("keep me")
    assert "exists" in forget(prepared, request, "--out", out)
    assert out.read_text() == "keep me"


def method_config(tmp_path: Path, name: str = "jit", **options) -> Path:
    """The config of method ``name``, with ``options`` set in its model section."""
    config = yaml.safe_load((CONFIGS / "methods" / f"{name}.yaml").read_text())
    config["model"]["init_args"].update(options)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_method_with_nothing_to_prepare_serves_from_its_config(runs, request_rows, tmp_path):
    _, pretrain, _ = runs
    request = write_request(tmp_path, request_rows)
    original = Classifier.from_checkpoint(pretrain).state_dict()
    for lr, moved in ((0.01, True), (0.0, False)):  # the config's options are the ones used
        config, out = method_config(tmp_path, lr=lr), tmp_path / f"lr{lr}.ckpt"
        assert forget(config, request, "--pretrain-ckpt", pretrain, "--out", out) is None
        receipt = json.loads(out.with_suffix(".json").read_text())
        assert receipt["method"] == "one_shui.methods.jit.JiT"
        assert receipt["inputs"]["method_config"]["sha256"] == sha256_of(config)
        assert receipt["inputs"]["pretrain_checkpoint"]["sha256"] == sha256_of(pretrain)
        unlearned = Classifier.from_checkpoint(out).state_dict()
        assert any(not torch.equal(original[k], v) for k, v in unlearned.items()) == moved


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("jit", {}, "give the model to unlearn with --pretrain-ckpt"),
        ("meta_unlearn", {}, "MetaUnlearn must be prepared first: run `one-shui fit --config"),
        ("scrub", {}, "SCRUB reads the full forget and retain sets"),
        ("bad_teacher", {}, "it is a benchmark reference"),
        ("jit", {"noise_std": "high"}, 'key "noise_std"'),
        ("jit", {"sigma": 0.1}, "'sigma' is not accepted"),
    ],
)
def test_configs_that_cannot_serve_a_request_are_refused(
    runs, request_rows, tmp_path, name, options, message
):
    request, out = write_request(tmp_path, request_rows), tmp_path / "u.ckpt"
    original = [] if name == "jit" and not options else ["--pretrain-ckpt", runs[1]]
    error = forget(method_config(tmp_path, name, **options), request, *original, "--out", out)
    assert error is not None and message in error and "\n" not in error
    assert not out.exists()


def test_a_config_naming_code_outside_one_shui_is_refused(runs, request_rows, tmp_path):
    config = tmp_path / "evil.yaml"
    config.write_text("model:\n  class_path: os.system\n  init_args: {}\n")
    error = forget(
        config, write_request(tmp_path, request_rows), "--pretrain-ckpt", runs[1], "--out", tmp_path / "u"
    )
    assert "'os.system' is not a one_shui UnlearningMethod" in error
