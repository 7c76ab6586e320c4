"""`one-shui-forget`: a real request served from portraits, and every way a request can be refused."""

from __future__ import annotations

import csv
import dataclasses
import errno
import json
import os
import shutil
import tempfile
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import CONFIGS, DATA, TINY_SPEC, meta_data, opened_files
from PIL import Image

from one_shui.checkpoints import load_checkpoint, sha256_of
from one_shui.data.check_set import take_check_set
from one_shui.data.datamodule import build_transform
from one_shui.data.report import main as split_main
from one_shui.data.splits import Split
from one_shui.forget import load_portraits, main, parse_targets, read_request
from one_shui.methods.base import UnknownIdentityError
from one_shui.methods.classifier import Classifier
from one_shui.methods.jit import JiT
from one_shui.methods.loading import load_prepared
from one_shui.methods.meta_unlearn import MetaUnlearn
from one_shui.receipts import main as verify_main


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
    portrait = Image.open(tmp_path / "portrait0.png").convert("RGB")
    images[0] = build_transform(data.hparams.image_size, False)(portrait)
    method.forget((images, ids, targets))
    expected = method.model.state_dict()
    assert all(torch.allclose(expected[k], v, atol=1e-6) for k, v in unlearned.state_dict().items())
    assert any(not torch.equal(original[k], v) for k, v in unlearned.state_dict().items())
    assert load_checkpoint(out)["one_shui"]["unlearned"]["identities"] == receipt["identities"]


def test_a_request_opens_the_original_model_once(prepared, runs, request_rows, tmp_path):
    """The original model is read once, hashed as it is read, and handed to whatever needs it."""
    request = write_request(tmp_path, request_rows)
    with opened_files() as opened:
        assert forget(prepared, request, "--out", tmp_path / "once.ckpt") is None
    assert opened.count(os.path.realpath(runs[1])) == 1


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
    elif how == "a folder":
        (tmp_path / "folder.png").mkdir()
        rows[0]["image"] = "folder.png"
    elif how == "a FIFO":
        os.mkfifo(tmp_path / "fifo.png")
        rows[0]["image"] = "fifo.png"
    elif how == "a truncated image":
        data = (tmp_path / rows[0]["image"]).read_bytes()
        (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
        rows[0]["image"] = "cut.png"
    elif how == "a link loop":
        os.symlink(tmp_path / "loop.png", tmp_path / "loop.png")
        rows[0]["image"] = "loop.png"
    elif how == "a NUL byte in its name":
        rows[0]["image"] = "port\0rait.png"
    elif how == "a name too long":
        rows[0]["image"] = "p" * 300 + ".png"
    elif how == "a float image beyond any range":
        Image.fromarray(np.full((8, 8), 300.0, dtype=np.float32)).save(tmp_path / "far.tiff")
        rows[0]["image"] = "far.tiff"
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
        ("a folder", "is not a regular file"),
        ("a FIFO", "is not a regular file"),
        ("a truncated image", "not a readable image"),
        ("a float image beyond any range", "beyond 255"),
        ("a link loop", "portrait 'loop.png': cannot be read"),
        ("a NUL byte in its name", "portrait 'port\\x00rait.png': cannot be read"),
        ("a name too long", "cannot be read (File name too long)"),
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


def test_one_shui_split_writes_a_request_folder_that_forget_serves(prepared, runs, tmp_path, capsys):
    """The embedded data's request without a script: each forget identity's support portrait and the CSV."""
    root, folder = runs[0], tmp_path / "request"
    args = [
        *("--config", str(DATA), f"--data.init_args.root={root / 'data/synthetic'}"),
        *("--data.init_args.synthetic.identities=40", "--data.init_args.request_size=3"),
        f"--data.init_args.split_file={root / 'pre/checkpoints/split.json'}",
        *(f"--data.init_args.cache_dir={root / 'cache'}", "--out", str(tmp_path / "split.json")),
        *("--request-folder", str(folder)),
    ]
    split_main(args)
    assert f"forget request of 3 people written to {folder / 'request.csv'}" in capsys.readouterr().out
    assert forget(prepared, folder / "request.csv", "--out", tmp_path / "u.ckpt") is None
    receipt = json.loads((tmp_path / "u.json").read_text())
    assert receipt["identities"] == sorted(Split.load(root / "pre/checkpoints/split.json").forget)
    assert sorted(p.name for p in folder.iterdir()) == ["000.jpg", "001.jpg", "002.jpg", "request.csv"]
    with pytest.raises(SystemExit) as exit:  # never over an existing folder
        split_main(args)
    assert f"--request-folder {folder} exists" in str(exit.value.code)


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
    original, request_rows, tmp_path, monkeypatch
):
    """JiT declares it reads no targets, so it serves a request without them; the same method declaring
    it reads them is refused that request instead of being served zeros."""
    request = write_request(tmp_path, request_rows, columns=("image", "identity"))
    config = method_config(tmp_path)
    assert forget(config, request, *original, "--out", tmp_path / "a.ckpt") is None
    monkeypatch.setattr(JiT, "reads_targets", True)
    error = forget(config, request, *original, "--out", tmp_path / "b.ckpt")
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


