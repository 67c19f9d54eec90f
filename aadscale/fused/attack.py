"""The adversarial half of a training step as one function: k-step PGD plus the Grad-CAMs of x and x_adv."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from aadscale.attacks.ascent import ascend, attack_autocast
from aadscale.attacks.standard import ce_objective
from aadscale.attacks.threat import LinfStep
from aadscale.attention.gradcam import grad_cam
from aadscale.models.modes import attack_mode, eval_mode


class StepOutput(NamedTuple):
    """The adversarial twin of the batch and the eval-mode Grad-CAMs [N, h, w] (None without cams)."""
    x_adv: torch.Tensor
    cam_clean: torch.Tensor | None
    cam_adv: torch.Tensor | None


def pgd_last(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float,
             steps: int, generator: torch.Generator | None = None,
             dtype: torch.dtype | None = None, mode: str = "eval") -> torch.Tensor:
    """PGD-k from a uniform random start, last iterate: ``attacks.pgd(keep_best=False)`` without its checks.

    Eval mode (or ``mode`` train: ``attack_mode``) and float32, or with ``dtype`` the forwards
    under autocast (a training attack only; the iterates stay float32). ``y``: labels or soft
    targets. No host synchronisation and no data-dependent Python branch, so it runs eagerly,
    under ``torch.compile`` and inside a CUDA-graph capture alike.
    """
    x = x.detach().float()
    with attack_mode(model, mode), attack_autocast(x.device.type, dtype), torch.enable_grad():
        threat = LinfStep(x, eps, alpha)
        return ascend(ce_objective(model, y), threat, threat.random_perturb(x, generator), steps)


def clean_adv_cams(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
                   layer: str | None = None, dtype: torch.dtype | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode Grad-CAMs of ``x`` and ``x_adv`` toward ``y`` (no graph kept), float32 maps; ``dtype``: autocast."""
    with eval_mode(model), attack_autocast(x.device.type, dtype):
        cams = grad_cam(model, x.detach().float(), y, layer), grad_cam(model, x_adv, y, layer)
    return cams[0].float(), cams[1].float()


def pgd_with_cams(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float,
                  steps: int, generator: torch.Generator | None = None, layer: str | None = None,
                  cams: bool = True, dtype: torch.dtype | None = None, mode: str = "eval") -> StepOutput:
    """The whole adversarial step: ``pgd_last`` then, if ``cams``, ``clean_adv_cams``, both in ``dtype``.

    Inputs are not validated here (validation syncs): ``AdversarialStep`` checks them.
    """
    x_adv = pgd_last(model, x, y, eps=eps, alpha=alpha, steps=steps, generator=generator, dtype=dtype, mode=mode)
    if not cams:
        return StepOutput(x_adv, None, None)
    return StepOutput(x_adv, *clean_adv_cams(model, x, x_adv, y, layer, dtype))
