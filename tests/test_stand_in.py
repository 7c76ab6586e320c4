import json

import pytest
import torch
from safetensors.torch import load_file

from one_shui.checkpoints import RECORD_FORMAT, RECORD_KEY
from one_shui.errors import OutputExistsError, SettingError
from one_shui.methods.classifier import Classifier
from one_shui.models import stand_in as stand_in_module
from one_shui.models.stand_in import StandIn, stand_in_weights


def tiny(root, **changes) -> StandIn:
    return StandIn(root=str(root), **{"identities": 6, "mean_images": 2.0, "epochs": 1, **changes})


def test_the_stand_in_is_trained_once_deterministically_and_leaves_the_callers_random_state(tmp_path):
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first = stand_in_weights(tiny(tmp_path / "a"), "vit_cpu", 16, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    second = stand_in_weights(tiny(tmp_path / "b"), "vit_cpu", 16, progress=False)
    assert first.name == "vit_cpu-16px.safetensors"
    assert (tmp_path / "a" / "CelebAMask-HQ").is_dir()  # the corpus, cached beside the weights
    a, b = load_file(first), load_file(second)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    untrained = Classifier("vit_cpu", 40, pretrained=False, image_size=16).network.state_dict()
    assert not torch.equal(a["blocks.0.attn.qkv.weight"], untrained["blocks.0.attn.qkv.weight"])
    assert json.loads(first.with_suffix(".json").read_text())["identities"] == 6


def test_a_cached_stand_in_is_read_not_retrained_and_another_recipe_is_refused(tmp_path, monkeypatch):
    path = stand_in_weights(tiny(tmp_path), "vit_cpu", 16, progress=False)
    monkeypatch.setattr(stand_in_module, "_train", lambda *args: pytest.fail("trained again"))
    assert stand_in_weights(tiny(tmp_path), "vit_cpu", 16, progress=False) == path
    with pytest.raises(OutputExistsError, match="stand_in.root to another folder"):
        stand_in_weights(tiny(tmp_path, epochs=2), "vit_cpu", 16, progress=False)


def test_a_classifier_starts_from_the_stand_in_with_a_new_head_and_its_checkpoint_needs_none(tmp_path):
    stand_in = tiny(tmp_path / "stand_in")
    model = Classifier("vit_cpu", 8, "classification", pretrained=False, stand_in=stand_in, image_size=16)
    weights = load_file(stand_in_weights(stand_in, "vit_cpu", 16))
    torch.testing.assert_close(model.network.patch_embed.proj.weight, weights["patch_embed.proj.weight"])
    assert model.network.head.out_features == 8 and weights["head.weight"].shape[0] == 40
    assert model.hparams.stand_in["identities"] == 6  # a plain dict: checkpoints load with weights_only

    record = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    record[RECORD_KEY] = {"format": RECORD_FORMAT, "backbone": "vit_cpu"}
    for path in tmp_path.joinpath("stand_in").iterdir():  # the cache is gone: the checkpoint has it all
        if path.is_file():
            path.unlink()
    restored = Classifier.from_record(record, "memory")
    torch.testing.assert_close(restored.network.head.weight, model.network.head.weight)
    assert not any(p.suffix == ".safetensors" for p in tmp_path.joinpath("stand_in").iterdir())


def test_a_stand_in_with_imagenet_weights_is_refused(tmp_path):
    with pytest.raises(SettingError, match="stand_in replaces ImageNet weights"):
        Classifier("vit_cpu", 40, pretrained=True, stand_in=tiny(tmp_path), image_size=16)
