"""Reading an image as the models see it: decoded whole, in 8-bit RGB. 16-bit and 32-bit integer images
are rescaled by their bit depth and float images from [0, 1] (or [0, 255]); an image that cannot be read
so (damaged, too large to be safe, values out of any range) is an :class:`ImageError` naming the file."""

from __future__ import annotations

import io
import os

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from ..errors import UserError

INTEGER_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}  # what PIL gives high-bit-depth grey images
RESIZED_BYTES = 2**30  # the memory that :data:`RESIZED` may hold


class ImageError(UserError, ValueError):
    """An image cannot be decoded or converted, or leads outside the data root."""


def read_rgb(source: str | os.PathLike | bytes, name: str | os.PathLike) -> Image.Image:
    """The image in ``source`` (a file, or its bytes) decoded whole, in 8-bit RGB; ``name`` is how errors
    name it."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            image.load()  # decode every byte now: a truncated file fails here, not in an epoch hours later
            return to_rgb(image, name)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        if isinstance(err, ImageError):
            raise
        raise ImageError(f"{name}: not a readable image ({type(err).__name__}: {err})") from None


def to_rgb(image: Image.Image, name: str | os.PathLike) -> Image.Image:
    """``image`` in 8-bit RGB, its values rescaled when it has more than 8 bits (see the module docstring)."""
    if image.mode not in INTEGER_MODES and image.mode != "F":
        return image.convert("RGB")
    values = np.asarray(image, dtype=np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not (np.isfinite(values).all() and low >= 0):
        raise ImageError(
            f"{name}: a {image.mode} image with negative or non-finite values; save it as 8-bit RGB"
        )
    # I;16 is 16-bit whatever its values; I (32-bit) and F (float) say their range by their values
    ranges = {"F": (1.0, 255.0), "I": (255.0, 65535.0)}.get(image.mode, (65535.0,))
    top = next((limit for limit in ranges if high <= limit), None)
    if top is None:
        raise ImageError(
            f"{name}: a {image.mode} image with values up to {high:g}, beyond {ranges[-1]:g}; "
            "save it as 8-bit RGB"
        )
    grey = np.rint(values * (255.0 / top)).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")  # 2-D uint8: PIL mode L


class ResizedImages:
    """Images as the model is tested on them before scaling: decoded, resized to ``side`` x ``side`` and
    made uint8 tensors (3, side, side), kept in memory by file (its path, modification time and size) up
    to ``budget`` bytes; beyond it, images are decoded each time they are read. So the cells of a bench,
    which build their loaders anew in one process, and the points of a strength curve decode an evaluated
    image once. :attr:`decoded` counts the decodings."""

    def __init__(self, budget: int):
        self.budget, self.held, self.decoded = budget, 0, 0
        self.kept: dict[tuple, torch.Tensor] = {}
        self.resize: dict[int, v2.Compose] = {}

    def __call__(self, path: str | os.PathLike, side: int) -> torch.Tensor:
        stat = os.stat(path)
        key = (os.fspath(path), side, stat.st_mtime_ns, stat.st_size)
        image = self.kept.get(key)
        if image is None:
            if side not in self.resize:
                self.resize[side] = v2.Compose([v2.Resize((side, side), antialias=True), v2.ToImage()])
            image = self.resize[side](read_rgb(path, path)).as_subclass(torch.Tensor)
            self.decoded += 1
            if self.held + image.nbytes <= self.budget:
                self.kept[key] = image
                self.held += image.nbytes
        return image

    def clear(self) -> None:
        self.kept.clear()
        self.held = 0


RESIZED = ResizedImages(RESIZED_BYTES)  # the process's: shared by every datamodule and check set
