"""Tug of War (ToW): how close an unlearned model's utilities are to those of the retrained model."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

UTILITY_POOLS = ("retain", "forget", "test")  # the pools whose utility ToW compares


def _utility(metrics: Mapping[str, float], which: str, pool: str) -> float:
    """One pool's utility from ``metrics``, checked to be a finite number in [0, 100]."""
    if pool not in metrics:
        raise ValueError(f"tug_of_war: pool {pool!r} is missing from the {which} metrics")
    value = float(metrics[pool])
    if not math.isfinite(value) or not 0.0 <= value <= 100.0:
        raise ValueError(f"tug_of_war: {which} metrics[{pool!r}] = {value!r} is outside [0, 100]")
    return value


def tug_of_war(
    metrics: Mapping[str, float], retrained: Mapping[str, float], pools: Sequence[str] = UTILITY_POOLS
) -> float:
    """ToW = 100 * prod over ``pools`` of (1 - |m - m_retrained| / 100), for utilities m in [0, 100].

    Utilities are macro mAP or accuracy, x100; 100 means the same utilities as the retrained model.
    """
    if isinstance(pools, str) or not pools:
        # A bare string would iterate over its letters, and an empty product would always score 100.
        raise ValueError(f"tug_of_war: pools must be a non-empty sequence of pool names, got {pools!r}")
    gaps = [
        abs(_utility(metrics, "model", pool) - _utility(retrained, "retrained", pool)) / 100.0
        for pool in pools
    ]
    return 100.0 * math.prod(1.0 - gap for gap in gaps)
