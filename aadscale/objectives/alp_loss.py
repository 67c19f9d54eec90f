"""Adversarial logit pairing (Kannan et al.): L_cls on x and x_adv plus beta * ||f(x) - f(x_adv)||^2."""
from __future__ import annotations

import torch
from torch import nn

from aadscale.objectives.bn_stats import paired_forwards, resolve_bn_stats
from aadscale.objectives.classification import ClsLoss, classification_loss


def alp_terms(logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, *,
              cls_loss: str | ClsLoss = "ce", beta: float = 0.5, **_unused) -> dict[str, torch.Tensor]:
    """Loss dict from precomputed logits: mean of both L_cls plus the pairing term."""
    cls = 0.5 * (classification_loss(logits_clean, y, cls_loss) + classification_loss(logits_adv, y, cls_loss))
    pair = (logits_clean - logits_adv).pow(2).sum(1).mean()
    return {"loss": cls + beta * pair, "cls": cls.detach(), "alp": pair.detach()}


def alp(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, *,
        cls_loss: str | ClsLoss = "ce", beta: float = 0.5, bn_stats: str = "both") -> dict[str, torch.Tensor]:
    """ALP objective: separate forwards on ``x`` and ``x_adv``, drawing the same dropout masks as
    AAD's do; ``bn_stats`` ``clean`` or ``adv`` freezes the other forward's running statistics."""
    logits_clean, logits_adv = paired_forwards(model, x, x_adv, resolve_bn_stats("alp", bn_stats), model, model)
    return {**alp_terms(logits_clean, logits_adv, y, cls_loss=cls_loss, beta=beta),
            "logits_clean": logits_clean.detach(), "logits_adv": logits_adv.detach()}
