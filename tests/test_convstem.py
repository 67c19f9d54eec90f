"""model.stem=convstem: Singh, Croce & Hein's ConvStem in timm ConvNeXt and ViT, with the key names and
layers of their checkpoints (nmndeep/revisiting-at utils_architecture.py, RobustBench's copy in
robustbench/model_zoo/architectures/convstem_models.py)."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from aadscale import attacks, models, objectives
from aadscale.attention import grad_cam
from aadscale.config import Config, to_dict
from aadscale.errors import InputError
from aadscale.evaluate.loading import load_model
from aadscale.models import load_state, read_weights, timm_models
from aadscale.models.convstem import ConvStem, use_convstem
from aadscale.models.zoo import zoo_weights

CONVNEXT, VIT = "timm/convnext_tiny", "timm/vit_small_patch16_224"
TINY = {CONVNEXT: {"depths": [1, 1, 1, 1], "dims": [16, 32, 64, 128]},
        VIT: {"depth": 1, "embed_dim": 64, "num_heads": 2, "img_size": 64}}
WIDE_CONVNEXT = {"depths": [1, 1, 1, 1], "dims": [128, 16, 16, 16]}  # stage-0 width of ConvNeXt-B

# Their blocks as (key prefix, conv widths, conv strides, width of the final 1x1 conv): every block is
# ``self.stem = nn.Sequential(Conv2d(k=3, padding=1), LayerNorm(channels_first), GELU, ...)``.
# get_convstem_models: ``model.stem = ConvBlock1(48)`` (ConvNeXt-T/S), ``ConvBlock3(64)`` (B),
# ``ConvBlock3(96)`` (L), ``model.patch_embed.proj = ConvBlock(48, end_siz=8)`` (ViT-S, on deit_small),
# ``ConvBlock(48, end_siz=16, fin_dim=None)`` (ViT-B).
CONVBLOCK1_48 = ("stem.stem", (48, 96), (2, 2), None)
THEIRS = {
    "convnext_tiny": CONVBLOCK1_48,
    "convnext_small": CONVBLOCK1_48,
    "convnext_base": ("stem.stem", (64, 96, 128), (2, 2, 1), None),
    "convnext_large": ("stem.stem", (96, 144, 192), (2, 2, 1), None),
    "deit_small_patch16_224": ("patch_embed.proj.stem", (48, 96, 192, 384), (2, 2, 2, 2), 384),
    "vit_base_patch16_224": ("patch_embed.proj.stem", (48, 96, 192, 384), (2, 2, 2, 2), 768),
}
# the same blocks at test size: ConvBlock1(8), ConvBlock3(64), ConvBlock(48) with a 1x1 conv to 64
TINY_THEIRS = {
    CONVNEXT: ("stem.stem", (8, 16), (2, 2), None),
    VIT: ("patch_embed.proj.stem", (48, 96, 192, 384), (2, 2, 2, 2), 64),
}


def their_shapes(block: tuple) -> dict[str, tuple[int, ...]]:
    """Key -> shape of their block's parameters (Conv2d, LayerNorm, GELU per stage: indices 3n, 3n+1)."""
    prefix, widths, _, final = block
    shapes, channels = {}, 3
    for n, width in enumerate(widths):
        shapes |= {f"{prefix}.{3 * n}.weight": (width, channels, 3, 3), f"{prefix}.{3 * n}.bias": (width,),
                   f"{prefix}.{3 * n + 1}.weight": (width,), f"{prefix}.{3 * n + 1}.bias": (width,)}
        channels = width
    if final:
        last = f"{prefix}.{3 * len(widths)}"
        shapes |= {f"{last}.weight": (final, channels, 1, 1), f"{last}.bias": (final,)}
    return shapes


