"""Fixtures shared by the tests: one tiny pretrain, its retrain and a prepared MetaUnlearn (plain
functions and constants live in helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers import META_UNLEARN, PRETRAIN, RETRAIN, fit_in, method_args, on_data, tiny


def pytest_configure(config):
    """Under pytest-xdist, one thread of torch per worker (and per subprocess it starts): two workers
    that each run torch on every core fight for the cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """A test on a tiny bench (``bench``, ``sequential``) is slow; the one that asks first builds it, and
    may take up to 900 s."""
    for item in items:
        if {"bench", "sequential"} & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.timeout(900))


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
