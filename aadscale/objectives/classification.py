"""The classification loss L_cls (paper: multi-label soft margin on one-hot targets, or CE) and plain training."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aadscale.errors import InputError
from aadscale.models.modes import frozen_running_stats

CLS_LOSSES = ("ce", "soft_margin")


def classification_loss(logits: torch.Tensor, y: torch.Tensor, kind: str = "ce") -> torch.Tensor:
    """Mean L_cls over the batch: ``"ce"`` or ``"soft_margin"`` (the paper's choice)."""
    if kind == "ce":
        return F.cross_entropy(logits, y)
    if kind == "soft_margin":
        return F.multilabel_soft_margin_loss(logits, F.one_hot(y, logits.shape[1]).to(logits.dtype))
    raise InputError(f"cls_loss={kind!r} must be one of {CLS_LOSSES}")


def plain(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor | None = None, *,
          cls_loss: str = "ce") -> dict[str, torch.Tensor]:
    """Undefended training: L_cls on clean images (``x_adv``, if given, is only scored, and its
    forward leaves BatchNorm's running statistics alone)."""
    logits = model(x)
    loss = classification_loss(logits, y, cls_loss)
    out = {"loss": loss, "cls": loss.detach(), "logits_clean": logits.detach()}
    if x_adv is not None:
        with torch.no_grad(), frozen_running_stats(model):
            out["logits_adv"] = model(x_adv)
    return out