def their_stem(x: torch.Tensor, state: dict, block: tuple) -> torch.Tensor:
    """Their block's forward on ``state``, with their channels-first LayerNorm written out as they do."""
    prefix, widths, strides, final = block
    for n, stride in enumerate(strides):
        x = F.conv2d(x, state[f"{prefix}.{3 * n}.weight"], state[f"{prefix}.{3 * n}.bias"], stride, 1)
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + 1e-6)
        x = F.gelu(state[f"{prefix}.{3 * n + 1}.weight"][:, None, None] * x
                   + state[f"{prefix}.{3 * n + 1}.bias"][:, None, None])
    if final:
        last = f"{prefix}.{3 * len(widths)}"
        x = F.conv2d(x, state[f"{last}.weight"], state[f"{last}.bias"])
    return x


def stem_module(block: tuple) -> str:
    return block[0].removesuffix(".stem")


def tiny(name: str, stem: str = "convstem", kwargs: dict | None = None, **extra) -> models.PixelModel:
    torch.manual_seed(0)
    return models.build(name, 5, model_kwargs=kwargs or TINY[name], stem=stem, **extra)


@pytest.fixture
def batch():
    torch.manual_seed(1)
    return torch.rand(2, 3, 64, 64), torch.randint(0, 5, (2,))


@pytest.mark.parametrize("arch", list(THEIRS))
def test_full_size_models_have_their_stem_keys_and_shapes(arch):
    import timm
    block = THEIRS[arch]
    with torch.device("meta"):  # shapes only: nothing allocated, nothing initialised
        patch = timm.create_model(arch)
        net = timm.create_model(arch)
        assert use_convstem(net, 3, arch) == stem_module(block)
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    stem = {k: v for k, v in ours.items() if k.startswith(stem_module(block) + ".")}
    assert stem == their_shapes(block)
    rest = {k: tuple(v.shape) for k, v in patch.state_dict().items() if not k.startswith(stem_module(block) + ".")}
    assert {k: v for k, v in ours.items() if k not in stem} == rest


@pytest.mark.parametrize("name, kwargs, layout", [(CONVNEXT, TINY[CONVNEXT], (2, 2)),
                                                  (CONVNEXT, WIDE_CONVNEXT, (2, 2, 1)),
                                                  (VIT, TINY[VIT], (2, 2, 2, 2))])
def test_convstem_keeps_the_feature_grid_and_grad_cam(name, kwargs, layout, batch):
    x, y = batch
    patch, conv = tiny(name, "patch", kwargs), tiny(name, "convstem", kwargs)
    stem = conv.net.get_submodule("stem" if name == CONVNEXT else "patch_embed.proj")
    assert isinstance(stem, ConvStem)
    assert tuple(m.stride[0] for m in stem.stem if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)) \
        == layout
    assert conv.cam_layer == patch.cam_layer
    with torch.no_grad():
        assert conv.net.forward_features(conv.normalize(x)).shape == \
            patch.net.forward_features(patch.normalize(x)).shape
        assert conv(x).shape == patch(x).shape == (2, 5)
    assert grad_cam(conv.eval(), x, y).shape == grad_cam(patch.eval(), x, y).shape


@pytest.mark.parametrize("name", list(TINY))
def test_aad_gradients_reach_the_stem(name, batch):
    x, y = batch
    model = tiny(name).train()
    x_adv = attacks.pgd(model, x, y, eps=4 / 255, steps=1)
    out = objectives.build_objective("madry+aad", lambda1=0.5, lambda2=0.5)(model, x, y, x_adv)
    out["loss"].backward()
    stem = [(n, p) for n, p in model.named_parameters() if ".stem." in n]
    assert stem and all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
                        for _, p in stem)


