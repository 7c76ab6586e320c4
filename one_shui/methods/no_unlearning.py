"""NoUnlearning: the Pretrain row of every table, the original model evaluated as it is."""

from __future__ import annotations

from .base import Batch, UnlearningMethod


class NoUnlearning(UnlearningMethod):
    """Forgets nothing: the reference that every method's ToW and MIA must improve on."""

    reads_targets = False

    @property
    def updated_parameters(self) -> tuple[str, ...]:
        return ()

    def forget(self, support: Batch) -> None:
        """Leave the original model unchanged."""
