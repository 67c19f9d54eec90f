"""Grad-CAM against a hand computation, its double backward, hook lifetimes, and the mask helpers."""
from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from aadscale import models
from aadscale.attention import (area_matched_mask, capture, forward_with_cam, grad_cam, iou, resize,
                                threshold_mask, topk_mask)
from aadscale.objectives import preservation


def tiny_model(dtype=torch.float64):
    torch.manual_seed(0)
    model = models.build("tinyconv", 3).to(dtype).eval()
    model(torch.rand(1, 3, 8, 8, dtype=dtype))  # materialise the lazy head
    return model


class WithParams(torch.nn.Module):
    """Calls ``model`` with substituted parameters, so that gradcheck can vary one of them."""

    def __init__(self, model, params):
        super().__init__()
        self.inner, self.params = model, params
        self.cam_layer = "inner." + model.cam_layer

    def forward(self, inp):
        return functional_call(self.inner, self.params, (inp,))


def test_grad_cam_matches_hand_computation_float64():
    model = tiny_model()
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 1])
    net = model.net
    acts = net.conv2(net.conv1(model.normalize(x)))  # [N, K, h, w]
    # the head is Flatten + Linear, so d y_c / d A^k_ij is the head's weight for (c, k, i, j)
    w = net.head[2].weight.view(3, *acts.shape[1:])[target]
    alpha = w.mean(dim=(2, 3), keepdim=True)
    expected = torch.relu((alpha * acts).sum(1))
    got = grad_cam(model, x, target)
    assert got.dtype == torch.float64 and got.shape == (4, 4, 4)
    assert torch.allclose(got, expected, atol=1e-12)
    assert expected.max() > 0


def test_grad_cam_predicted_class_and_batch_independence():
    model = tiny_model()
    x = torch.rand(5, 3, 8, 8, dtype=torch.float64)
    pred = model(x).argmax(1)
    assert torch.equal(grad_cam(model, x), grad_cam(model, x, pred))
    one = grad_cam(model, x[2:3], pred[2:3])
    assert torch.allclose(one[0], grad_cam(model, x, pred)[2], atol=1e-12)


def test_preservation_loss_gradcheck_through_double_backward():
    model = tiny_model()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    x_adv = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    y = torch.tensor([0, 2])
    params = dict(model.named_parameters())
    name = "net.conv1.0.weight"

    def loss_of(weight):
        wrapped = WithParams(model, {**params, name: weight})
        cam_c = grad_cam(wrapped, x, y, create_graph=True)
        cam_a = grad_cam(wrapped, x_adv, y, create_graph=True)
        return preservation(cam_c, cam_a)

    weight = params[name].detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_of(weight), weight)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert torch.autograd.gradcheck(loss_of, (weight,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("weights", ["full", "detach"])
def test_create_graph_gives_parameter_gradients(weights):
    model = models.build("resnet9_small", 10).train()
    x = torch.rand(3, 3, 32, 32)
    cam = grad_cam(model, x, torch.tensor([1, 2, 3]), create_graph=True, weights=weights)
    assert cam.requires_grad
    cam.sum().backward()
    grads = [p.grad for p in model.net.layer3.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_no_graph_by_default_and_mode_and_hooks_left_alone():
    model = models.build("resnet9_small", 10)
    model.train()
    model.net.head.eval()  # a mixed state must survive
    layer = model.net.layer3
    cam = grad_cam(model, torch.rand(2, 3, 32, 32))
    assert not cam.requires_grad
    assert model.training and not model.net.head.training
    assert len(layer._forward_hooks) == 0
    assert all(p.grad is None for p in model.parameters())


def test_hook_released_on_error():
    model = models.build("resnet9_small", 10)
    with pytest.raises(RuntimeError):
        with capture(model):
            raise RuntimeError("boom")
    assert len(model.net.layer3._forward_hooks) == 0
    with pytest.raises(ValueError):
        grad_cam(model, torch.rand(2, 3, 32, 32), torch.tensor([1.0, 2.0]))  # float target
    assert len(model.net.layer3._forward_hooks) == 0


def test_bad_inputs():
    model = models.build("resnet9_small", 10)
    with pytest.raises(ValueError, match="layer 'net.nope' does not exist"):
        grad_cam(model, torch.rand(2, 3, 32, 32), layer="net.nope")
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        grad_cam(model, torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="shape \\[2\\]"):
        grad_cam(model, torch.rand(2, 3, 32, 32), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="weights"):
        grad_cam(model, torch.rand(2, 3, 32, 32), weights="half")


def test_forward_with_cam_returns_the_same_logits():
    model = models.build("resnet9_small", 10).eval()
    x = torch.rand(2, 3, 32, 32)
    out = forward_with_cam(model, x)
    with torch.no_grad():
        assert torch.allclose(out.logits, model(x), atol=1e-6)


def test_masks():
    cam = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[5.0, 5.0], [5.0, 1.0]]])
    assert threshold_mask(cam).tolist() == [[[False, False], [True, True]], [[True, True], [True, False]]]
    assert threshold_mask(cam, 2.5).sum().item() == 4
    top = topk_mask(cam, 1)
    assert top.flatten(1).sum(1).tolist() == [1, 1] and top[0, 1, 1]
    assert topk_mask(cam, 3).flatten(1).sum(1).tolist() == [3, 3]  # ties broken, exact count
    area = area_matched_mask(cam, torch.tensor([2, 4]))
    assert area.flatten(1).sum(1).tolist() == [2, 4]
    a = torch.tensor([[True, True, False, False]])
    b = torch.tensor([[True, False, True, False]])
    assert iou(a, b).tolist() == pytest.approx([1 / 3])
    assert iou(torch.zeros(1, 4, dtype=torch.bool), torch.zeros(1, 4, dtype=torch.bool)).item() == 1.0
    big = resize(cam, (8, 8))
    assert big.shape == (2, 8, 8) and big.min() >= 0 and big.max() <= 5


def test_mask_errors():
    cam = torch.rand(2, 4, 4)
    with pytest.raises(ValueError, match="n=17"):
        topk_mask(cam, 17)
    with pytest.raises(ValueError, match="theta"):
        threshold_mask(cam, "median")
    with pytest.raises(ValueError, match="area"):
        area_matched_mask(cam, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="shape"):
        iou(torch.zeros(2, 4, dtype=torch.bool), torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[N, h, w\]"):
        threshold_mask(torch.rand(4, 4))
