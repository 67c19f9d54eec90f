"""Adversarial logit pairing (Kannan et al.): L_cls on x and x_adv plus beta * ||f(x) - f(x_adv)||^2."""
from __future__ import annotations

import torch
from torch import nn

from aadscale.objectives.classification import classification_loss


def alp_terms(logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, *,
              cls_loss: str = "ce", beta: float = 0.5, **_unused) -> dict[str, torch.Tensor]:
    """Loss dict from precomputed logits: mean of both L_cls plus the pairing term."""
    cls = 0.5 * (classification_loss(logits_clean, y, cls_loss) + classification_loss(logits_adv, y, cls_loss))
    pair = (logits_clean - logits_adv).pow(2).sum(1).mean()
    return {"loss": cls + beta * pair, "cls": cls.detach(), "alp": pair.detach()}


def alp(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, *,
        cls_loss: str = "ce", beta: float = 0.5) -> dict[str, torch.Tensor]:
    """ALP objective: separate forwards on ``x`` and ``x_adv``."""
    logits_clean, logits_adv = model(x), model(x_adv)
    return {**alp_terms(logits_clean, logits_adv, y, cls_loss=cls_loss, beta=beta),
            "logits_clean": logits_clean.detach(), "logits_adv": logits_adv.detach()}
