"""timm models (ConvNeXt, ViT, Swin at test size): Grad-CAM layer per family, AAD gradients everywhere,
the fused step, weights from local files, the hub path offline, errors that say what to fix."""
from __future__ import annotations

import pytest
import torch

from aadscale import attacks, models, objectives
from aadscale.attention import capture, grad_cam
from aadscale.fused import pgd_with_cams
from aadscale.models import TokenGrid, eval_mode
from tests.conftest import TINY_TIMM

VIT, SWIN, CONVNEXT = "timm/vit_small_patch16_224", "timm/swin_tiny_patch4_window7_224", "timm/convnext_tiny"
CAM_LAYERS = {CONVNEXT: "net.stages.3", VIT: "net.aad_cam", SWIN: "net.aad_cam"}
MEANS = {CONVNEXT: models.normalize.IMAGENET_MEAN, VIT: (0.5, 0.5, 0.5), SWIN: models.normalize.IMAGENET_MEAN}
EPS = 8 / 255


def tiny(name: str, num_classes: int = 5, **kwargs) -> models.PixelModel:
    torch.manual_seed(0)
    return models.build(name, num_classes, model_kwargs=TINY_TIMM[name], **kwargs)


def plain_timm(name: str, model: models.PixelModel, **kwargs):
    """The same network straight from timm (no TokenGrid), with the model's weights."""
    import timm
    net = timm.create_model(name.removeprefix("timm/"), num_classes=model.num_classes,
                            **dict(TINY_TIMM[name], **kwargs))
    net.load_state_dict(model.net.state_dict())
    return net.eval()


@pytest.fixture
def batch():
    torch.manual_seed(1)
    return torch.rand(4, 3, 32, 32), torch.randint(0, 5, (4,))


@pytest.mark.parametrize("name", list(TINY_TIMM))
def test_aad_trains_every_parameter_of_a_tiny_timm_model(name, batch):
    x, y = batch
    model = tiny(name)
    assert model.cam_layer == CAM_LAYERS[name]
    assert torch.allclose(model.normalize.mean.flatten(), torch.tensor(MEANS[name]))
    with eval_mode(model), torch.no_grad():  # the grid detour leaves the network's function as it was
        torch.testing.assert_close(model(x), plain_timm(name, model)(model.normalize(x)))
    cam = grad_cam(model.eval(), x, y)
    assert cam.shape == (4, 4, 4) and cam.max() > 0
    model.train()
    x_adv = attacks.pgd(model, x, y, eps=EPS, steps=2)
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    out = objectives.build_objective("madry+aad", lambda1=0.5, lambda2=0.5)(model, x, y, x_adv)
    assert out["rect"] < 0 and out["pres"] > 0
    out["loss"].backward()  # the preservation term's double backward runs through the grid
    dead = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
            or p.grad.abs().sum() == 0]
    assert not dead, f"no gradient reached {dead[:5]}"


@pytest.mark.parametrize("name", list(TINY_TIMM))
def test_fused_eager_step_equals_pgd_and_grad_cam(name, batch):
    x, y = batch
    model = tiny(name).train()
    out = pgd_with_cams(model, x, y, eps=EPS, alpha=attacks.default_alpha(EPS, 2), steps=2,
                        generator=torch.Generator().manual_seed(5))
    ref = attacks.pgd(model, x, y, eps=EPS, steps=2, keep_best=False, generator=torch.Generator().manual_seed(5))
    assert torch.equal(out.x_adv, ref)
    with eval_mode(model):
        assert torch.equal(out.cam_adv, grad_cam(model, ref, y))
    assert model.training


def test_vit_grid_is_the_last_attention_input_without_prefix_tokens(batch):
    x, y = batch
    model = tiny(VIT)
    last = model.net.blocks[-1]
    with capture(model, "net.blocks.1.norm1") as tokens, capture(model) as grid, torch.no_grad():
        model.eval()(x)
    assert tokens.output.shape == (4, 1 + 16, 32)  # the class token, then a 4x4 patch grid
    expected = tokens.output[:, 1:].reshape(4, 4, 4, 32).permute(0, 3, 1, 2)  # row by row
    assert torch.equal(grid.output, expected)
    assert last.attn.fused_attn is False  # after the Grad-CAM layer: explicit softmax (double backward)
    assert model.net.blocks[0].attn.fused_attn is True  # before it: torch's fused kernel
    # the last block's output, which class-token pooling never reads back: its Grad-CAM is zero
    at_output = models.build(VIT, 5, model_kwargs=TINY_TIMM[VIT], cam_layer="blocks.1")
    at_output.load_state_dict(model.state_dict())
    assert grad_cam(at_output.eval(), x, y).abs().max() == 0 and grad_cam(model, x, y).max() > 0


