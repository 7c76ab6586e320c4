"""The one user-error type: every entry point shows a user error as one line that names the thing and the
fix, with exit status 1 and no traceback; a bug keeps its traceback."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import CONFIGS, DATA, PRETRAIN, QUIET, STAND_IN, fit_in, on_data, tiny
from layouts import write_celebahq

from one_shui.bench.runner import main as bench_main
from one_shui.cli import main as cli_main
from one_shui.data.report import main as split_main
from one_shui.errors import SettingError, UserError, exit_on_user_error, user_error
from one_shui.forget import main as forget_main

SMALL = ["--data.init_args.synthetic.identities=40", "--data.init_args.request_size=3", *QUIET]


def one_line(entry, args: list[str], prog: str) -> str:
    """The message ``entry`` exits with: one line, prefixed by the command's name."""
    with pytest.raises(SystemExit) as exit:
        entry([str(arg) for arg in args])
    message = exit.value.code
    assert isinstance(message, str) and message.startswith(f"{prog}: "), message
    assert "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def resnet(runs) -> Path:
    """A tiny pretrain of a convolutional backbone (no ViT blocks) on the data of the tiny runs."""
    fit_in(runs[0], *PRETRAIN, *tiny("resnet"), "--model.init_args.backbone=resnet18")
    return runs[0] / "resnet/checkpoints/best.ckpt"


def on(config: str) -> list[str]:
    return on_data(CONFIGS / "methods" / config)


