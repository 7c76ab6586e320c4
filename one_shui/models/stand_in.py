"""A stand-in for ImageNet weights on the embedded synthetic data.

The paper starts pretrain and retrain from ImageNet weights, which a 32 px CPU backbone does not have.
Its stand-in: the backbone trained once on a procedural corpus of other people (procedural faces drawn
from another seed, every label what the image shows), cached under ``root`` and reused by every run
that asks for the same stand-in. Pretrain and retrain then start from it, each with a new head, as
they would start from ImageNet weights.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from ..atomic import write_bytes_atomic, write_text_atomic
from ..data.datamodule import build_transform
from ..data.images import read_rgb
from ..data.sources import read_table
from ..data.synthetic import SyntheticSpec, write_synthetic
from ..errors import OutputExistsError, at_least
from ..metrics.utility import task_loss
from .backbones import create_backbone
from .schedule import warmup_cosine

STAND_IN_FORMAT = 2  # 2: the faces redrawn bolder (issue 16)


@dataclass(frozen=True)
class StandIn:
    """The corpus and the recipe of a stand-in backbone; the same fields make the same weights.

    Args:
        root: where the corpus and the weights are cached (a folder under the data root).
        identities, mean_images, seed: the corpus (procedural faces, CelebA-HQ layout, 40 attributes).
        epochs, lr, weight_decay, batch_size: AdamW with one epoch of warm-up, then cosine decay.
    """

    root: str = "data/synthetic/stand_in"
    identities: int = 3000
    mean_images: float = 3.0
    seed: int = 1000
    epochs: int = 15
    lr: float = 2e-3
    weight_decay: float = 0.05
    batch_size: int = 32


def stand_in_weights(stand_in: StandIn, backbone: str, image_size: int, progress: bool = True) -> Path:
    """The weights file of ``backbone`` at ``image_size`` trained on the stand-in corpus: made on first
    use (the corpus written, the backbone trained, the file renamed into place whole), then read."""
    at_least("model.init_args.stand_in", 1, identities=stand_in.identities, epochs=stand_in.epochs)
    folder = Path(stand_in.root)
    weights = folder / f"{backbone}-{image_size}px.safetensors"
    stamp = {"format": STAND_IN_FORMAT, "backbone": backbone, "image_size": image_size, **asdict(stand_in)}
    del stamp["root"]
    stamp_file = weights.with_suffix(".json")
    if weights.is_file():
        found = _read_json(stamp_file)
        if found == stamp:
            return weights
        raise OutputExistsError(
            f"{weights} exists but was not made from this stand-in ({stamp_file}: {found}, asked: {stamp}); "
            "delete it or set model.init_args.stand_in.root to another folder"
        )
    with torch.random.fork_rng():  # the caller's random state is left as it was
        torch.manual_seed(stand_in.seed)
        network = _train(stand_in, backbone, image_size, progress)
    data = save({k: v.contiguous() for k, v in network.state_dict().items()})
    # The stamp first: a crash between the two leaves a stamp without weights, which trains again, never
    # weights without a stamp, which would be refused as another stand-in's.
    write_text_atomic(stamp_file, json.dumps(stamp, indent=1))
    write_bytes_atomic(weights, data)
    return weights


def _train(stand_in: StandIn, backbone: str, image_size: int, progress: bool) -> torch.nn.Module:
    spec = SyntheticSpec(
        seed=stand_in.seed,
        identities=stand_in.identities,
        image_size=image_size,
        mean_images=stand_in.mean_images,
        quirks=0,
        style="faces",
    )
    root = write_synthetic(stand_in.root, "celebahq", spec, progress).parent
    table = read_table("celebahq", root)
    # Decoded once: at the corpus' own size and crop scale 1, the training transform is a flip and
    # nothing else, which the loop applies per image.
    transform, paths = build_transform(image_size, False), [table.path(i) for i in range(len(table))]
    images = torch.stack([transform(read_rgb(path, path)) for path in paths])
    targets = torch.as_tensor(table.targets, dtype=torch.float32)
    generator = torch.Generator().manual_seed(stand_in.seed)
    loader = DataLoader(
        TensorDataset(images, targets), stand_in.batch_size, shuffle=True, generator=generator
    )
    network = create_backbone(backbone, table.num_classes, image_size=image_size)
    optimizer = torch.optim.AdamW(network.parameters(), lr=stand_in.lr, weight_decay=stand_in.weight_decay)
    total = stand_in.epochs * len(loader)
    schedule = warmup_cosine(optimizer, len(loader), total)
    network.train()
    with tqdm(total=total, desc=f"stand-in {backbone}", disable=not progress, unit="step") as bar:
        for _ in range(stand_in.epochs):
            for batch, targets in loader:
                flip = torch.rand(len(batch), generator=generator) < 0.5
                batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
                loss = task_loss("multilabel", network(batch), targets)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return network


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