def test_fused_attention_after_the_cam_layer_has_no_double_backward(batch):
    x, y = batch
    model = tiny(VIT).train()
    model.net.blocks[-1].attn.fused_attn = True  # what timm would run without unfuse_attention_after
    with pytest.raises(RuntimeError, match="derivative for .*scaled_dot_product.* is not implemented"):
        objectives.aad(model, x, y, x.clone())["loss"].backward()


def test_swin_grid_is_the_last_stage_in_nchw(batch):
    x, _ = batch
    model = tiny(SWIN)
    with capture(model, "net.layers.1") as stage, capture(model) as grid, torch.no_grad():
        model.eval()(x)
    assert stage.output.shape == (4, 4, 4, 32)  # NHWC
    assert torch.equal(grid.output, stage.output.permute(0, 3, 1, 2))


def test_token_grid_refuses_tokens_that_are_not_a_grid():
    assert TokenGrid("tokens", prefix=1)(torch.rand(2, 1 + 9, 8)).shape == (2, 8, 3, 3)  # any square
    with pytest.raises(ValueError, match="do not form a square grid"):
        TokenGrid("tokens", prefix=1)(torch.rand(2, 1 + 12, 8))
    with pytest.raises(ValueError, match="not 1 prefix tokens \\+ the 4x4 patch grid"):
        TokenGrid("tokens", prefix=1, grid_size=(4, 4))(torch.rand(2, 1 + 9, 8))


def test_pretrained_from_local_timm_files(tmp_path, batch):
    import safetensors.torch
    x, _ = batch
    source = plain_timm(VIT, tiny(VIT, num_classes=1000))  # a 1000-class timm checkpoint
    safetensors.torch.save_file(source.state_dict(), tmp_path / "model.safetensors")
    torch.save(source.state_dict(), tmp_path / "pytorch_model.bin")
    for path in ("model.safetensors", "pytorch_model.bin"):
        model = models.build(VIT, 1000, pretrained=str(tmp_path / path), model_kwargs=TINY_TIMM[VIT]).eval()
        with torch.no_grad():
            torch.testing.assert_close(model(x), source(model.normalize(x)))
    # 10 classes at 48 px: timm's loader drops the head and resamples the position embeddings
    kwargs = dict(TINY_TIMM[VIT], img_size=48)
    model = models.build(VIT, 10, pretrained=str(tmp_path / "model.safetensors"), model_kwargs=kwargs)
    assert torch.equal(model.net.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert model.net.pos_embed.shape == (1, 1 + 36, 32) and model.net.head.weight.shape == (10, 32)
    assert grad_cam(model.eval(), torch.rand(2, 3, 48, 48)).shape == (2, 6, 6)
    # aadscale's own state_dict comes back exactly
    torch.save(model.state_dict(), tmp_path / "own.pt")
    again = models.build(VIT, 10, pretrained=str(tmp_path / "own.pt"), model_kwargs=kwargs)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match="do not fit timm/vit_small_patch16_224"):
        models.build(VIT, 10, pretrained=str(tmp_path / "own.pt"), model_kwargs=dict(kwargs, embed_dim=64))
    with pytest.raises(ValueError, match="not found"):
        models.build(VIT, 10, pretrained=str(tmp_path / "nope.safetensors"), model_kwargs=kwargs)


def test_hub_weights_offline_say_what_to_do(tmp_path, monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # no request leaves the machine
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="could not be fetched from the hub.*model.pretrained=<file>"):
        models.build(VIT, 5, pretrained="timm", model_kwargs=TINY_TIMM[VIT])


@pytest.mark.parametrize("name, kwargs, message", [
    ("timm/vit_smal_patch16_224", {}, "unknown timm model 'vit_smal_patch16_224'; did you mean vit_small_patch16_224"),
    ("torch/resnet50", {}, "unknown model 'torch/resnet50'; model families: timm/<name>"),
    (VIT, {"num_classes": 3}, "model.kwargs.num_classes is set by model.num_classes"),
    (VIT, {"depth": 2, "no_such_arg": 1}, "timm.create_model.*failed.*no_such_arg.*check model.kwargs"),
    ("resnet9_small", {"depth": 2}, "model 'resnet9_small' takes none"),
])
def test_bad_names_and_kwargs(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        models.build(name, 5, model_kwargs=kwargs)


def test_bad_cam_layer():
    with pytest.raises(ValueError, match="model.cam_layer='blocks.9' is not a module of VisionTransformer"):
        models.build(VIT, 5, model_kwargs=TINY_TIMM[VIT], cam_layer="blocks.9")
    with pytest.raises(ValueError, match="model.cam_layer='layer9' is not a module of resnet9_small"):
        models.build("resnet9_small", 5, cam_layer="layer9")
    assert models.build("resnet9_small", 5, cam_layer="layer2").cam_layer == "net.layer2"
