"""Attacks: inside the ball and the pixel box, eval mode restored, ordered by strength on a real model."""
from __future__ import annotations

import pytest
import torch

from aadscale import attacks, models
from aadscale.attention import grad_cam, iou, topk_mask
from tests.conftest import accuracy

EPS = 0.1
ALL = {
    "fgsm": lambda m, x, y, **k: attacks.fgsm(m, x, y, **k),
    "fgsm_rs": lambda m, x, y, **k: attacks.fgsm(m, x, y, random_start=True, **k),
    "step_ll": lambda m, x, y, **k: attacks.step_ll(m, x, y, **k),
    "iter_step_ll": lambda m, x, y, **k: attacks.iter_step_ll(m, x, y, steps=3, **k),
    "pgd": lambda m, x, y, **k: attacks.pgd(m, x, y, steps=3, **k),
    "pgd_restarts": lambda m, x, y, **k: attacks.pgd(m, x, y, steps=2, restarts=2, **k),
    "cw": lambda m, x, y, **k: attacks.cw(m, x, y, steps=3, **k),
    "a3_pgd": lambda m, x, y, **k: attacks.a3(m, x, y, base="pgd", steps=2, **k),
    "a3_iter_step_ll": lambda m, x, y, **k: attacks.a3(m, x, y, base="iter_step_ll", steps=2, **k),
}


@pytest.fixture
def small():
    torch.manual_seed(0)
    model = models.build("resnet9_small", 10)
    x = torch.rand(6, 3, 32, 32)
    x[0] = 0.0
    x[1] = 1.0  # the pixel box must bind at both ends
    return model, x, torch.randint(0, 10, (6,))


@pytest.mark.parametrize("name", sorted(ALL))
def test_inside_ball_and_box_mode_restored(small, name):
    model, x, y = small
    model.train()
    model.net.head.eval()
    x_adv = ALL[name](model, x, y, eps=EPS)
    assert x_adv.shape == x.shape and x_adv.dtype == torch.float32
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv != x).any()
    assert model.training and model.net.prep.training and not model.net.head.training
    assert all(p.grad is None for p in model.parameters())
    bn = model.net.prep[1]
    assert bn.num_batches_tracked.item() == 0  # eval mode: BatchNorm statistics untouched


@pytest.mark.parametrize("name", sorted(ALL))
def test_eps_zero_returns_x(small, name):
    model, x, y = small
    assert torch.equal(ALL[name](model, x, y, eps=0.0), x)


def test_bad_inputs(small):
    model, x, y = small
    with pytest.raises(ValueError, match="eps=-0.1"):
        attacks.pgd(model, x, y, eps=-0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attacks.pgd(model, x * 2 - 0.5, y, eps=EPS)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        attacks.fgsm(model, x[0], y, eps=EPS)
    with pytest.raises(ValueError, match=r"shape \[6\]"):
        attacks.fgsm(model, x, y[:3], eps=EPS)
    with pytest.raises(ValueError, match="integer labels"):
        attacks.cw(model, x, y.float(), eps=EPS)
    with pytest.raises(ValueError, match="does not exist"):
        attacks.a3(model, x, y, eps=EPS, layer="net.layer9")
    with pytest.raises(ValueError, match="base="):
        attacks.a3(model, x, y, eps=EPS, base="deepfool")
    with pytest.raises(ValueError, match="steps=0"):
        attacks.pgd(model, x, y, eps=EPS, steps=0)


def test_strength_order_on_trained_digits(digits, digits_model):
    _, _, x, y = digits
    m = digits_model
    clean = accuracy(m, x, y)
    fgsm = accuracy(m, attacks.fgsm(m, x, y, eps=EPS), y)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    pgd10 = accuracy(m, attacks.pgd(m, x, y, eps=EPS, steps=10, generator=g()), y)
    pgd40 = accuracy(m, attacks.pgd(m, x, y, eps=EPS, steps=40, generator=g()), y)
    assert clean > 0.9
    assert clean > fgsm >= pgd10 >= pgd40
    assert pgd10 < clean - 0.2  # the attack does real damage at this eps


def test_restarts_keep_the_worst_case_per_sample(digits, digits_model):
    _, _, x, y = digits
    m = digits_model
    eps = 0.06
    one = attacks.pgd(m, x, y, eps=eps, steps=5, generator=torch.Generator().manual_seed(3))
    four = attacks.pgd(m, x, y, eps=eps, steps=5, restarts=4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        fooled_one = m(one).argmax(1) != y
        fooled_four = m(four).argmax(1) != y
    assert bool((fooled_one <= fooled_four).all())  # every sample fooled once stays fooled
    assert fooled_four.sum() >= fooled_one.sum()
    assert (four - x).abs().max() <= eps + 1e-6


def test_cw_and_step_ll_hurt_the_model(digits, digits_model):
    _, _, x, y = digits
    m = digits_model
    clean = accuracy(m, x, y)
    assert accuracy(m, attacks.cw(m, x, y, eps=EPS, steps=10), y) < clean - 0.2
    assert accuracy(m, attacks.step_ll(m, x, y, eps=EPS), y) < clean
    assert accuracy(m, attacks.iter_step_ll(m, x, y, eps=EPS, steps=10), y) < clean - 0.2


def test_a3_moves_attention_further_than_its_base(digits, digits_model):
    _, _, x, y = digits
    m = digits_model
    x, y = x[:128], y[:128]
    eps, n = 0.1, 10
    clean_top = topk_mask(grad_cam(m, x, y), n)

    def top_iou(x_adv):
        return float(iou(clean_top, topk_mask(grad_cam(m, x_adv, y), n)).mean())

    for base, plain in (("pgd", attacks.pgd), ("iter_step_ll", attacks.iter_step_ll)):
        base_adv = plain(m, x, y, eps=eps, steps=5, generator=torch.Generator().manual_seed(0))
        a3_adv = attacks.a3(m, x, y, base=base, eps=eps, steps=5, gamma=10.0,
                            generator=torch.Generator().manual_seed(0))
        assert top_iou(a3_adv) < top_iou(base_adv) - 0.02, base
