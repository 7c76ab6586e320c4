"""Nothing escapes its folder: temporary files created exclusively and never followed, output names of
one component, cell records and checkpoints refused before they are trusted, and one convention of
exit status and message for every command."""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path

import pytest
import torch

from one_shui import atomic, layout
from one_shui.atomic import UnsafeOutputError, held, publish, temporary, write_text_atomic
from one_shui.bench import cells
from one_shui.bench.runner import main as bench_main
from one_shui.checkpoints import CheckpointError, load_checkpoint, read_checkpoint
from one_shui.cli import main as one_shui_main
from one_shui.data.report import main as split_main
from one_shui.errors import SettingError
from one_shui.forget import main as forget_main
from one_shui.receipts import main as verify_main


def planted_names(monkeypatch, *names: str) -> None:
    """The names tempfile draws for a temporary file, in this order: the test knows the very name the
    code will try first."""
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: iter(names))


def plant(link: Path, victim: Path) -> None:
    link.symlink_to(victim)


@pytest.fixture
def victim(tmp_path) -> Path:
    """A file outside the output folder that a hostile link points at."""
    path = tmp_path / "victim.txt"
    path.write_text("not yours")
    return path


def test_an_atomic_write_never_writes_through_a_link_at_its_temporary_name(tmp_path, victim, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    plant(out / f".record.json.{os.getpid()}.tmp", victim)  # the name a pid-named temporary file would have
    plant(out / ".record.json.planted.tmp", victim)  # the very name drawn first
    planted_names(monkeypatch, "planted", "free")
    write_text_atomic(out / "record.json", "{}")
    assert victim.read_text() == "not yours"
    assert (out / "record.json").read_text() == "{}" and not (out / "record.json").is_symlink()
    assert (out / "record.json").stat().st_mode & 0o777 == 0o666 & ~atomic.UMASK  # not mkstemp's private 0600
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".record.json.planted.tmp", f".record.json.{os.getpid()}.tmp", "record.json"]
    )  # the planted links left as they were, nothing of ours left beside them


def test_a_temporary_file_replaced_by_a_link_is_never_published(tmp_path, victim):
    out = tmp_path / "model.ckpt"
    with temporary(out) as (file, tmp), pytest.raises(UnsafeOutputError, match="was replaced"):
        file.write(b"weights")
        tmp.unlink()
        plant(tmp, victim)  # someone swapped the name for a link while it was written
        publish(file, tmp, out)
    assert not os.path.lexists(out) and victim.read_text() == "not yours"


def test_a_link_where_a_lock_file_belongs_is_refused_and_not_followed(tmp_path):
    lock, target = tmp_path / ".lock", tmp_path / "made-by-the-lock"
    plant(lock, target)
    with pytest.raises(UnsafeOutputError, match="a link where a lock file belongs"), held(lock, lambda: None):
        pass
    assert not target.exists()


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "..", "", "x\0y", "a\\b"])
def test_a_bench_name_is_one_folder_name(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    config = str(Path(__file__).parents[1] / "configs/bench/synthetic.yaml")
    with pytest.raises(SystemExit) as exit:
        bench_main(["--config", config, "--name", name, "--out", str(tmp_path / "out")])
    assert str(exit.value.code).startswith("one-shui-bench: bench name") and "\n" not in exit.value.code
    assert list(tmp_path.iterdir()) == []


def test_a_bench_out_under_a_link_to_nowhere_is_refused_before_any_cell(tmp_path):
    (tmp_path / "out").symlink_to(tmp_path / "nowhere")
    config = str(Path(__file__).parents[1] / "configs/bench/synthetic.yaml")
    with pytest.raises(SystemExit) as exit:
        bench_main(["--config", config, "--out", str(tmp_path / "out/benches")])
    assert "out is a link that leads nowhere, not a folder" in exit.value.code and "\n" not in exit.value.code
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("dataset", ["../../etc", "x/y"])
def test_a_run_folder_never_leaves_the_layout(dataset):
    """A dataset or run name read from a checkpoint's record names one folder, or is refused."""
    with pytest.raises(SettingError, match="must be one folder name"):
        layout.run_dir(dataset, 20, 0, layout.PRETRAIN)
    with pytest.raises(SettingError, match="must be one folder name"):
        layout.run_dir("celebahq", 20, 0, dataset)


@pytest.mark.parametrize("what", ["a file", "a link that leads nowhere"])
def test_an_output_folder_that_cannot_be_one_is_found_before_any_work(tmp_path, what):
    blocking = tmp_path / "blocking"
    if what == "a file":
        blocking.write_text("a file")
    else:
        plant(blocking, tmp_path / "nowhere")
    with pytest.raises(UnsafeOutputError, match=f"{blocking} is {what}, not a folder"):
        atomic.writable_folder(blocking / "deeper", "--out x")
    assert atomic.writable_folder(tmp_path / "new" / "deeper", "--out x") == tmp_path / "new" / "deeper"


@pytest.mark.parametrize(
    ("content", "message"),
    [("[1, 2]", "holds a JSON list, not a record"), ('"done"', "holds a JSON str"), ("{}", "has no split")],
)
def test_a_cell_record_that_is_not_a_record_is_said_and_the_cell_runs_again(
    tmp_path, capsys, content, message
):
    folder = tmp_path / "JiT-0123"
    folder.mkdir()
    (folder / cells.RECORD).write_text(content)
    cell = cells.Cell(0, "row", "JiT", "configs/methods/jit.yaml")
    assert cells.reusable(cell, folder) is None
    said = capsys.readouterr().err.strip()
    assert said.startswith("JiT, seed 0: its finished run") and message in said and "running it again" in said
    assert str(folder / cells.RECORD) in said and not (folder / cells.RECORD).exists()


def zip_bomb(path: Path, inflated: int = 200 << 20) -> Path:
    """A zip archive of one deflated member that inflates to ``inflated`` bytes (from a few hundred kB)."""
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open("archive/data.pkl", "w", force_zip64=True) as member,
    ):
        for _ in range(inflated >> 20):
            member.write(bytes(1 << 20))
    return path