@pytest.fixture
def original(runs, tmp_path) -> list[str]:
    """The arguments that give a method served from its config the original model and the data config
    (of the tiny runs) that its check set is drawn from."""
    init_args = dict(meta_data(runs[0]).hparams) | {"synthetic": dataclasses.asdict(TINY_SPEC)}
    init_args = {k: v for k, v in init_args.items() if k not in ("split_file", "train_pool")}
    config = tmp_path / "data.yaml"
    config.write_text(
        yaml.safe_dump({"data": {"class_path": "one_shui.data.IdentityDataModule", "init_args": init_args}})
    )
    return ["--pretrain-ckpt", str(runs[1]), "--data", str(config)]


def method_config(tmp_path: Path, name: str = "jit", **options) -> Path:
    """The config of method ``name``, with ``options`` set in its model section."""
    config = yaml.safe_load((CONFIGS / "methods" / f"{name}.yaml").read_text())
    config["model"]["init_args"].update(options)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_method_with_nothing_to_prepare_serves_from_its_config(runs, original, request_rows, tmp_path):
    _, pretrain, _ = runs
    request = write_request(tmp_path, request_rows)
    weights = Classifier.from_checkpoint(pretrain).state_dict()
    for lr, moved in ((0.01, True), (0.0, False)):  # the config's options are the ones used
        config, out = method_config(tmp_path, lr=lr), tmp_path / f"lr{lr}.ckpt"
        assert forget(config, request, *original, "--out", out) is None
        receipt = json.loads(out.with_suffix(".json").read_text())
        assert receipt["method"] == "one_shui.methods.jit.JiT"
        assert receipt["inputs"]["method_config"]["sha256"] == sha256_of(config)
        assert receipt["inputs"]["pretrain_checkpoint"]["sha256"] == sha256_of(pretrain)
        unlearned = Classifier.from_checkpoint(out).state_dict()
        assert any(not torch.equal(weights[k], v) for k, v in unlearned.items()) == moved
        guard = receipt["guard"]  # the check set drawn from the VAL of the data config
        assert guard["check_set"]["source"] == original[-1] and guard["check_set"]["images"] > 0
        assert (guard["before"] == guard["after"]) == (not moved) and guard["passed"] and not guard["forced"]


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


# --- hostile input, races and faults ---------------------------------------------------------------


def nothing_written(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.suffix in (".ckpt", ".json") or p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("u.json", "its receipt is written beside it as <name>.json"),
        ("file.txt/u.ckpt", "file.txt is a file, not a folder"),
    ],
)
def test_an_out_that_cannot_hold_the_checkpoint_and_its_receipt_is_refused(
    prepared, request_rows, tmp_path, out, message
):
    (tmp_path / "file.txt").write_text("a file")
    error = forget(prepared, write_request(tmp_path, request_rows), "--out", tmp_path / out)
    assert error is not None and message in error and "\n" not in error
    assert nothing_written(tmp_path) and (tmp_path / "file.txt").read_text() == "a file"


@pytest.mark.parametrize("where", ["a folder on the way", "the output itself"])
def test_an_out_that_is_a_link_to_nowhere_is_refused_before_any_work(
    prepared, request_rows, tmp_path, monkeypatch, where
):
    """A link that leads nowhere, as a folder of --out or as --out itself, is found before the request is
    served, not when the work is done."""
    nowhere = tmp_path / "nowhere"
    out = tmp_path / ("linked/u.ckpt" if where == "a folder on the way" else "u.ckpt")
    os.symlink(nowhere, out.parent if where == "a folder on the way" else out)
    monkeypatch.setattr(MetaUnlearn, "forget", lambda *a: pytest.fail("the request was served"))
    error = forget(prepared, write_request(tmp_path, request_rows), "--out", out)
    expected = (
        "linked is a link that leads nowhere, not a folder" if where == "a folder on the way" else "exists"
    )
    assert error is not None and expected in error and "\n" not in error, error
    assert not nowhere.exists()


