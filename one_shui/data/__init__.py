"""The 1-SHUI data layer: readers, the synthetic default, splits and the datamodule."""

from .datamodule import IdentityDataModule
from .sources import Table, read_table
from .splits import Split, SplitMismatchError, make_split
from .synthetic import SyntheticSpec, write_synthetic

__all__ = [
    "IdentityDataModule",
    "Split",
    "SplitMismatchError",
    "SyntheticSpec",
    "Table",
    "make_split",
    "read_table",
    "write_synthetic",
]
