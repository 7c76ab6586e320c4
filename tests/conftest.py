"""Fixtures shared by the unlearning tests: one tiny pretrain, its retrain and a prepared MetaUnlearn."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli import CONFIGS, DATA, PRETRAIN, QUIET, RETRAIN, tiny

from one_shui.cli import OneShuiCLI
from one_shui.data import IdentityDataModule, SyntheticSpec
from one_shui.data.report import data_parser

META_UNLEARN = CONFIGS / "methods" / "meta_unlearn.yaml"
# The synthetic data of the tiny runs: the shipped config's spec at 40 people, as tiny() makes it.
TINY_SPEC = SyntheticSpec(
    **{**vars(data_parser().parse_args(["--config", str(DATA)]).data.init_args.synthetic), "identities": 40}
)


def pytest_collection_modifyitems(items):
    """The tiny bench takes minutes to build, in whichever test asks for it first: those get 900 s."""
    for item in items:
        if "bench" in item.fixturenames:
            item.add_marker(pytest.mark.timeout(900))


def on_data(config: Path) -> list[str]:
    """A method config stacked on the synthetic data's, as every method run is."""
    return ["--config", str(DATA), "--config", str(config)]


def method_args(root: Path, run: str, epochs: int = 1) -> list[str]:
    """Overrides that point a method run on the synthetic data at the tiny runs of :func:`runs`, for a
    few seconds."""
    return [
        *("--data.init_args.synthetic.identities", "40", "--data.init_args.request_size", "3"),
        f"--model.init_args.pretrain_ckpt={root / 'pre/checkpoints/best.ckpt'}",
        f"--model.init_args.retrain_ckpt={root / 're/checkpoints/best.ckpt'}",
        *("--trainer.max_epochs", str(epochs), "--trainer.limit_train_batches", "2"),
        f"--trainer.default_root_dir={root / run}",
        *QUIET,
    ]


def fit_in(root: Path, *args: str) -> None:
    """`one-shui fit <args>` run in ``root``, with its own audit cache and without W&B."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        patch.setenv("WANDB_MODE", "disabled")
        OneShuiCLI(["fit", *args])


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """A tiny pretrain and its retrain on the synthetic data: (folder, pretrain ckpt, retrain ckpt)."""
    root = tmp_path_factory.mktemp("runs")
    fit_in(root, *PRETRAIN, *tiny("pre"))
    fit_in(root, *RETRAIN, *tiny("re"), "--data.init_args.split_file", "pre/checkpoints/split.json")
    return root, root / "pre/checkpoints/best.ckpt", root / "re/checkpoints/best.ckpt"


@pytest.fixture(scope="session")
def prepared(runs) -> Path:
    """A MetaUnlearn meta-trained through `one-shui fit` on the tiny runs: its checkpoint."""
    root = runs[0]
    fit_in(root, *on_data(META_UNLEARN), *method_args(root, "mu"), "--model.init_args.hidden=32")
    return root / "mu/checkpoints/last.ckpt"


def meta_data(root: Path, **options) -> IdentityDataModule:
    """The tiny runs' data, bound to their split."""
    return IdentityDataModule(
        "celebahq",
        str(root / "data/synthetic"),
        request_size=3,
        synthetic=TINY_SPEC,
        image_size=32,
        batch_size=16,
        split_file=str(root / "pre/checkpoints/split.json"),
        cache_dir=str(root / "cache"),
        **options,
    )