def test_forget_never_writes_through_a_link_planted_at_a_temporary_name(
    prepared, request_rows, tmp_path, monkeypatch
):
    """Links at the names the model's and the receipt's temporary files would have (the one drawn first,
    and a pid-named one): the files they point at are left as they were, and the outputs are files."""
    served = tmp_path / "served"
    served.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours")
    for name in ("u.ckpt", "u.json"):
        for tag in ("planted", str(os.getpid())):
            os.symlink(victim, served / f".{name}.{tag}.tmp")
    names = iter(["planted", "free1", "planted", "free2"])  # the model's draws, then the receipt's
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: names)
    assert forget(prepared, write_request(tmp_path, request_rows), "--out", served / "u.ckpt") is None
    assert victim.read_text() == "not yours"
    out = served / "u.ckpt"
    assert not out.is_symlink() and not out.with_suffix(".json").is_symlink()
    receipt = json.loads(out.with_suffix(".json").read_text())
    assert receipt["output"]["sha256"] == sha256_of(out) and load_checkpoint(out)["state_dict"]


def test_a_run_never_overwrites_an_output_that_another_run_wrote_meanwhile(
    prepared, request_rows, tmp_path, monkeypatch
):
    """Two runs on one --out both pass the check at their start; the one that writes second must fail
    and keep the first one's files."""
    out = tmp_path / "u.ckpt"
    real = MetaUnlearn.unlearned_checkpoint

    def the_other_run_writes_first(method, record):
        out.write_text("the other run's model")
        out.with_suffix(".json").write_text("the other run's receipt")
        return real(method, record)

    monkeypatch.setattr(MetaUnlearn, "unlearned_checkpoint", the_other_run_writes_first)
    error = forget(prepared, write_request(tmp_path, request_rows), "--out", out)
    assert error is not None and "written meanwhile by another run" in error
    assert out.read_text() == "the other run's model"
    assert out.with_suffix(".json").read_text() == "the other run's receipt"
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_model_with_nan_or_infinite_weights_is_never_written(prepared, runs, request_rows, tmp_path):
    request = write_request(tmp_path, request_rows)
    poisoned = load_checkpoint(prepared)
    poisoned["state_dict"] = {k: torch.full_like(v, float("nan")) for k, v in poisoned["state_dict"].items()}
    torch.save(poisoned, tmp_path / "nan.ckpt")
    error = forget(tmp_path / "nan.ckpt", request, "--out", tmp_path / "u.ckpt")
    assert error is not None and "NaN or infinite weights" in error and "nothing is written" in error
    error = forget(
        method_config(tmp_path, lr=float("inf")),
        request,
        "--pretrain-ckpt",
        runs[1],
        "--out",
        tmp_path / "v.ckpt",
    )
    assert error is not None and "lr must be a finite number" in error
    assert not (tmp_path / "u.ckpt").exists() and not (tmp_path / "v.ckpt").exists()