# Each case: `one-shui` arguments ({pretrain}, {resnet} and {root} name the tiny runs) and a fragment of
# the one line it must end with.
METHOD = ["--model.init_args.pretrain_ckpt={pretrain}", "--trainer.default_root_dir={root}/x"]
CLI_CASES = {
    "request larger than the eligible people": (
        ["fit", *PRETRAIN, *SMALL, "--data.init_args.request_size=30"], "set data.request_size to at most"
    ),
    "request size 0": (["fit", *PRETRAIN, *SMALL, "--data.init_args.request_size=0"], "at least 1"),
    "negative request size": (["fit", *PRETRAIN, *SMALL, "--data.init_args.request_size=-3"], "at least 1"),
    "unknown backbone": (
        ["fit", *PRETRAIN, *SMALL, "--model.init_args.backbone=vit_nonexistent"],
        "unknown backbone 'vit_nonexistent'",
    ),
    "last_blocks on a non-ViT": (
        ["fit", *on("meta_unlearn.yaml"), *SMALL, *METHOD, "--model.init_args.pretrain_ckpt={resnet}",
         "--model.init_args.update=last_blocks"],
        "update: last_blocks needs a ViT",
    ),
    "SSD tested without its fit": (["test", *on("ssd.yaml"), *SMALL, *METHOD], "SSD has no statistics"),
    "PGU tested without its fit": (["test", *on("pgu.yaml"), *SMALL, *METHOD], "PGU has no input statistics"),
    "a fit of a method with nothing to prepare": (
        ["fit", *on("jit.yaml"), *SMALL, *METHOD], "JiT has nothing to prepare"
    ),
    "no pretrain in the run layout": (
        ["fit", *on("ssd.yaml"), *SMALL, "--data.init_args.seed=7"],
        "SSD unlearns the pretrained model: set model.init_args.pretrain_ckpt, or run the pretrain",
    ),
    "a checkpoint as the split file": (
        ["fit", *PRETRAIN, *SMALL, "--data.init_args.split_file={pretrain}"], "is not a split JSON"
    ),
    "unknown dataset": (
        ["fit", *PRETRAIN, *SMALL, "--data.init_args.synthetic=null", "--data.init_args.dataset=imagenet"],
        "unknown dataset 'imagenet'",
    ),
    "no meta-loss input": (
        ["fit", *on("meta_unlearn.yaml"), *SMALL, *METHOD, "--model.init_args.parts=[]"],
        "at least one input part",
    ),
    "negative batch size": (
        ["fit", *PRETRAIN, *SMALL, "--data.init_args.batch_size=-3"],
        "data.init_args.batch_size must be a finite number, at least 1, not -3",
    ),
    "negative learning rate": (
        ["fit", *PRETRAIN, *SMALL, "--model.init_args.lr=-1"],
        "model.init_args.lr must be a finite number, at least 0",
    ),
    "negative max_epochs": (["fit", *PRETRAIN, *SMALL, "--trainer.max_epochs=-5"], "`max_epochs` must be"),
    "another dataset's checkpoint": (
        ["test", "--config", str(CONFIGS / "data/synthetic_mufac.yaml"), "--config",
         str(CONFIGS / "train/synthetic.yaml"), *STAND_IN, *SMALL, "--ckpt_path={pretrain}"],
        "the checkpoint was made with dataset 'celebahq'",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", CLI_CASES)
def test_one_shui_user_errors_are_one_line(case, runs, resnet, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(runs[0] / "cache"))
    args, fragment = CLI_CASES[case]
    paths = {"pretrain": runs[1], "resnet": resnet, "root": runs[0]}
    assert fragment in one_line(cli_main, [arg.format(**paths) for arg in args], "one-shui")


def test_other_entry_points_user_errors_are_one_line(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(runs[0] / "cache"))
    bench = tmp_path / "bench.yaml"
    bench.write_text(f"name: b\ndata: {DATA}\ntrain: absent.yaml\nmethods: []\n")
    assert "train config absent.yaml does not exist" in one_line(
        bench_main, ["--config", bench], "one-shui-bench"
    )
    bench.write_text(f"name: b\ndata: {DATA}\ntrain: {DATA}\nmethods: []\nrequest_sise: 3\n")
    assert "request_sise" in one_line(bench_main, ["--config", bench], "one-shui-bench")
    split = ["--config", DATA, *SMALL[:1], "--data.init_args.request_size=30"]
    assert "set data.request_size" in one_line(split_main, split, "one-shui-split")
    missing = one_line(forget_main, [runs[1], tmp_path / "absent.csv"], "one-shui-forget")
    assert "request" in missing and "absent.csv does not exist" in missing


@pytest.mark.parametrize(
    ("damage", "message"),
    [("two identities", "0.jpg is given two identities"), ("no identity", "have no identity")],
)
def test_an_image_with_two_identities_or_none_is_one_line(tmp_path, damage, message):
    write_celebahq(tmp_path / "celebahq", {str(i): 3 for i in range(12)})
    identity_file = tmp_path / "celebahq/CelebAMask-HQ/CelebA-HQ-identity.txt"
    lines = identity_file.read_text().splitlines()
    lines = [*lines, "0.jpg 99"] if damage == "two identities" else lines[1:]
    identity_file.write_text("\n".join(lines) + "\n")
    args = ["--config", CONFIGS / "data/celebahq.yaml", f"--data.init_args.root={tmp_path / 'celebahq'}"]
    error = one_line(
        split_main,
        [*args, "--data.init_args.request_size=2", f"--data.init_args.cache_dir={tmp_path}"],
        "one-shui-split",
    )
    assert message in error


def test_a_split_of_a_missing_dataset_names_the_folder_and_shows_the_layout(tmp_path):
    """The one user error of more than one line: the layout it expected, under the line that names what is
    missing (the README promises it)."""
    args = ["--config", CONFIGS / "data/celebahq.yaml", f"--data.init_args.root={tmp_path / 'none'}"]
    with pytest.raises(SystemExit) as exit:
        split_main([str(arg) for arg in args])
    first, *layout = str(exit.value.code).splitlines()
    assert first.startswith(f"one-shui-split: missing folder {tmp_path / 'none'}")
    assert layout[0] == "Expected layout of celebahq:"


def test_a_full_or_read_only_file_system_is_a_user_error_wherever_it_is_met():
    for code, text in ((errno.ENOSPC, "No space left on device"), (errno.EROFS, "Read-only file system")):
        wrapped = RuntimeError("while saving a checkpoint")
        wrapped.__cause__ = OSError(code, text, "outputs/run/checkpoints/last.ckpt")
        found = user_error(wrapped)
        assert isinstance(found, UserError) and text in str(found) and "last.ckpt" in str(found)
    assert user_error(OSError(errno.ENOENT, "No such file or directory")) is None  # not the file system's


def test_a_user_error_is_found_behind_the_errors_that_wrap_it_and_a_bug_keeps_its_traceback():
    def wrapped():
        try:
            raise SettingError("bad value: set x")
        except SettingError as err:
            raise RuntimeError("while instantiating") from err

    with pytest.raises(SystemExit) as exit:
        exit_on_user_error("prog", wrapped)
    assert exit.value.code == "prog: bad value: set x"
    with pytest.raises(KeyError):
        exit_on_user_error("prog", lambda: {}["bug"])
    assert issubclass(SettingError, UserError)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "args", "fragment"),
    [
        (
            "one-shui",
            ["fit", *PRETRAIN, *SMALL, "--model.init_args.backbone=nope"],
            "unknown backbone 'nope'",
        ),
        ("one-shui-bench", ["--config", "absent.yaml"], "absent.yaml"),
        ("one-shui-forget", ["m.ckpt", "absent.csv"], "request absent.csv does not exist"),
        ("one-shui-split", ["--config", DATA, *SMALL[:1], "--data.init_args.request_size=0"], "at least 1"),
    ],
)
def test_each_command_exits_1_with_one_line_and_no_traceback(command, args, fragment, tmp_path):
    done = subprocess.run(
        [str(Path(sys.executable).with_name(command)), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path), "WANDB_MODE": "disabled"},
        timeout=300,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{command}: ") and fragment in last
