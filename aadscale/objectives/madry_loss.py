"""Madry et al.: L_cls on the adversarial twin only."""
from __future__ import annotations

import torch
from torch import nn

from aadscale.objectives.classification import classification_loss


def madry_terms(logits_clean: torch.Tensor | None, logits_adv: torch.Tensor, y: torch.Tensor, *,
                cls_loss: str = "ce", **_unused) -> dict[str, torch.Tensor]:
    """Loss dict from precomputed logits (clean logits are not used by Madry)."""
    loss = classification_loss(logits_adv, y, cls_loss)
    return {"loss": loss, "cls": loss.detach()}


def madry(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, *,
          cls_loss: str = "ce") -> dict[str, torch.Tensor]:
    """Madry objective: one forward on ``x_adv``; ``x`` is not used."""
    logits_adv = model(x_adv)
    return {**madry_terms(None, logits_adv, y, cls_loss=cls_loss), "logits_adv": logits_adv.detach()}