def test_high_bit_depth_and_float_portraits_are_read_as_what_they_show(original, request_rows, tmp_path):
    """A portrait saved as 16-bit PNG or float TIFF serves the same request as its 8-bit version."""
    rows = [dict(row) for row in request_rows]
    with Image.open(tmp_path / rows[0]["image"]) as image:
        grey = np.asarray(image.convert("L"))
    Image.fromarray(grey).save(tmp_path / "grey8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    Image.fromarray(grey.astype(np.float32) / 255).save(tmp_path / "grey.tiff")
    config, models = method_config(tmp_path, lr=0.01), {}
    for name in ("grey8.png", "grey16.png", "grey.tiff"):
        rows[0]["image"] = name
        out = tmp_path / f"{name}.ckpt"
        request = write_request(tmp_path, rows)
        torch.manual_seed(0)  # JiT's noise
        assert forget(config, request, *original, "--out", out, "--device", "cpu") is None
        models[name] = Classifier.from_checkpoint(out).state_dict()
    for name in ("grey16.png", "grey.tiff"):
        assert all(torch.equal(models["grey8.png"][k], v) for k, v in models[name].items()), name


def test_a_request_saved_with_a_byte_order_mark_is_read(prepared, request_rows, tmp_path):
    request = write_request(tmp_path, request_rows)
    request.write_bytes(b"\xef\xbb\xbf" + request.read_bytes())  # what spreadsheet programs write
    assert forget(prepared, request, "--out", tmp_path / "u.ckpt") is None


def test_identities_match_in_any_unicode_normal_form(prepared):
    method = load_prepared(prepared)
    composed = "Jos\u00e9 Mar\u00eda"
    method.split = dataclasses.replace(method.split, train=(*method.split.train, composed))
    method.identities = sorted([*method.identities, composed])
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    assert method.identity_ids([decomposed]).tolist() == [method.identities.index(composed)]


def test_a_split_whose_names_clash_once_normalised_is_refused_naming_both(prepared):
    """A split made before datasets were refused for it: a request could not tell the two apart."""
    method = load_prepared(prepared)
    composed = "Jos\u00e9"
    decomposed = unicodedata.normalize("NFD", composed)
    method.split = dataclasses.replace(method.split, train=(*method.split.train, composed, decomposed))
    with pytest.raises(UnknownIdentityError, match="are one name once normalised") as error:
        method.identity_ids([composed])
    assert ascii(composed) in str(error.value) and ascii(decomposed) in str(error.value)


def damage(checkpoint: dict, how: str) -> dict:
    record, state, hparams = checkpoint["one_shui"], checkpoint["state_dict"], checkpoint["hyper_parameters"]
    key = next(k for k in state if k.startswith("meta_loss."))
    if how == "no hyperparameters":
        del checkpoint["hyper_parameters"]
    elif how == "hyperparameters of another type":
        checkpoint["hyper_parameters"] = [1, 2]
    elif how == "no pretrain path":
        del hparams["pretrain_ckpt"]
    elif how == "an unknown option":
        hparams["width"] = 3
    elif how == "an option of another type":
        hparams["hidden"] = "wide"
    elif how == "no state":
        del checkpoint["state_dict"]
    elif how == "a state of another type":
        checkpoint["state_dict"] = "weights"
    elif how == "a missing tensor":
        del state[key]
    elif how == "a tensor of another shape":
        state[key] = state[key].flatten()[:1]
    elif how == "a number instead of a tensor":
        state[key] = 3
    elif how == "a method that is not a name":
        record["method"] = 5
    elif how == "no split":
        del record["split"]
    elif how == "a split that is not one":
        record["split"] = {"format": 1}
    return checkpoint


DAMAGES = [
    "no hyperparameters", "hyperparameters of another type", "no pretrain path", "an unknown option",
    "an option of another type", "no state", "a state of another type", "a missing tensor",
    "a tensor of another shape", "a number instead of a tensor", "a method that is not a name", "no split",
    "a split that is not one",
]  # fmt: skip


@pytest.mark.parametrize("how", DAMAGES)
def test_a_structurally_damaged_prepared_checkpoint_is_one_message(prepared, request_rows, tmp_path, how):
    torch.save(damage(load_checkpoint(prepared), how), tmp_path / "damaged.ckpt")
    error = forget(
        tmp_path / "damaged.ckpt", write_request(tmp_path, request_rows), "--out", tmp_path / "u.ckpt"
    )
    assert error is not None and error.startswith("one-shui-forget: ") and "\n" not in error, error
    assert "damaged.ckpt" in error
    assert not (tmp_path / "u.ckpt").exists() and not (tmp_path / "u.json").exists()


def test_a_device_that_is_not_here_is_refused(prepared, request_rows, tmp_path):
    """cuda:99 is on no machine this runs on, with or without a GPU."""
    request = write_request(tmp_path, request_rows)
    error = forget(prepared, request, "--out", tmp_path / "u.ckpt", "--device", "cuda:99")
    assert error is not None and "use --device cpu" in error and "\n" not in error
    error = forget(prepared, request, "--out", tmp_path / "u.ckpt", "--device", "tpu7")
    assert error is not None and "is not a device name" in error
    assert not (tmp_path / "u.ckpt").exists()


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (
            RuntimeError("[enforce fail at inline_container.cc] PytorchStreamWriter failed writing file"),
            "cannot write",
        ),
        (OSError(errno.ENOSPC, "No space left on device", "u.ckpt"), "No space left on device"),
        (OSError(errno.EROFS, "Read-only file system", "u.ckpt"), "Read-only file system"),
    ],
)
def test_a_full_or_read_only_disk_is_one_message_and_leaves_nothing(
    prepared, request_rows, tmp_path, monkeypatch, fault, message
):
    import one_shui.forget as forget_module

    def fail(*args, **kwargs):
        raise fault

    monkeypatch.setattr(forget_module.torch, "save", fail)
    error = forget(prepared, write_request(tmp_path, request_rows), "--out", tmp_path / "u.ckpt")
    assert error is not None and message in error and "\n" not in error
    assert not (tmp_path / "u.ckpt").exists() and not list(tmp_path.glob(".*.tmp"))


