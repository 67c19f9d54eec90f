"""Batched, differentiable Grad-CAM (paper eq. 1-2) with hook handles that are always released."""
from __future__ import annotations

import contextlib
from typing import Iterator, NamedTuple

import torch
from torch import nn

from aadscale.errors import InputError
from aadscale.labels import check_targets, class_score


class CamOutput(NamedTuple):
    """The Grad-CAM map [N, h, w] and the logits of the same forward pass."""
    cam: torch.Tensor
    logits: torch.Tensor


def find_layer(model: nn.Module, layer: str | None) -> nn.Module:
    """The module named ``layer`` (default: ``model.cam_layer``); InputError if there is none."""
    if layer is None:
        layer = getattr(model, "cam_layer", None)
        if layer is None:
            raise InputError("model has no .cam_layer; pass layer='<module name>' "
                             "(one of model.named_modules())")
    modules = dict(model.named_modules())
    if layer not in modules:
        names = [n for n in modules if n][-8:]
        raise InputError(f"layer {layer!r} does not exist in the model; "
                         f"last module names are {names}")
    return modules[layer]


class ActivationCapture(contextlib.AbstractContextManager):
    """Records a module's forward output while open; the hook is removed on exit (or ``release``)."""

    def __init__(self, module: nn.Module) -> None:
        self.output: torch.Tensor | None = None
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, _module, _inputs, output):
        if not isinstance(output, torch.Tensor):
            raise InputError(f"Grad-CAM layer must output a tensor, got {type(output).__name__}")
        self.output = output

    def release(self) -> None:
        self._handle.remove()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def capture(model: nn.Module, layer: str | None = None) -> Iterator[ActivationCapture]:
    """Context manager yielding an ``ActivationCapture`` on ``layer`` of ``model``."""
    with ActivationCapture(find_layer(model, layer)) as cap:
        yield cap


def cam_from_activations(acts: torch.Tensor, score: torch.Tensor, create_graph: bool,
                         weights: str) -> torch.Tensor:
    """L_c = ReLU(sum_k alpha_k A^k) with alpha_k = spatial mean of d score / d A^k."""
    if weights not in ("full", "detach"):
        raise InputError(f"weights={weights!r} must be 'full' or 'detach'")
    if acts.dim() != 4:
        raise InputError(f"Grad-CAM layer output must be [N, K, h, w], got shape {tuple(acts.shape)}")
    need_second_order = create_graph and weights == "full"
    (grads,) = torch.autograd.grad(score, acts, create_graph=need_second_order,
                                   retain_graph=create_graph or None)
    alpha = grads.mean(dim=(2, 3), keepdim=True)
    if not need_second_order:
        alpha = alpha.detach()
    cam = torch.relu((alpha * acts).sum(dim=1))
    return cam if create_graph else cam.detach()


def forward_with_cam(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None,
                     layer: str | None = None, create_graph: bool = False,
                     weights: str = "full") -> CamOutput:
    """One forward pass giving both the logits and the Grad-CAM of ``target`` (None: predicted).

    A soft target [N, C] (Mixup/CutMix) explains the target-weighted score sum_c t_c y^c: with
    t = lam e_a + (1 - lam) e_b the channel weights are lam alpha^a + (1 - lam) alpha^b, both
    labels weighted by the mix (the map, after its ReLU, is not the weighted sum of the two maps).
    """
    if x.dim() != 4:
        raise InputError(f"x must be a batch [N, C, H, W], got shape {tuple(x.shape)}")
    with capture(model, layer) as cap, torch.enable_grad():
        if not x.requires_grad and not any(p.requires_grad for p in model.parameters()):
            x = x.detach().requires_grad_(True)  # a frozen model still needs a graph to A^k
        logits = model(x)
        if cap.output is None:
            raise InputError("the Grad-CAM layer was not called in the forward pass")
        if target is None:
            target = logits.argmax(1)
        check_targets(target, x.shape[0], where="target")
        score = class_score(logits, target.to(logits.device)).sum()
        cam = cam_from_activations(cap.output, score, create_graph, weights)
    return CamOutput(cam, logits if create_graph else logits.detach())


def grad_cam(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None,
             layer: str | None = None, create_graph: bool = False,
             weights: str = "full") -> torch.Tensor:
    """Grad-CAM maps [N, h, w] at ``layer`` (default ``model.cam_layer``), ReLU'd, unnormalised.

    ``create_graph=True`` keeps the graph so that a loss on the map trains the model
    (double backward); ``weights="detach"`` treats the channel weights alpha as constants.
    The model's train/eval mode is left as it is.
    """
    return forward_with_cam(model, x, target, layer, create_graph, weights).cam
