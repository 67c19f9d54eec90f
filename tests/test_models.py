"""Every registered model: pixel input, normalisation first, a CAM layer, gradients everywhere."""
from __future__ import annotations

import pytest
import torch

from aadscale import models
from aadscale.attention import find_layer

SIZES = {"inception_v3": 80, "resnet50": 64, "resnet18": 64}


@pytest.mark.parametrize("name", models.list_models())
def test_every_model_builds_and_trains(name):
    torch.manual_seed(0)
    in_ch = 1 if name.startswith("lenet") else 3
    model = models.build(name, 7, in_channels=in_ch)
    size = SIZES.get(name, 32)
    x = torch.rand(2, in_ch, size, size)
    model.train()
    logits = model(x)
    assert logits.shape == (2, 7)
    find_layer(model, model.cam_layer)  # the attention layer exists
    logits.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"


def test_normalisation_is_the_first_layer():
    model = models.build("resnet9_small", 10).eval()
    x = torch.rand(3, 3, 32, 32)
    mean = torch.tensor(models.normalize.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(models.normalize.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), model.net((x - mean) / std), atol=1e-6)


def test_pretrained_from_local_path_roundtrip(tmp_path):
    torch.manual_seed(0)
    a = models.build("resnet9_small", 5)
    path = tmp_path / "w.pt"
    torch.save(a.state_dict(), path)
    b = models.build("resnet9_small", 5, pretrained=str(path))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


def test_pretrained_mismatch_and_missing(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(models.build("resnet9_small", 5).state_dict(), path)
    with pytest.raises(ValueError, match="does not fit"):
        models.build("resnet9_small", 7, pretrained=str(path))
    with pytest.raises(ValueError, match="not found"):
        models.build("resnet9_small", 5, pretrained=str(tmp_path / "nope.pt"))
    with pytest.raises(ValueError, match="no torchvision weights"):
        models.build("resnet9_small", 5, pretrained=True)


def test_unknown_model_and_bad_class_count():
    with pytest.raises(ValueError, match="unknown model 'resnet51'.*resnet50"):
        models.build("resnet51", 10)
    with pytest.raises(ValueError, match="num_classes"):
        models.build("resnet9_small", 1)
