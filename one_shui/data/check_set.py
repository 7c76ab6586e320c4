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
    def from_record(cls, record: object, model: dict, source: str) -> CheckSet:
        """The check set a checkpoint carries; refused, in one line saying what is wrong, unless whole and
        fit for the ``model`` of these hyperparameters (image_size, task, num_classes)."""
        images = record.get("images") if isinstance(record, dict) else None
        targets = record.get("targets") if isinstance(record, dict) else None
        wrong = _wrong_images(images, model["image_size"]) or _wrong_targets(
            targets, len(images), model["task"], model["num_classes"]
        )
        if wrong:
            raise CheckSetError(f"{source}: its check set is damaged ({wrong}); prepare the method again")
        return cls(images, targets)


def _wrong_images(images: object, image_size: int) -> str | None:
    """What is wrong with a check set's images, if anything."""
    shape = (3, image_size, image_size)
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        return f"its images are not a uint8 tensor but {type(images).__name__} {getattr(images, 'dtype', '')}"
    if images.dim() != 4 or tuple(images.shape[1:]) != shape or not len(images):
        return (
            f"its images have shape {tuple(images.shape)}, not (n, {', '.join(map(str, shape))}) with n > 0"
        )
    return None


def _wrong_targets(targets: object, count: int, task: str, num_classes: int) -> str | None:
    """What is wrong with a check set's targets for ``count`` images of a ``task`` model, if anything."""
    shape = (count, num_classes) if task == "multilabel" else (count,)
    if not isinstance(targets, torch.Tensor) or targets.is_complex():
        return f"its targets are {type(targets).__name__}, not a tensor"
    if tuple(targets.shape) != shape:
        return f"its targets have shape {tuple(targets.shape)}, not {shape} for {count} {task} images"
    allowed = (
        (targets == 0) | (targets == 1) if task == "multilabel" else (targets >= 0) & (targets < num_classes)
    )
    if targets.is_floating_point() and task != "multilabel" or not bool(allowed.all()):
        expected = "0 or 1" if task == "multilabel" else f"whole classes in 0..{num_classes - 1}"
        return f"its targets hold values other than {expected}"
    return None


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