def test_a_zip_bomb_checkpoint_is_refused_before_anything_is_inflated(tmp_path, monkeypatch):
    bomb = zip_bomb(tmp_path / "bomb.ckpt")
    assert bomb.stat().st_size < 1 << 20
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("the archive was handed to torch.load"))
    for read in (load_checkpoint, read_checkpoint):
        with pytest.raises(CheckpointError, match=r"archive/data.pkl is compressed\); nothing inflated"):
            read(bomb)


def test_an_archive_that_declares_more_than_it_holds_is_refused(tmp_path):
    buffer = io.BytesIO()
    torch.save({"a": torch.zeros(8)}, buffer)
    data = bytearray(buffer.getvalue())
    first = data.find(b"PK\x01\x02")  # the central directory's entry of the first member
    data[first + 24 : first + 28] = (1 << 31).to_bytes(4, "little")  # its size once inflated: 2 GiB
    (tmp_path / "big.ckpt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"declare [\d,]+ bytes in a file of"):
        load_checkpoint(tmp_path / "big.ckpt")


COMMANDS = {
    "one-shui": one_shui_main,
    "one-shui-bench": bench_main,
    "one-shui-forget": forget_main,
    "one-shui-verify": verify_main,
    "one-shui-split": split_main,
}


def exit_of(command: str, args: list[str]) -> SystemExit:
    with pytest.raises(SystemExit) as exit:
        COMMANDS[command](args)
    return exit.value


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_says_a_user_error_in_one_line_with_status_1(command, tmp_path, capsys):
    """The convention of every command: a user error, a command line that does not parse included, is
    one line ``<command>: <what>`` on stderr and exit status 1 (a string exit code); --help is status 0."""
    subcommand = ["fit"] if command == "one-shui" else []
    absent = {
        "one-shui-forget": [tmp_path / "absent.ckpt", tmp_path / "absent.csv"],
        "one-shui-verify": [tmp_path / "absent.ckpt"],
    }.get(command, ["--config", tmp_path / "absent.yaml"])
    for args in (["--no-such-option"], absent):
        code = exit_of(command, [*subcommand, *map(str, args)]).code
        assert isinstance(code, str) and code.startswith(f"{command}: ") and "\n" not in code, code
    assert exit_of(command, [*subcommand, "--help"]).code in (0, None)
    capsys.readouterr()


def test_a_guard_option_that_is_not_a_number_follows_the_convention(tmp_path):
    code = exit_of("one-shui-forget", ["m.ckpt", "r.csv", "--max-drop", "lots"]).code
    assert code.startswith("one-shui-forget: argument --max-drop: invalid float value: 'lots'")
    assert "\n" not in code and code.endswith("see one-shui-forget --help")
