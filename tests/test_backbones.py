import huggingface_hub
import pytest
import timm
import torch

from one_shui.models.backbones import PRESETS, WeightsError, create_backbone


def test_cpu_preset_is_a_small_vit_at_any_image_size():
    model = create_backbone("vit_cpu", 40, image_size=32)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 40)
    assert model.patch_embed.num_patches == (32 // PRESETS["vit_cpu"][1]["patch_size"]) ** 2
    assert model.num_features == PRESETS["vit_cpu"][1]["embed_dim"]


def test_image_size_goes_only_to_architectures_with_a_fixed_input():
    resnet = create_backbone("resnet18", 8, image_size=32)  # a ResNet takes any size: no img_size
    assert resnet(torch.randn(2, 3, 32, 32)).shape == (2, 8)


def test_unknown_names_and_presets_with_weights_are_refused():
    with pytest.raises(ValueError, match="unknown backbone 'vit_nonexistent'"):
        create_backbone("vit_nonexistent", 2)
    with pytest.raises(WeightsError, match="preset without ImageNet weights"):
        create_backbone("vit_cpu", 2, pretrained=True)


def test_weights_from_a_local_file_replace_the_head(tmp_path):
    source = timm.create_model("resnet18", num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = create_backbone("resnet18", 5, weights_file=str(path))
    torch.testing.assert_close(model.conv1.weight, source.conv1.weight)
    assert model.fc.out_features == 5


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(WeightsError, match="missing.pth not found"):
        create_backbone("resnet18", 5, weights_file=str(tmp_path / "missing.pth"))


def test_unreachable_hub_says_how_to_work_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsError, match="set weights_file to their path, or set pretrained: false"):
        create_backbone("resnet18", 5, pretrained=True)
