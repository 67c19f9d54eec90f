"""The recipe's pieces on their own: soft targets and label smoothing, Mixup/CutMix, Grad-CAM of a
mixed target, APGD-CE and TRADES as training attacks, the attack warm-up and mode, TRADES' objective."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aadscale import models
from aadscale.attacks.training import apgd_train, kl_objective, trades_kl
from aadscale.attention.gradcam import capture, grad_cam
from aadscale.config import AttackConfig, load_config
from aadscale.data.mix import build_mix
from aadscale.engine.step import EAGER_ATTACKS, EagerTrainingAttack, build_training_attack, warmed_budget
from aadscale.fused import AdversarialStep
from aadscale.models.modes import attack_mode
from aadscale.objectives import OBJECTIVES, build_objective, classification_loss
from aadscale.objectives.classification import ClsLoss

EPS = 8 / 255


@pytest.fixture
def small():
    torch.manual_seed(0)
    model = models.build("resnet9_small", 10).train()
    return model, torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))


def _mixed(y: torch.Tensor, lam: float = 0.7) -> torch.Tensor:
    return lam * F.one_hot(y, 10).float() + (1 - lam) * F.one_hot(y.flip(0), 10).float()


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_smoothed_loss_on_mixed_targets_is_timms(smoothing):
    from timm.data.mixup import mixup_target
    from timm.loss import SoftTargetCrossEntropy
    torch.manual_seed(1)
    logits, y = torch.randn(6, 10), torch.randint(0, 10, (6,))
    # timm smooths inside its Mixup targets; aadscale mixes unsmoothed and smooths in the loss
    timm_target = mixup_target(y, 10, lam=0.7, smoothing=smoothing)
    expected = SoftTargetCrossEntropy()(logits, timm_target)
    assert torch.allclose(classification_loss(logits, _mixed(y), ClsLoss("ce", smoothing)), expected, atol=1e-6)
    hard = classification_loss(logits, y, ClsLoss("ce", smoothing))
    assert torch.allclose(hard, SoftTargetCrossEntropy()(logits, mixup_target(y, 10, 1.0, smoothing)), atol=1e-6)
    # the paper's soft margin: a one-hot soft target is the label itself
    assert torch.allclose(classification_loss(logits, F.one_hot(y, 10).float(), "soft_margin"),
                          classification_loss(logits, y, "soft_margin"))


def test_mixup_and_cutmix_give_soft_targets_of_two_labels_inside_the_pixel_box():
    assert build_mix(0.0, 0.0, prob=1.0, switch=0.5, num_classes=10, micro_batch=8) is None
    with pytest.raises(ValueError, match="must be even, got 7"):
        build_mix(0.8, 1.0, prob=1.0, switch=0.5, num_classes=10, micro_batch=7)
    mix = build_mix(0.8, 1.0, prob=1.0, switch=0.5, num_classes=10, micro_batch=8)
    np.random.seed(0)
    for _ in range(4):  # both Mixup and CutMix are drawn
        x, y = torch.rand(8, 3, 16, 16), torch.randperm(10)[:8]
        x_mix, t = mix(x.clone(), y)
        assert t.shape == (8, 10) and torch.allclose(t.sum(1), torch.ones(8))
        lam = t[0, y[0]].item()
        assert torch.allclose(t, _mixed(y, lam), atol=1e-6)  # the batch mixed with its reverse, unsmoothed
        assert 0 <= x_mix.min() and x_mix.max() <= 1


def test_gradcam_of_a_mixed_target_weighs_both_labels_channel_weights(small):
    model, x, y = small
    model.eval()
    onehot = F.one_hot(y, 10).float()
    assert torch.allclose(grad_cam(model, x, onehot), grad_cam(model, x, y), atol=1e-6)

    def before_relu(weights: torch.Tensor) -> torch.Tensor:
        with capture(model) as cap:
            score = (model(x) * weights).sum()
        (grads,) = torch.autograd.grad(score, cap.output)
        return (grads.mean((2, 3), keepdim=True) * cap.output).sum(1).detach()

    t = _mixed(y, 0.7)
    expected = torch.relu(0.7 * before_relu(onehot) + 0.3 * before_relu(F.one_hot(y.flip(0), 10).float()))
    assert torch.allclose(grad_cam(model, x, t), expected, atol=1e-5)


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_objective_trains_on_soft_targets(small, name):
    model, x, y = small
    x_adv = (x + 0.03).clamp(0, 1)
    out = build_objective(name, label_smoothing=0.1)(model, x, _mixed(y), x_adv)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and all(p.grad is not None for p in model.parameters())
    onehot = build_objective(name)(model.eval(), x, F.one_hot(y, 10).float(), x_adv)["loss"]
    assert torch.allclose(onehot, build_objective(name)(model, x, y, x_adv)["loss"], atol=1e-5)


@pytest.mark.parametrize("name", ["pgd", "fgsm_rs", "step_ll", "apgd"])
def test_training_attacks_take_soft_targets(small, name):
    model, x, y = small
    attack = build_training_attack(model, AttackConfig(name=name, eps=EPS, steps=2))
    hard = attack(x, y, torch.Generator().manual_seed(3)).x_adv
    soft = attack(x, F.one_hot(y, 10).float(), torch.Generator().manual_seed(3)).x_adv
    assert torch.allclose(hard, soft, atol=1e-6)  # a one-hot soft target is its label
    mixed = attack(x, _mixed(y), torch.Generator().manual_seed(3)).x_adv
    assert (mixed - x).abs().max() <= EPS + 1e-6 and 0 <= mixed.min() and mixed.max() <= 1


def test_apgd_training_attack_keeps_its_best_loss_point(small):
    model, x, y = small
    model.eval()
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y, reduction="none")
    for steps in (1, 3):
        x_adv = apgd_train(model, x, y, eps=EPS, steps=steps)
        with torch.no_grad():
            loss = F.cross_entropy(model(x_adv), y, reduction="none")
        assert (x_adv - x).abs().max() <= EPS + 1e-6
        assert (loss >= clean - 1e-6).all()  # the start (the clean image) is a candidate: never below it
        assert loss.mean() > clean.mean()


def test_trades_attack_raises_the_kl_from_its_start_inside_the_ball(small):
    model, x, _ = small
    model.eval()
    x_adv = trades_kl(model, x, eps=EPS, alpha=2 / 255, steps=3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        p_clean = model(x).softmax(1)
        kl, _ = kl_objective(model, p_clean)(x_adv)
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1
    assert kl.mean() > 1e-4  # from KL ~ 0 at x + 0.001 N(0, 1)
    attack = build_training_attack(model, AttackConfig(name="pgd", eps=EPS, steps=2), loss="kl")
    assert isinstance(attack, EagerTrainingAttack) and attack.run is EAGER_ATTACKS["kl"]
    with pytest.raises(ValueError, match="attack.name=pgd"):
        build_training_attack(model, AttackConfig(name="apgd", eps=EPS, steps=2), loss="kl")


def test_trades_at_beta_zero_is_plain_training_on_clean_images(small):
    model, x, y = small
    x_adv = (x + 0.03).clamp(0, 1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    plain = build_objective("plain")(model, x, y)
    plain["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    after_plain = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    out = build_objective("trades", trades_beta=0.0, bn_stats="clean")(model, x, y, x_adv)
    out["loss"].backward()
    assert torch.equal(out["loss"], plain["loss"]) and out["kl"] > 0
    assert all(torch.equal(p.grad, grads[n]) for n, p in model.named_parameters())
    # with statistics from the clean forward only, the running statistics move as plain's do
    assert all(torch.equal(v, after_plain[k]) for k, v in model.state_dict().items())


def test_trades_terms_are_cross_entropy_plus_beta_kl(small):
    model, x, y = small
    model.eval()
    x_adv = (x + 0.03).clamp(0, 1)
    out = build_objective("trades", trades_beta=2.0)(model, x, y, x_adv)
    lc, la = model(x), model(x_adv)
    kl = (lc.softmax(1) * (lc.log_softmax(1) - la.log_softmax(1))).sum(1).mean()
    assert torch.allclose(out["loss"], F.cross_entropy(lc, y) + 2.0 * kl, atol=1e-5)


def test_warm_up_ramps_eps_or_step_per_epoch():
    cfg = AttackConfig(name="pgd", eps=0.04, steps=4, warmup_epochs=4, warmup="eps")
    alpha = 2.5 * 0.04 / 4
    assert [v for e in (0, 1, 3, 9) for v in warmed_budget(cfg, e)] == pytest.approx(
        [0.01, alpha, 0.02, alpha, 0.04, alpha, 0.04, alpha])
    both = AttackConfig(name="pgd", eps=0.04, steps=4, warmup_epochs=2, warmup="both")
    assert warmed_budget(both, 0) == pytest.approx((0.02, alpha / 2))
    assert warmed_budget(AttackConfig(name="pgd", eps=0.04, steps=4), 0) == pytest.approx((0.04, alpha))


def test_set_budget_resizes_the_fused_step(small):
    model, x, y = small
    step = AdversarialStep(model, eps=EPS, steps=2, cams=False)
    step.set_budget(EPS / 4, EPS / 8)
    x_adv = step(x, y, torch.Generator().manual_seed(0)).x_adv
    assert (x_adv - x).abs().max() <= EPS / 4 + 1e-6 and (x_adv - x).abs().max() > EPS / 8


def test_attack_mode_train_uses_batch_statistics_and_leaves_running_ones(small):
    model, x, y = small
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        eval_logits = model(x)
        with attack_mode(model, "train"):
            assert model.training
            train_logits = model(x)
    assert not model.training and not torch.allclose(eval_logits, train_logits)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    model.train()
    cfg = AttackConfig(name="pgd", eps=EPS, steps=2, model_mode="train")
    x_adv = build_training_attack(model, cfg)(x, y, torch.Generator().manual_seed(0)).x_adv
    assert model.training and all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    with pytest.raises(ValueError, match="not step_ll"):
        build_training_attack(model, AttackConfig(name="step_ll", model_mode="train"))


@pytest.mark.parametrize("override, message", [
    ("objective.name=trades attack.name=apgd", "TRADES' attack, PGD on its KL term"),
    ("attack.name=apgd attack.warmup_epochs=2 attack.warmup=alpha", "APGD sets itself"),
    ("train.ema_decay=0.999 train.zero_stage=3", "ZeRO-3 partitions"),
    ("optim.betas=[0.9,1.5]", "must be two numbers in [0, 1)"),
    ("augment.erasing=2", "augment.erasing=2.0 must be <= 1"),
])
def test_recipe_config_errors_name_the_fix(override, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        load_config("demo", override.split())
