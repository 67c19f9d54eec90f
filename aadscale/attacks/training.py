"""Training attacks beyond PGD: APGD-CE as Singh et al. (2023) train with it, and TRADES' KL attack.

Both take soft targets where they use labels, run in ``attack_mode`` (eval as the leaderboard
recipes, or train), and under autocast with ``dtype`` (``attack.precision``); iterates stay float32.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from aadscale.attacks.apgd import apgd_run, checkpoints, loss_and_grad
from aadscale.attacks.ascent import ascend, attack_autocast
from aadscale.attacks.losses import ce_loss
from aadscale.attacks.threat import LinfStep
from aadscale.models.modes import attack_mode

TRADES_START = 0.001  # std of the Gaussian start around x in Zhang et al.'s code


def apgd_train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int,
               mode: str = "eval", dtype: torch.dtype | None = None) -> torch.Tensor:
    """APGD-CE from the clean image (no random start, first step 2 eps, momentum 0.75), the
    highest-loss point per image: Singh et al.'s training attack (2 steps)."""
    x = x.detach().float()
    with attack_mode(model, mode), attack_autocast(x.device.type, dtype), torch.enable_grad():
        threat = LinfStep(x, eps, alpha=0.0)
        loss_grad = functools.partial(loss_and_grad, model, ce_loss, y.to(x.device))
        x_best, _ = apgd_run(loss_grad, threat, x.clone(), None, eps=eps, steps=steps,
                             marks=set(checkpoints(steps)), rho=0.75, momentum=0.75)
    return x_best.detach()


def kl_objective(model: nn.Module, p_clean: torch.Tensor):
    """x_adv -> (KL(p_clean || softmax f(x_adv)) per image, logits): what TRADES' attack ascends."""
    def objective(x_adv):
        logits = model(x_adv)
        return F.kl_div(F.log_softmax(logits.float(), 1), p_clean, reduction="none").sum(1), logits
    return objective


def trades_kl(model: nn.Module, x: torch.Tensor, *, eps: float, alpha: float, steps: int,
              generator: torch.Generator | None = None, mode: str = "eval",
              dtype: torch.dtype | None = None) -> torch.Tensor:
    """TRADES' attack (Zhang et al. 2019): from x + 0.001 N(0, 1), ``steps`` signed-gradient steps of
    ``alpha`` ascending KL(f(x) || f(x')), projected; the last iterate. Labels are not used."""
    x = x.detach().float()
    with attack_mode(model, mode), attack_autocast(x.device.type, dtype), torch.enable_grad():
        with torch.no_grad():
            p_clean = model(x).float().softmax(1)
        threat = LinfStep(x, eps, alpha)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return ascend(kl_objective(model, p_clean), threat, threat.project(x + TRADES_START * noise), steps).detach()
