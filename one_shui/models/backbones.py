"""Backbones: timm models by name, with ImageNet weights from the hub or from a local file."""

from __future__ import annotations

from pathlib import Path

import timm
from torch import nn

from ..errors import SettingError, UserError

# Small configurations of timm architectures: name -> (timm architecture, its overrides).
PRESETS: dict[str, tuple[str, dict]] = {
    # A ViT sized for CPU runs on the 32 px synthetic data: 16 patches of 8 px, 4 blocks of width 128.
    "vit_cpu": (
        "vit_tiny_patch16_224",
        dict(patch_size=8, embed_dim=128, depth=4, num_heads=4, mlp_ratio=2.0),
    ),
}


class WeightsError(UserError, RuntimeError):
    """Pretrained weights were asked for and cannot be had."""


def create_backbone(
    name: str,
    num_classes: int,
    *,
    pretrained: bool = False,
    weights_file: str | None = None,
    image_size: int | None = None,
    **kwargs,
) -> nn.Module:
    """A timm model with a new ``num_classes`` head.

    Args:
        name: a timm model name (``vit_base_patch16_224``, ``resnet18``, ...) or one of :data:`PRESETS`.
        pretrained: start from ImageNet weights, fetched by timm from the Hugging Face hub.
        weights_file: start from the weights in this local file instead (for machines without internet,
            or a stand-in's, :mod:`one_shui.models.stand_in`); the head is always new.
        image_size: input side for architectures with a fixed input size (ViTs); the position
            embedding of pretrained weights is resampled to it.
        kwargs: further timm model arguments.
    """
    arch, overrides = PRESETS.get(name, (name, {}))
    if not timm.is_model(arch):
        raise SettingError(
            f"unknown backbone {name!r}: not a timm model name nor one of {sorted(PRESETS)}; set "
            "model.init_args.backbone to one (timm.list_models() lists the names)"
        )
    if pretrained and name in PRESETS:
        raise WeightsError(
            f"backbone {name!r} is a one_shui preset without ImageNet weights; set pretrained: false "
            "(a weights_file or a stand_in gives it weights)"
        )
    options = {**overrides, **kwargs}
    if image_size is not None and timm.models.get_pretrained_cfg(arch).fixed_input_size:
        options["img_size"] = image_size
    if weights_file is not None:
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"weights file {path} not found; download the weights of {arch} and give their path"
            )
        options["pretrained_cfg_overlay"] = dict(file=str(path))
    try:
        return timm.create_model(
            arch, pretrained=pretrained or weights_file is not None, num_classes=num_classes, **options
        )
    except OSError as err:  # the hub cannot be reached, or the file cannot be read
        source = weights_file or "the Hugging Face hub"
        raise WeightsError(
            f"cannot load ImageNet weights of {arch} from {source} ({err}); on a machine without internet, "
            f"download them elsewhere and set weights_file to their path, or set pretrained: false"
        ) from err