def test_an_image_too_large_to_decode_safely_is_refused(prepared, request_rows, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # a portrait here stands for a 20000 x 20000 one
    error = forget(prepared, write_request(tmp_path, request_rows), "--out", tmp_path / "u.ckpt")
    assert error is not None and "DecompressionBombError" in error and "\n" not in error


# --- requests one after another: a chain of receipts ------------------------------------------------


def verify(model: Path) -> str | None:
    """Run `one-shui-verify`; its one-line error, or None when the chain is intact."""
    try:
        verify_main([str(model)])
    except SystemExit as exit:
        return str(exit.code)
    return None


@pytest.fixture
def chain(prepared, request_rows, tmp_path) -> tuple[Path, Path, list[dict[str, str]]]:
    """Two requests served one after the other: the first two people, then the third on that output."""
    for name, rows in (("first", request_rows[:2]), ("second", request_rows[2:])):
        (tmp_path / name).mkdir()
        for row in rows:
            shutil.copy(tmp_path / row["image"], tmp_path / name / row["image"])
        write_request(tmp_path / name, rows)
    one, two = tmp_path / "one.ckpt", tmp_path / "two.ckpt"
    assert forget(prepared, tmp_path / "first/request.csv", "--out", one) is None
    assert forget(prepared, tmp_path / "second/request.csv", "--on", one, "--out", two) is None
    return one, two, request_rows


def test_a_request_is_served_on_the_previous_output_and_its_receipt_names_it(prepared, chain, tmp_path):
    one, two, rows = chain
    receipt = json.loads(two.with_suffix(".json").read_text())
    assert receipt["parent"]["sha256"] == sha256_of(one)
    assert receipt["parent"]["receipt"]["sha256"] == sha256_of(one.with_suffix(".json"))
    assert receipt["forgotten_before"] == sorted(row["identity"] for row in rows[:2])
    assert receipt["identities"] == [rows[2]["identity"]]
    first = json.loads(one.with_suffix(".json").read_text())
    method = load_prepared(prepared)
    assert first["parent"] == {
        "path": str(runs_original(prepared)),
        "sha256": method.original.sha256,
        "receipt": None,
    }

    # The second request started from the first one's output, not from the original model.
    request = read_request(tmp_path / "second/request.csv", (tmp_path / "second").resolve())
    images, _ = load_portraits(request, 32)
    ids = method.identity_ids([row["identity"] for row in request])
    targets = parse_targets(request, "multilabel", 40, method.reads_targets)
    method.model.load_state_dict(Classifier.from_checkpoint(one).state_dict())
    method.forget((images, ids, targets))
    served = Classifier.from_checkpoint(two).state_dict()
    assert all(torch.allclose(method.model.state_dict()[k], v, atol=1e-6) for k, v in served.items())


def test_the_original_named_with_on_is_served_as_without_it(prepared, runs, request_rows, tmp_path):
    request = write_request(tmp_path, request_rows)
    for name, on in (("default", []), ("named", ["--on", runs[1]])):
        assert forget(prepared, request, *on, "--out", tmp_path / f"{name}.ckpt") is None
    default, named = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("default", "named"))
    assert named["parent"] == default["parent"] and named["parent"]["receipt"] is None
    assert named["forgotten_before"] == [] and sha256_of(tmp_path / "named.ckpt") != sha256_of(runs[1])


def runs_original(prepared: Path) -> Path:
    return Path(load_prepared(prepared).hparams.pretrain_ckpt).resolve()


def test_verify_follows_the_chain_and_names_everyone_forgotten(chain, capsys, tmp_path):
    one, two, rows = chain
    assert verify(two) is None
    out = capsys.readouterr().out
    assert "chain intact: 2 request(s), 3 people forgotten" in out
    assert all(row["identity"] in out for row in rows)
    guards = [line for line in out.splitlines() if line.startswith("  guard: passed; ")]
    assert len(guards) == 2 and all("under the original (bound 5.0)" in line for line in guards)
    (tmp_path / "second" / rows[2]["image"]).unlink()  # a deleted portrait is reported, not a break
    assert verify(two) is None
    assert "not found, not checked: portrait" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("first receipt", "one.json was altered after"),
        ("first model", "one.ckpt was altered after"),
        ("first model gone", "which is not there (nor beside it)"),
        ("portrait", "differs from the one"),
    ],
)
def test_a_broken_link_fails_verify_and_is_never_served_on(prepared, chain, tmp_path, damage, message):
    one, two, rows = chain
    if damage == "first receipt":
        receipt = json.loads(one.with_suffix(".json").read_text())
        receipt["identities"] = receipt["identities"][:1]  # someone quietly dropped from the record
        one.with_suffix(".json").write_text(json.dumps(receipt))
    elif damage == "first model":
        with open(one, "ab") as file:
            file.write(b"\0")
    elif damage == "first model gone":
        one.unlink()
    else:
        Image.new("RGB", (32, 32)).save(tmp_path / "first" / rows[0]["image"])
    error = verify(two)
    assert error is not None and message in error
    if damage != "portrait":
        request = write_request(tmp_path, rows[2:])
        error = forget(prepared, request, "--on", two, "--out", tmp_path / "three.ckpt")
        assert error is not None and message in error
        assert not (tmp_path / "three.ckpt").exists() and not (tmp_path / "three.json").exists()


