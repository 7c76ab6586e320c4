"""What our runs leave out: the libraries' expected warnings and Lightning's adverts, and nothing else."""

import logging
import os
import re
import subprocess
import sys
import warnings

import pytest
import yaml
from helpers import CONFIGS, tiny_bench
from lightning.pytorch.utilities import rank_zero_info

from one_shui.quiet import EXPECTED, LEFT_OUT_INFO, quiet

# one message of each kind that quiet() leaves out, as the libraries word them
EXPECTED_EXAMPLES = [
    "Starting from v1.9.0, `tensorboardX` has been removed as a dependency",
    "`isinstance(treespec, LeafSpec)` is deprecated",
    "Found 2 module(s) in eval mode at the start of training.",
    "`LightningModule.configure_optimizers` returned `None`, this fit will run with no optimizer",
    "The number of training batches (13) is smaller than the logging interval Trainer(log_every_n_steps=50).",
    "Trainer: no `validation_step`. Skipping val loop.",
    "No positive samples found in target, recall is undefined.",
]


def test_every_expected_warning_has_an_example_and_is_left_out_while_others_reach_the_user():
    assert len(EXPECTED_EXAMPLES) == len(EXPECTED)
    assert all(any(re.match(p, m) for m in EXPECTED_EXAMPLES) for p in EXPECTED)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with quiet():
            for message in EXPECTED_EXAMPLES:
                warnings.warn(message, UserWarning, stacklevel=1)
            warnings.warn("the disk is nearly full", UserWarning, stacklevel=1)
        warnings.warn(EXPECTED_EXAMPLES[0], UserWarning, stacklevel=1)  # outside our runs: untouched
    assert [str(w.message) for w in shown] == ["the disk is nearly full", EXPECTED_EXAMPLES[0]]


def test_lightning_s_adverts_and_notices_are_left_out_and_its_other_lines_kept(caplog):
    with caplog.at_level(logging.INFO), quiet():
        for line in LEFT_OUT_INFO:
            rank_zero_info(f"{line} and so on")
        rank_zero_info("GPU available: False, used: False")
    rank_zero_info("💡 Tip: outside our runs")
    assert caplog.messages == ["GPU available: False, used: False", "💡 Tip: outside our runs"]


# the bench as a user runs it, with JiT's forget raising a warning that nobody expects
TROUBLED_BENCH = """
import sys, warnings
from one_shui.bench.runner import main
from one_shui.methods.jit import JiT
forget = JiT.forget
def troubled(self, *args, **kwargs):
    warnings.warn("a real trouble in forget", UserWarning, stacklevel=1)
    return forget(self, *args, **kwargs)
JiT.forget = troubled
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_a_tiny_bench_prints_no_expected_noise_and_its_first_estimate_is_honest(tmp_path):
    """None of the left-out messages in a bench's output, a real warning still in it; its progress starts
    after the stand-in (made first, with its own progress), so its first estimate of the whole is within
    3x of the time the cells took."""
    config = yaml.safe_load(tiny_bench(tmp_path, seeds=(0,), methods=[("JiT", "jit")]).read_text())
    recipe = yaml.safe_load((CONFIGS / "train/synthetic.yaml").read_text())
    recipe["model"]["init_args"]["stand_in"].update(identities=400, epochs=4)  # seconds, not minutes
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(recipe))
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(config))
    environment = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONWARNINGS": ""}
    ran = subprocess.run(
        [sys.executable, "-c", TROUBLED_BENCH, "--config", "bench.yaml"],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, output[-2000:]
    assert "stand-in vit_cpu" in output and "a real trouble in forget" in output
    for message in [*EXPECTED_EXAMPLES, *LEFT_OUT_INFO]:
        assert message[:40] not in output, message
    bars = re.findall(r"bench tiny:.*?\| *(\d+)/6 \[(\d+):(\d+)<(\d+):(\d+)", output)
    seconds = [(int(done), int(m) * 60 + int(s), int(rm) * 60 + int(rs)) for done, m, s, rm, rs in bars]
    first = next(elapsed + remaining for done, elapsed, remaining in seconds if done == 1)
    took = next(elapsed for done, elapsed, _ in seconds if done == 6)
    assert took / 3 <= first <= 3 * took, (first, took)
