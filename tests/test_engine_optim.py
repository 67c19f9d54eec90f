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
    opt = build_optimizer(OptimConfig(name=name, lr=0.1, schedule="paper"), model.parameters())
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
        opt = build_optimizer(OptimConfig(name=name, lr=0.1, implementation=impl), model.parameters())
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
        build_optimizer(OptimConfig(name="rmsprop", implementation="fused"), model.parameters())
    with pytest.raises(ValueError, match="use foreach or auto"):
        load_config("demo", ["optim.name=rmsprop", "optim.implementation=fused"])
