"""The check set: a fixed sample of VAL images with their targets, which a forget request never touches
(VAL people are not trained on). A prepared method carries it, so that the guard of `one-shui-forget`
can score a model before and after a request when the data is gone."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torchvision.transforms import v2

from ..errors import UserError
from .datamodule import IdentityDataModule, scale_and_normalize
from .images import IMAGES


class CheckSetError(UserError, ValueError):
    """A check set that cannot be used: damaged, empty, or for another model."""


@dataclass(frozen=True)
class CheckSet:
    """``images``: uint8 (n, 3, size, size), resized as the model is tested; ``targets``: as the pool's."""

    images: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.images)

    def inputs(self) -> torch.Tensor:
        """The images as the model reads them: the test transform's scaling and normalisation."""
        return scale_and_normalize()(self.images)

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256(self.images.contiguous().numpy().tobytes())
        digest.update(self.targets.contiguous().numpy().tobytes())
        return digest.hexdigest()

    def to_record(self) -> dict[str, torch.Tensor]:
        return {"images": self.images, "targets": self.targets}

    @classmethod
    def from_record(cls, record: object, image_size: int, source: str) -> CheckSet:
        """The check set a checkpoint carries; refused unless whole and fit for a model of ``image_size``."""
        images = record.get("images") if isinstance(record, dict) else None
        targets = record.get("targets") if isinstance(record, dict) else None
        shape = (3, image_size, image_size)
        whole = (
            isinstance(images, torch.Tensor)
            and isinstance(targets, torch.Tensor)
            and images.dtype == torch.uint8
            and images.dim() == 4
            and tuple(images.shape[1:]) == shape
            and 0 < len(images) == len(targets)
        )
        if not whole:
            raise CheckSetError(
                f"{source}: its check set is damaged (not uint8 images of {shape} with targets)"
            )
        return cls(images, targets)


def take_check_set(data: IdentityDataModule, size: int) -> CheckSet:
    """``size`` VAL images (all of VAL when it has fewer), drawn with the split's seed: the same for every
    run on this split."""
    data.setup()
    val = data.rows["val"]
    if not val:
        raise CheckSetError(f"{data.name}: VAL is empty; the check set is drawn from it")
    generator = torch.Generator().manual_seed(data.split.seed)
    chosen = sorted(val[i] for i in torch.randperm(len(val), generator=generator)[:size].tolist())
    side = data.hparams.image_size
    resize = v2.Compose([v2.Resize((side, side), antialias=True), v2.ToImage()])  # uint8, as tested
    images = [IMAGES(data.table.path(row), ("resized", side), resize) for row in chosen]
    return CheckSet(torch.stack(images).as_subclass(torch.Tensor), data.row_labels[1][chosen])
