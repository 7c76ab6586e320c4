"""What every run would print and no user needs to read, left out of our runs only: the libraries'
expected warnings (:data:`EXPECTED`) and Lightning's info lines of :data:`LEFT_OUT_INFO`, each with why,
within :func:`quiet`. Anything else still reaches the user."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

# Warnings (message patterns) that every run of ours would repeat, none of them about the user's settings.
EXPECTED = (
    r"Starting from v1\.9\.0, `tensorboardX` has been removed",  # we log to CSV or W&B, not TensorBoard
    r".*isinstance\(treespec, LeafSpec\)",  # Lightning against this torch
    r"Found \d+ module\(s\) in eval mode",  # a method's frozen original model
    r"`LightningModule.configure_optimizers` returned `None`",  # SSD's and PGU's fit: statistics, no steps
    r"The number of training batches \(\d+\) is smaller than the logging interval",  # small data
    r".*no `validation_step`. Skipping val loop",  # a method's fit
    "No positive samples found in target",  # an attribute that none of a person's few photos has
)
# Lightning's info lines (their beginnings) that every run would print, about nothing the user chose.
LEFT_OUT_INFO = (
    "💡 Tip:",  # adverts for Lightning's cloud products, two a run
    "The following callbacks returned in `LightningModule.configure_callbacks`",  # each module's checkpoints
    "Loading `train_dataloader` to estimate number of stepping batches",  # the learning-rate schedule's
)
LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _LeftOut(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LEFT_OUT_INFO)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Within the block: :data:`EXPECTED` warnings ignored and :data:`LEFT_OUT_INFO` lines dropped."""
    left_out, loggers = _LeftOut(), [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    with warnings.catch_warnings():
        for message in EXPECTED:
            warnings.filterwarnings("ignore", message=message)
        for logger in loggers:
            logger.addFilter(left_out)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeFilter(left_out)
