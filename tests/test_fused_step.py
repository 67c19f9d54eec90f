"""The fused adversarial step: eager path equal to the reference attack and Grad-CAM, mode choice, shapes."""
from __future__ import annotations

import logging

import pytest
import torch

from aadscale import attacks, models
from aadscale.attacks.ascent import run_attack
from aadscale.attacks.standard import ce_objective
from aadscale.attention import grad_cam
from aadscale.config import AttackConfig
from aadscale.engine.step import EagerTrainingAttack, build_training_attack
from aadscale.fused import AdversarialStep, pgd_with_cams, resolve_mode
from aadscale.fused import adversarial_step as step_module
from aadscale.models import eval_mode
from aadscale.precision import autocast_dtype

EPS = 8 / 255


@pytest.fixture
def batch():
    torch.manual_seed(0)
    model = models.build("resnet9_small", 10)
    x = torch.rand(6, 3, 32, 32)
    x[0] = 0.0  # the pixel box must bind
    return model, x, torch.randint(0, 10, (6,))


def reference(model, x, y, steps, seed):
    """attacks.pgd as the engine calls it, and grad_cam of x and x_adv in eval mode."""
    x_adv = attacks.pgd(model, x, y, eps=EPS, steps=steps, keep_best=False,
                        generator=torch.Generator().manual_seed(seed))
    with eval_mode(model):
        return x_adv, grad_cam(model, x, y), grad_cam(model, x_adv, y)


@pytest.mark.parametrize("steps", [1, 3])
def test_eager_function_equals_reference_pgd_and_grad_cam(batch, steps):
    model, x, y = batch
    model.train()
    ref_adv, ref_clean_cam, ref_adv_cam = reference(model, x, y, steps, seed=5)
    out = pgd_with_cams(model, x, y, eps=EPS, alpha=attacks.default_alpha(EPS, steps), steps=steps,
                        generator=torch.Generator().manual_seed(5))
    assert torch.equal(out.x_adv, ref_adv)
    assert torch.equal(out.cam_clean, ref_clean_cam)
    assert torch.equal(out.cam_adv, ref_adv_cam)
    assert model.training and all(m.training for m in model.modules())  # mode restored
    assert (out.x_adv - x).abs().max() <= EPS + 1e-6 and not torch.equal(out.x_adv, x)
    assert out.x_adv.min() >= 0 and out.x_adv.max() <= 1
    assert out.cam_clean.shape == (6, 4, 4) and out.cam_clean.max() > 0


REFERENCE = {  # the public attacks the engine's training attacks must equal, last iterate
    "pgd": lambda m, x, y, g: attacks.pgd(m, x, y, eps=EPS, steps=3, keep_best=False, generator=g),
    "fgsm_rs": lambda m, x, y, g: attacks.fgsm(m, x, y, eps=EPS, alpha=1.25 * EPS, random_start=True, generator=g),
}


@pytest.mark.parametrize("name,steps", [("pgd", 3), ("fgsm_rs", 1)])
def test_step_from_config_equals_engine_training_attack(batch, name, steps):
    model, x, y = batch
    cfg = AttackConfig(name=name, eps=EPS, steps=steps)
    g_ref, g_fused = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    step = build_training_attack(model, cfg, mode="eager")
    assert isinstance(step, AdversarialStep)
    for _ in range(2):  # the generator advances identically from call to call
        assert torch.equal(step(x, y, g_fused).x_adv, REFERENCE[name](model, x, y, g_ref))
    assert torch.equal(g_ref.get_state(), g_fused.get_state())
    assert step(x, y, g_fused).cam_clean is None  # the engine's step skips the maps


def test_smaller_last_batch(batch):
    model, x, y = batch
    step = AdversarialStep(model, eps=EPS, steps=2, mode="auto")
    for n in (6, 4):
        out = step(x[:n], y[:n], torch.Generator().manual_seed(n))
        ref_adv, _, ref_cam = reference(model, x[:n], y[:n], 2, seed=n)
        assert out.x_adv.shape == (n, 3, 32, 32)
        assert torch.equal(out.x_adv, ref_adv) and torch.equal(out.cam_adv, ref_cam)


def test_mode_choice_on_cpu(batch, caplog):
    model, _, _ = batch
    with caplog.at_level(logging.INFO, logger="aadscale.fused"):
        assert AdversarialStep(model, eps=EPS, steps=1, mode="auto").mode == "eager"
    assert "mode eager (asked auto)" in caplog.text
    with pytest.raises(ValueError, match="'graph' records CUDA graphs but the model is on cpu"):
        AdversarialStep(model, eps=EPS, steps=1, mode="graph")
    with pytest.raises(ValueError, match="must be one of"):
        AdversarialStep(model, eps=EPS, steps=1, mode="fast")


def test_resolve_mode_rules():
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert resolve_mode("auto", cuda) == "graph"
    assert resolve_mode("auto", cpu) == "eager"
    assert resolve_mode("auto", cuda, zero3=True) == "eager"
    assert resolve_mode("compile", cpu) == "compile"
    with pytest.raises(ValueError, match="ZeRO-3"):
        resolve_mode("graph", cuda, zero3=True)


def test_bad_inputs_are_refused(batch):
    model, x, y = batch
    step = AdversarialStep(model, eps=EPS, steps=1)
    with pytest.raises(ValueError, match=r"pixel values must be in \[0, 1\]"):
        step(x * 2 + 0.5, y)
    with pytest.raises(ValueError, match="steps=0"):
        AdversarialStep(model, eps=EPS, steps=0)
    with pytest.raises(ValueError, match="other_shapes"):
        AdversarialStep(model, eps=EPS, steps=1, other_shapes="pad")


