from pathlib import Path

import pytest

from one_shui.data.report import main
from one_shui.data.splits import Split

CONFIG = Path(__file__).parents[1] / "configs" / "data" / "synthetic.yaml"


@pytest.mark.parametrize("config", ["synthetic.yaml", "synthetic_mufac.yaml"])
def test_split_command_prints_summary_and_saves_split(tmp_path, capsys, config):
    out = tmp_path / "split.json"
    main(
        [
            "--config",
            str(CONFIG.with_name(config)),
            "--data.init_args.root",
            str(tmp_path / "data"),
            "--data.init_args.synthetic.identities",
            "40",
            "--data.init_args.request_size",
            "3",
            "--data.init_args.cache_dir",
            str(tmp_path),
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    split = Split.load(out)
    assert len(split.forget) == 3
    for pool in ("train", "retain", "forget", "support", "val", "test"):
        assert f"\n{pool} " in printed
    for identity, image in split.support.items():
        assert f"{identity}: " in printed and image in printed
    assert split.fingerprint[:16] in printed


def test_split_command_saves_into_the_run_layout_by_default(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["--config", str(CONFIG), "--data.init_args.synthetic.identities=40"]
    main([*args, "--data.init_args.request_size=3", f"--data.init_args.cache_dir={tmp_path}"])
    split = Split.load(tmp_path / "outputs/synthetic_celebahq/N3-seed0/split.json")
    assert split.fingerprint[:16] in capsys.readouterr().out