def edit_receipt(model: Path, change) -> None:
    """``change`` applied to the receipt beside ``model`` (a dict, or the JSON text when it returns one)."""
    path = model.with_suffix(".json")
    changed = change(json.loads(path.read_text()))
    path.write_text(changed if isinstance(changed, str) else json.dumps(changed))


def without(receipt: dict, *keys: str) -> dict:
    *outer, last = keys
    inner = receipt
    for key in outer:
        inner = inner[key]
    del inner[last]
    return receipt


def retyped(receipt: dict, value, *keys: str) -> dict:
    *outer, last = keys
    inner = receipt
    for key in outer:
        inner = inner[key]
    inner[last] = value
    return receipt


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: "[]", "two.json: not a one-shui-forget receipt (the receipt: [] is not of type 'object')"),
        (lambda r: "null", "(the receipt: None is not of type 'object')"),
        (
            lambda r: "[" * 100_000 + "]" * 100_000,
            "two.json: not a one-shui-forget receipt (nested too deeply",
        ),
        (lambda r: "{", "two.json: not a readable one-shui-forget receipt (Expecting"),
        (lambda r: without(r, "inputs"), "(the receipt: 'inputs' is a required property)"),
        (lambda r: without(r, "identities"), "(the receipt: 'identities' is a required property)"),
        (lambda r: without(r, "parent", "path"), "($.parent: 'path' is a required property)"),
        (lambda r: retyped(r, "ann", "identities"), "($.identities: 'ann' is not of type 'array')"),
        (lambda r: retyped(r, 5, "parent", "path"), "($.parent.path: 5 is not of type 'string')"),
        (
            lambda r: retyped(r, "x", "inputs", "portraits", 0, "sha256"),
            "($.inputs.portraits[0].sha256: 'x' does",
        ),
        (
            lambda r: retyped(r, [], "inputs", "pretrain_checkpoint"),
            "($.inputs.pretrain_checkpoint: [] is not",
        ),
    ],
    ids=[
        "[]",
        "null",
        "deep nesting",
        "not JSON",
        "no inputs",
        "no identities",
        "no parent path",
        "identities a string",
        "parent path a number",
        "portrait hash",
        "original a list",
    ],  # fmt: skip
)
def test_a_malformed_receipt_is_one_line_naming_it_for_verify_and_for_on(
    prepared, chain, tmp_path, change, message
):
    one, two, rows = chain
    edit_receipt(two, change)
    error = verify(two)
    assert error is not None and message in error and "\n" not in error, error
    error = forget(prepared, write_request(tmp_path, rows[:1]), "--on", two, "--out", tmp_path / "t.ckpt")
    assert error is not None and message in error and "\n" not in error, error


@pytest.mark.parametrize("what", ["parent receipt gone", "model a folder"])
def test_a_missing_receipt_or_a_folder_is_one_line(chain, tmp_path, what):
    one, two, _ = chain
    if what == "parent receipt gone":
        one.with_suffix(".json").unlink()
        error, expected = verify(two), "whose receipt one.json is not there: restore it"
    else:
        error, expected = verify(tmp_path), f"model {tmp_path} is not a file"
    assert error is not None and expected in error and "\n" not in error, error


def test_a_re_rooted_chain_is_refused(chain, tmp_path):
    """The head re-saved, its receipt and its signed copy alike, as if served on another file (its hash,
    no receipt): the receipts name another original model, so the chain is not intact."""
    one, two, rows = chain
    other = tmp_path / "other.ckpt"
    other.write_bytes(b"any file")
    receipt = json.loads(two.with_suffix(".json").read_text())
    receipt["parent"] = {"path": str(other), "sha256": sha256_of(other), "receipt": None}
    checkpoint = load_checkpoint(two)
    checkpoint["one_shui"]["unlearned"] = {k: v for k, v in receipt.items() if k != "output"}
    torch.save(checkpoint, two)
    receipt["output"]["sha256"] = sha256_of(two)
    two.with_suffix(".json").write_text(json.dumps(receipt))
    error = verify(two)
    assert error is not None and "names the original model" in error and "the chain was re-rooted" in error


def test_an_edited_unsigned_field_is_reported_and_a_signed_one_breaks_the_chain(chain, capsys):
    one, two, _ = chain
    edit_receipt(two, lambda r: retyped(r, "/elsewhere/two.ckpt", "output", "path"))
    assert verify(two) is None
    out = capsys.readouterr().out
    assert "unsigned, differs (not a break): " in out and "output.path says /elsewhere/two.ckpt" in out
    assert "chain intact" in out and "unsigned, not checked: each receipt's seconds.total" in out
    edit_receipt(two, lambda r: retyped(r, 0.0, "seconds", "forget"))
    error = verify(two)
    assert error is not None and "two.json was altered after it was written" in error


