"""Madry et al.: L_cls on the adversarial twin only."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from aadscale.objectives.bn_stats import paired_forwards, resolve_bn_stats
from aadscale.objectives.classification import ClsLoss, classification_loss


def madry_terms(logits_clean: torch.Tensor | None, logits_adv: torch.Tensor, y: torch.Tensor, *,
                cls_loss: str | ClsLoss = "ce", **_unused) -> dict[str, torch.Tensor]:
    """Loss dict from precomputed logits (clean logits are not used by Madry)."""
    loss = classification_loss(logits_adv, y, cls_loss)
    return {"loss": loss, "cls": loss.detach()}


def _statistics_forward(model: nn.Module) -> Callable[[torch.Tensor], None]:
    """A forward without gradient whose only effect is on BatchNorm's running statistics (and the RNG)."""
    @torch.no_grad()
    def forward(x: torch.Tensor) -> None:
        model(x)
    return forward


def madry(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, *,
          cls_loss: str | ClsLoss = "ce", bn_stats: str = "both") -> dict[str, torch.Tensor]:
    """Madry objective: L_cls on one forward of ``x_adv``.

    ``bn_stats`` ``both`` or ``clean`` adds a clean forward before it, without gradient, that
    updates BatchNorm's running statistics as AAD's clean forward does (same order, same
    dropout masks): Madry+AAD with lambda1 = lambda2 = 0 then takes Madry's step exactly.
    ``adv`` or ``base`` is textbook Madry (Madry et al. 2018): ``x`` is not used.
    """
    stats = resolve_bn_stats("madry", bn_stats)
    if stats == "adv":  # no clean pass to replay: a paired pass would rewind the RNG past this forward's draws
        logits_adv = model(x_adv)
    else:
        _, logits_adv = paired_forwards(model, x, x_adv, stats, _statistics_forward(model), model)
    return {**madry_terms(None, logits_adv, y, cls_loss=cls_loss), "logits_adv": logits_adv.detach()}
