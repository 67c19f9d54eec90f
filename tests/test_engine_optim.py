"""Learning-rate schedules and optimisers from the config."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from aadscale.config import FUSED_OPTIMIZERS, OptimConfig, load_config
from aadscale.engine.optim import IMPLEMENTATIONS, build_optimizer, build_scheduler, lr_factor


def test_paper_schedule_decays_by_094_every_two_epochs():
    cfg = OptimConfig(schedule="paper", lr=0.045)
    assert [lr_factor(cfg, s, 100, 1000) for s in (0, 199, 200, 399, 400)] == \
        pytest.approx([1, 1, 0.94, 0.94, 0.94 ** 2])


def test_warmup_cosine_and_step():
    cos = OptimConfig(schedule="cosine", warmup_steps=10)
    assert lr_factor(cos, 0, 10, 100) == pytest.approx(0.1)
    assert lr_factor(cos, 9, 10, 100) == pytest.approx(0.5 * (1 + torch.cos(torch.tensor(0.09 * torch.pi)).item()))
    assert lr_factor(cos, 100, 10, 100) == pytest.approx(0.0, abs=1e-12)
    step = OptimConfig(schedule="step", decay_rate=0.1, decay_epochs=3)
    assert lr_factor(step, 29, 10, 100) == 1 and lr_factor(step, 30, 10, 100) == pytest.approx(0.1)


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW),
                                       ("rmsprop", torch.optim.RMSprop)])
def test_optimisers_and_scheduler_step(name, cls):
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(OptimConfig(name=name, lr=0.1, schedule="paper"), model, 64)
    assert isinstance(opt, cls)
    sched = build_scheduler(opt, OptimConfig(name=name, lr=0.1, schedule="paper"), 1, 10)
    for _ in range(2):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.94)


@pytest.mark.parametrize("name", ["sgd", "adamw", "rmsprop"])
def test_optimiser_implementations_give_the_same_steps(name):
    impls = ["auto", "foreach", "loop"] + (["fused"] if name in FUSED_OPTIMIZERS else [])
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 2, (16,))
    after = {}
    for impl in impls:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 2))
        opt = build_optimizer(OptimConfig(name=name, lr=0.1, implementation=impl), model, 64)
        assert {k: opt.defaults.get(k) for k, v in IMPLEMENTATIONS[impl].items()} == IMPLEMENTATIONS[impl]
        for _ in range(3):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        after[impl] = [p.detach() for p in model.parameters()]
    for impl in impls:
        assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(after[impl], after["loop"])), impl


def test_implementation_choices_and_fused_rmsprop_refused():
    choices = {f.name: f.metadata["choices"] for f in dataclasses.fields(OptimConfig)}["implementation"]
    assert set(choices) == set(IMPLEMENTATIONS)
    model = torch.nn.Linear(3, 2)
    with pytest.raises(ValueError, match="implementation=fused is not available for optim.name='rmsprop'"):
        build_optimizer(OptimConfig(name="rmsprop", implementation="fused"), model, 64)
    with pytest.raises(ValueError, match="use foreach or auto"):
        load_config("demo", ["optim.name=rmsprop", "optim.implementation=fused"])


def _tiny_vit():
    from aadscale import models
    return models.build("timm/vit_tiny_patch16_224", 10, False, model_kwargs={
        "img_size": 32, "depth": 2, "embed_dim": 32, "num_heads": 2})


def test_weight_decay_exclusions_follow_timm():
    model = _tiny_vit()
    opt = build_optimizer(OptimConfig(name="adamw", weight_decay=0.05, no_decay_1d=True), model, 64)
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    names = dict(model.net.named_parameters())
    assert len(decay) == len(names)  # every parameter once
    for name, p in names.items():
        excluded = p.ndim <= 1 or name.endswith(".bias") or name in ("pos_embed", "cls_token")
        assert decay[id(p)] == (0.0 if excluded else 0.05), name
    plain = build_optimizer(OptimConfig(name="adamw", weight_decay=0.05), model, 64)
    assert [g["weight_decay"] for g in plain.param_groups] == [0.05]


def test_layer_decay_scales_each_depth_and_the_schedule_keeps_the_ratios():
    model = _tiny_vit()
    cfg = OptimConfig(name="adamw", lr=1e-3, layer_decay=0.5, schedule="cosine", betas=[0.9, 0.95])
    opt = build_optimizer(cfg, model, 64)
    assert opt.defaults["betas"] == (0.9, 0.95)
    scale = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    net = model.net
    # timm's ViT grouping: embeddings layer 0, block i layer i + 1, head last (depth 2: 4 layers)
    assert scale[id(net.head.weight)] == 1.0
    assert scale[id(net.blocks[1].attn.qkv.weight)] == 0.5
    assert scale[id(net.blocks[0].attn.qkv.weight)] == 0.25
    assert scale[id(net.patch_embed.proj.weight)] == 0.125
    sched = build_scheduler(opt, cfg, 10, 100)
    for _ in range(30):
        opt.step()
        sched.step()
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(1e-3 * g["lr_scale"] * lr_factor(cfg, 30, 10, 100))


def test_learning_rate_per_base_size_scales_with_the_global_batch():
    cfg = OptimConfig(name="sgd", lr=0.1, lr_base_size=512)
    assert build_optimizer(cfg, torch.nn.Linear(3, 2), 1024).param_groups[0]["lr"] == pytest.approx(0.2)
    assert build_optimizer(cfg, torch.nn.Linear(3, 2), 256).param_groups[0]["lr"] == pytest.approx(0.05)
    assert build_optimizer(OptimConfig(name="sgd", lr=0.1), torch.nn.Linear(3, 2), 1024).param_groups[0]["lr"] == 0.1