def test_models_outside_the_chain_and_people_forgotten_before_are_refused(
    prepared, runs, original, chain, tmp_path
):
    one, two, rows = chain
    out = tmp_path / "three.ckpt"
    cases = [
        (write_request(tmp_path, rows[:1]), two, "already forgotten earlier in the chain"),
        (write_request(tmp_path, rows[:1]), runs[2], "no receipt best.json beside it"),
        (write_request(tmp_path, rows[:1]), tmp_path / "nowhere.ckpt", "nowhere.ckpt does not exist"),
    ]
    jit = tmp_path / "jit.ckpt"
    assert forget(method_config(tmp_path), write_request(tmp_path, rows[:1]), *original, "--out", jit) is None
    cases.append((write_request(tmp_path, rows[1:2]), jit, "written by a request of another method"))
    for request, model, message in cases:
        error = forget(prepared, request, "--on", model, "--out", out)
        assert error is not None and message in error, error
        assert not out.exists() and not out.with_suffix(".json").exists()


def ruin(method, support) -> None:
    """A destructive step: the head gives every image the same answer (a ranking of no worth)."""
    with torch.no_grad():
        for param in method.model.network.get_classifier().parameters():
            param.zero_()


def test_the_guard_refuses_a_destructive_step_unless_forced(prepared, request_rows, tmp_path, monkeypatch):
    request, out = write_request(tmp_path, request_rows), tmp_path / "u.ckpt"
    monkeypatch.setattr(MetaUnlearn, "forget", ruin)
    error = forget(prepared, request, "--out", out)
    assert error is not None and "refused by the guard" in error and "--force" in error, error
    assert nothing_written(tmp_path)
    for flags, passed in ((["--force"], False), (["--max-drop", "100", "--max-total-drop", "100"], True)):
        out = tmp_path / f"{flags[-1]}.ckpt"
        assert forget(prepared, request, "--out", out, *flags) is None
        guard = json.loads(out.with_suffix(".json").read_text())["guard"]
        assert guard["passed"] == passed and guard["forced"] == ("--force" in flags)
        assert (
            guard["drop"] == pytest.approx(guard["before"] - guard["after"], abs=1e-3) and guard["drop"] > 0
        )
        assert guard["check_set"]["source"] == "the prepared checkpoint" and guard["metric"] == "mAP"


def test_the_prepared_method_carries_its_check_set(prepared, runs):
    carried = load_prepared(prepared).check_set
    assert carried is not None
    assert torch.equal(carried.images, take_check_set(meta_data(runs[0]), len(carried)).images)


@pytest.mark.parametrize("flags", [[], ["--force"]], ids=["unforced", "forced"])
def test_without_a_check_set_nothing_is_served_even_forced(prepared, request_rows, tmp_path, flags):
    old = load_checkpoint(prepared)
    del old["check_set"]  # prepared before methods carried one
    torch.save(old, tmp_path / "old.ckpt")
    error = forget(
        tmp_path / "old.ckpt", write_request(tmp_path, request_rows), "--out", tmp_path / "u.ckpt", *flags
    )
    assert error is not None and "no check set" in error and "prepare the method again" in error
    assert not (tmp_path / "u.ckpt").exists() and not (tmp_path / "u.json").exists()


@pytest.mark.parametrize("size", [1, 4])
def test_a_check_set_too_small_to_resolve_the_bound_is_refused_even_forced(
    prepared, request_rows, tmp_path, size
):
    """On 1 image the check score is 100 before and after nearly any step: a guard that cannot see a drop
    of its bound is no guard, so nothing is served, --force included."""
    small = load_checkpoint(prepared)
    small["check_set"] = {key: tensor[:size] for key, tensor in small["check_set"].items()}
    torch.save(small, tmp_path / "small.ckpt")
    request, out = write_request(tmp_path, request_rows), tmp_path / "out" / "u.ckpt"
    error = forget(tmp_path / "small.ckpt", request, "--out", out, "--force")
    assert error is not None and "\n" not in error, error
    assert (
        f"the check set of {size} VAL images (the prepared checkpoint) cannot resolve a drop of 5 points"
        in error
    )
    assert "needs at least 55 images" in error and "check_size=55" in error
    assert not (tmp_path / "out").exists()