def test_pixel_range_checked_at_once_on_the_first_call_then_at_check_pixels(batch):
    model, x, y = batch
    step = AdversarialStep(model, eps=EPS, steps=1)
    with pytest.raises(ValueError, match=r"pixel values must be in \[0, 1\]"):
        step(x * 2 + 0.5, y)  # the first call checks before any work
    step(x, y)
    step.check_pixels()  # in range so far
    assert step(x * 2 + 0.5, y).x_adv.shape == x.shape  # later calls do not sync: recorded only
    with pytest.raises(ValueError, match=r"got \[0.000, 2.500\]"):  # the range over every batch since
        step.check_pixels()
    nan = x.clone()
    nan[1, 0, 0, 0] = float("nan")
    step = AdversarialStep(model, eps=EPS, steps=1)
    step(x, y)
    step(nan, y)
    with pytest.raises(ValueError, match="pixel values must be in"):
        step.check_pixels()


@pytest.mark.parametrize("precision,dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                             ("fp16", torch.float16)])
def test_attack_precision_autocasts_the_training_attack_only(batch, precision, dtype):
    model, x, y = batch
    seen = []
    hook = model.net.layer3.register_forward_hook(lambda module, inputs, out: seen.append(out.dtype))
    out = AdversarialStep(model, eps=EPS, steps=2, precision=precision)(x, y, torch.Generator().manual_seed(2))
    assert set(seen) == {dtype}  # the PGD steps and both maps
    assert out.x_adv.dtype == out.cam_clean.dtype == torch.float32
    assert (out.x_adv - x).abs().max() <= EPS + 1e-6 and out.x_adv.min() >= 0 and out.x_adv.max() <= 1
    eager = run_attack(model, x, y, ce_objective(model, y), eps=EPS, alpha=None, steps=2, random_start=True,
                       restarts=1, keep_best=False, generator=torch.Generator().manual_seed(2),
                       dtype=autocast_dtype(precision))
    assert torch.equal(out.x_adv, eager)
    seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # an evaluation attack inside a caller's autocast
        attacks.pgd(model, x, y, eps=EPS, steps=1)
    hook.remove()
    assert set(seen) == {torch.float32}
    with pytest.raises(ValueError, match="precision 'fp8' must be one of"):
        AdversarialStep(model, eps=EPS, steps=1, precision="fp8")


def test_attacks_without_fused_step(batch):
    model, x, y = batch
    assert build_training_attack(model, AttackConfig(name="none")) is None
    step_ll = build_training_attack(model, AttackConfig(name="step_ll", eps=EPS, steps=2), mode="auto")
    assert isinstance(step_ll, EagerTrainingAttack)
    assert torch.equal(step_ll(x, y).x_adv, attacks.step_ll(model, x, y, eps=EPS, steps=2))
    with pytest.raises(ValueError, match="covers the PGD family"):
        build_training_attack(model, AttackConfig(name="step_ll"), mode="graph")


class FakeCapture:
    """Stands in for CapturedCall on CPU: records captures, runs the function eagerly."""
    made: list = []
    fail = False

    def __init__(self, fn, x, y, generator, *, warmup, pool):
        if FakeCapture.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.fn, self.generator, self.graph = fn, generator, self
        FakeCapture.made.append(tuple(x.shape))

    def pool(self):
        return "pool"

    def __call__(self, x, y):
        return self.fn(x, y, self.generator)


@pytest.fixture
def graph_step(batch, monkeypatch):
    """An AdversarialStep forced into graph mode with the fake capture (the dispatch logic on CPU)."""
    monkeypatch.setattr(step_module, "CapturedCall", FakeCapture)
    FakeCapture.made, FakeCapture.fail = [], False

    def make(**kwargs):
        step = AdversarialStep(batch[0], eps=EPS, steps=1, **kwargs)
        step.mode = "graph"
        return step
    return make


def test_graph_dispatch_per_shape_and_on_reallocated_weights(batch, graph_step):
    model, x, y = batch
    g = torch.Generator().manual_seed(0)
    step = graph_step()
    for n in (6, 6, 4, 6, 4):
        step(x[:n], y[:n], g)
    assert FakeCapture.made == [(6, 3, 32, 32), (4, 3, 32, 32)]  # one capture per shape
    step(x, y, torch.Generator().manual_seed(0))  # another generator: re-captured
    model.net.head[-1].weight.data = model.net.head[-1].weight.data.clone()
    step(x, y, g)  # reallocated weights: all graphs dropped, re-captured
    assert FakeCapture.made[2:] == [(6, 3, 32, 32), (6, 3, 32, 32)] and len(step._graphs) == 1


def test_graph_other_shapes_eager(batch, graph_step):
    model, x, y = batch
    step = graph_step(other_shapes="eager")
    step(x, y, torch.Generator().manual_seed(1))
    small = step(x[:4], y[:4], torch.Generator().manual_seed(7))
    assert FakeCapture.made == [(6, 3, 32, 32)]  # the smaller batch ran eagerly
    assert torch.equal(small.x_adv, reference(model, x[:4], y[:4], 1, seed=7)[0])


def test_capture_failure_auto_falls_back_graph_raises(batch, graph_step, caplog):
    _, x, y = batch
    FakeCapture.fail = True
    step = graph_step()
    with pytest.raises(RuntimeError, match="use step mode 'eager' or 'auto'"):
        step(x, y)
    step = graph_step(mode="auto")
    with caplog.at_level(logging.WARNING, logger="aadscale.fused"):
        out = step(x, y)
    assert step.mode == "eager" and out.x_adv.shape == x.shape
    assert "runs eagerly" in caplog.text
