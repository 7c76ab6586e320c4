"""Reading an image as the models see it: decoded whole, in 8-bit RGB. 16-bit and 32-bit integer images
are rescaled by their bit depth and float images from [0, 1] (or [0, 255]); an image that cannot be read
so (damaged, too large to be safe, values out of any range) is an :class:`ImageError` naming the file."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Hashable

import numpy as np
import torch
from PIL import Image

from ..errors import UserError

INTEGER_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}  # what PIL gives high-bit-depth grey images
MEMORY_BYTES = 2**30  # the memory that :data:`IMAGES` may hold


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


class ImageMemory:
    """Image files read once per process: each file's decoded image (:func:`read_rgb`) and the views made
    of it (e.g. the test transform's tensor), kept in memory by file (its path, modification time and
    size) and view, up to ``budget`` bytes in all; beyond it, what does not fit is made again each time.
    So the cells of a bench, which build their datamodules anew in one process, the epochs of a fit and
    the points of a strength curve decode an image once and apply a deterministic transform to it once.
    :attr:`decoded` counts the decodings."""

    def __init__(self, budget: int):
        self.budget, self.held, self.decoded = budget, 0, 0
        self.kept: dict[tuple, Image.Image | torch.Tensor] = {}

    def __call__(
        self,
        path: str | os.PathLike,
        view: Hashable = None,
        make: Callable[[Image.Image], torch.Tensor] | None = None,
    ) -> Image.Image | torch.Tensor:
        """The file's decoded image (``view`` None), or ``make`` of it, the view named ``view`` (a
        deterministic function of the image alone: the same view, the same ``make``)."""
        stat = os.stat(path)
        file = (os.fspath(path), stat.st_mtime_ns, stat.st_size)
        if view is None:
            return self._kept((*file, None), lambda: self._decode(path))
        return self._kept((*file, view), lambda: make(self(path)))

    def _decode(self, path: str | os.PathLike) -> Image.Image:
        self.decoded += 1
        return read_rgb(path, path)

    def _kept(self, key: tuple, make: Callable[[], Image.Image | torch.Tensor]):
        value = self.kept.get(key)
        if value is None:
            value = make()
            size = (
                value.nbytes
                if isinstance(value, torch.Tensor)
                else len(value.getbands()) * value.width * value.height
            )
            if self.held + size <= self.budget:
                self.kept[key] = value
                self.held += size
        return value

    def clear(self) -> None:
        self.kept.clear()
        self.held = 0


IMAGES = ImageMemory(MEMORY_BYTES)  # the process's: shared by every datamodule and check set