def test_a_check_set_of_the_wrong_shape_is_one_line_naming_the_file(prepared, request_rows, tmp_path):
    damaged = load_checkpoint(prepared)
    damaged["check_set"]["targets"] = damaged["check_set"]["targets"][:, :3]
    torch.save(damaged, tmp_path / "damaged.ckpt")
    out = tmp_path / "out" / "u.ckpt"
    error = forget(tmp_path / "damaged.ckpt", write_request(tmp_path, request_rows), "--out", out)
    assert error is not None and "\n" not in error, error
    assert f"{tmp_path / 'damaged.ckpt'}: its check set is damaged (its targets have shape (" in error
    assert not (tmp_path / "out").exists()


def test_a_chain_of_small_steps_is_refused_once_its_total_drop_passes_the_bound(
    prepared, request_rows, tmp_path, monkeypatch
):
    """Each request takes the same small step, 3 check points (under --max-drop 5): the first passes;
    the second, 3 points under the model it is served on, is 6 under the original and is refused
    (--max-total-drop 5); a looser bound lets it through, with both figures in its receipt."""
    head = load_prepared(prepared).model.network.get_classifier()
    start = float(head.bias[0])

    def step(method, support):
        with torch.no_grad():
            method.model.network.get_classifier().bias.add_(1.0)

    def score(method):  # 3 points per step taken
        return 90.0 - 3.0 * round(float(method.model.network.get_classifier().bias[0]) - start)

    monkeypatch.setattr(MetaUnlearn, "forget", step)
    monkeypatch.setattr(MetaUnlearn, "check_score", score)
    one, two = tmp_path / "one.ckpt", tmp_path / "two.ckpt"
    assert forget(prepared, write_request(tmp_path, request_rows[:2]), "--out", one) is None
    request = write_request(tmp_path, request_rows[2:])
    error = forget(prepared, request, "--on", one, "--out", two)
    assert error is not None and "refused by the guard" in error, error
    assert "6.00 points under the 90.00 of the original model of its chain (--max-total-drop 5" in error
    assert "this step alone lost 3.00" in error and not two.exists()
    assert forget(prepared, request, "--on", one, "--out", two, "--max-total-drop", "7") is None
    guards = [json.loads(path.with_suffix(".json").read_text())["guard"] for path in (one, two)]
    assert [(g["drop"], g["total_drop"], g["original"]) for g in guards] == [
        (3.0, 3.0, 90.0),
        (3.0, 6.0, 90.0),
    ]
    assert [g["max_total_drop"] for g in guards] == [5.0, 7.0] and all(g["passed"] for g in guards)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-drop", "-1"], "--max-drop -1.0: give a number of points"),
        (["--max-drop", "0"], "--max-drop 0.0: give a number of points, more than 0"),
        (["--max-total-drop", "inf"], "--max-total-drop inf: give a number of points"),
        (["--max-drop", "nan"], "--max-drop nan"),
        (["--data", "configs/data/synthetic.yaml"], "carries its own check set"),
    ],
)
def test_guard_options_that_cannot_work_are_refused(prepared, request_rows, tmp_path, flags, message):
    error = forget(prepared, write_request(tmp_path, request_rows), "--out", tmp_path / "u.ckpt", *flags)
    assert error is not None and message in error, error
    assert nothing_written(tmp_path)


def test_a_method_from_its_config_needs_the_data_of_its_check_set(runs, original, request_rows, tmp_path):
    request, out = write_request(tmp_path, request_rows), tmp_path / "u.ckpt"
    error = forget(method_config(tmp_path), request, "--pretrain-ckpt", runs[1], "--out", out)
    assert error is not None and "give the data config of the model (--data" in error
    error = forget(
        method_config(tmp_path),
        request,
        "--pretrain-ckpt",
        runs[1],
        "--data",
        tmp_path / "no.yaml",
        "--out",
        out,
    )
    assert error is not None and "no.yaml does not exist" in error
    assert nothing_written(tmp_path)


def test_a_chain_of_another_split_is_refused(prepared, chain, tmp_path):
    """A model whose receipts are whole but name another split than the method's (a forged or mixed-up
    chain: the same original model cannot have another split)."""
    one, _, rows = chain
    forged = tmp_path / "forged.ckpt"
    checkpoint = load_checkpoint(one)
    checkpoint["one_shui"]["unlearned"]["split"] = "0" * 64
    torch.save(checkpoint, forged)
    receipt = json.loads(one.with_suffix(".json").read_text())
    receipt.update(split="0" * 64, output={"path": str(forged), "sha256": sha256_of(forged)})
    forged.with_suffix(".json").write_text(json.dumps(receipt))
    out = tmp_path / "u.ckpt"
    error = forget(prepared, write_request(tmp_path, rows[2:3]), "--on", forged, "--out", out)
    assert error is not None and "written by a request of another split" in error, error
    assert not out.exists() and not out.with_suffix(".json").exists()