def released(name: str) -> tuple[dict, tuple]:
    """A state dict laid out as their checkpoints: timm's keys for everything but the stem, their block's
    keys and shapes for the stem (random values)."""
    import timm
    block = TINY_THEIRS[name]
    torch.manual_seed(2)
    timm_net = timm.create_model(name.removeprefix("timm/"), num_classes=5, **TINY[name])
    state = {k: v for k, v in timm_net.state_dict().items() if not k.startswith(stem_module(block) + ".")}
    state |= {k: torch.randn(shape) for k, shape in their_shapes(block).items()}
    return state, block


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("layout", ["bare", "module", "model", "base_model"])
def test_their_checkpoint_loads_strictly_through_the_zoo_path(name, layout, tmp_path, batch):
    state, block = released(name)
    # the prefixes RobustBench's load_model strips from their files (robustbench/utils.py: 'module.', 'model.'),
    # and their training script's DDP-wrapped WrappedModel (revisiting-at main.py: 'module.base_model.')
    wrapped = {"bare": state, "module": {"state_dict": {f"module.{k}": v for k, v in state.items()}},
               "model": {f"model.{k}": v for k, v in state.items()},
               "base_model": {f"module.base_model.{k}": v for k, v in state.items()}}[layout]
    torch.save(wrapped, tmp_path / "released.pt")
    zoo = zoo_weights(read_weights(tmp_path / "released.pt"), "released.pt")
    model = tiny(name, mean=zoo.mean, std=zoo.std)
    load_state(model, zoo.state, "released.pt")
    x = model.normalize(batch[0])
    with torch.no_grad():  # float32 rounding of two LayerNorm algorithms through four convs
        torch.testing.assert_close(model.net.get_submodule(stem_module(block))(x), their_stem(x, state, block),
                                   rtol=1e-4, atol=1e-4)


def test_engine_export_with_convstem_loads_from_its_config(tmp_path, batch):
    cfg = Config()
    cfg.model.name, cfg.model.num_classes, cfg.model.kwargs, cfg.model.stem = VIT, 5, TINY[VIT], "convstem"
    model = models.build_from_config(cfg.model).eval()
    torch.save({"model": model.state_dict(), "config": to_dict(cfg)}, tmp_path / "export.pt")
    loaded = load_model(tmp_path / "export.pt")
    assert isinstance(loaded.model.net.patch_embed.proj, ConvStem)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(batch[0]), model(batch[0]))


def test_pretrained_weights_with_convstem(tmp_path, monkeypatch, caplog, batch):
    source = tiny(CONVNEXT).eval()
    torch.save(source.net.state_dict(), tmp_path / "convstem.pt")
    again = tiny(CONVNEXT, pretrained=str(tmp_path / "convstem.pt")).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(batch[0]), source(batch[0]))
    torch.save(tiny(CONVNEXT, "patch").net.state_dict(), tmp_path / "patch.pt")
    with pytest.raises(InputError, match="does not fit the model"):
        tiny(CONVNEXT, pretrained=str(tmp_path / "patch.pt"))
    monkeypatch.setattr(timm_models, "pretrained_args", lambda *args: {})  # the hub, offline
    with caplog.at_level(logging.WARNING, logger="aadscale.models"):
        tiny(CONVNEXT, pretrained="timm")
    assert "timm's weights everywhere but stem, now the ConvStem, which starts from random weights" in caplog.text


@pytest.mark.parametrize("name, kwargs, message", [
    ("timm/resnet18", {"layers": [1, 1, 1, 1]},
     r"model.stem=convstem is for timm ConvNeXt and ViT models, got timm/resnet18"),
    ("resnet9_small", None, r"model.stem=convstem is for timm ConvNeXt and ViT models, got resnet9_small"),
    (VIT, dict(TINY[VIT], patch_size=8), r"stride 16, .* has stride \(8, 8\); set model.kwargs.patch_size=16"),
])
def test_convstem_refuses_other_models(name, kwargs, message):
    with pytest.raises(InputError, match=message):
        models.build(name, 5, model_kwargs=kwargs, stem="convstem")


def test_weights_without_normalisation_load_as_raw_pixel_models(tmp_path):
    net = models.build("resnet9_small", 10).net
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "raw.pt")
    loaded = load_model(tmp_path / "raw.pt", model_name="resnet9_small", num_classes=10, normalization="none")
    assert loaded.model.normalize.mean.flatten().tolist() == [0.0] * 3
    assert loaded.model.normalize.std.flatten().tolist() == [1.0] * 3
    with_stats = {**net.state_dict(), "normalize.mean": torch.zeros(3), "normalize.std": torch.ones(3)}
    torch.save(with_stats, tmp_path / "stats.pt")
    with pytest.raises(ValueError, match="drop --normalization none"):
        load_model(tmp_path / "stats.pt", model_name="resnet9_small", num_classes=10, normalization="none")
