"""TRADES (Zhang et al. 2019): L_cls on x plus beta * KL(f(x) || f(x_adv)); its training attack
ascends the same KL (``aadscale.attacks.training.trades_kl``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aadscale.objectives.bn_stats import paired_forwards, resolve_bn_stats
from aadscale.objectives.classification import ClsLoss, classification_loss


def trades_terms(logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, *,
                 cls_loss: str | ClsLoss = "ce", trades_beta: float = 6.0, **_unused) -> dict[str, torch.Tensor]:
    """Loss dict from precomputed logits: L_cls(f(x), y) + beta * KL(softmax f(x) || softmax f(x_adv)),
    the KL summed over classes and averaged over the batch, differentiated through both forwards
    as in the authors' code."""
    cls = classification_loss(logits_clean, y, cls_loss)
    kl = F.kl_div(F.log_softmax(logits_adv, 1), F.softmax(logits_clean, 1), reduction="batchmean")
    return {"loss": cls + trades_beta * kl, "cls": cls.detach(), "kl": kl.detach()}


def trades(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, *,
           cls_loss: str | ClsLoss = "ce", trades_beta: float = 6.0, bn_stats: str = "both") -> dict[str, torch.Tensor]:
    """TRADES objective: separate train-mode forwards on ``x`` and ``x_adv`` (the same dropout
    masks), both updating BatchNorm's running statistics unless ``bn_stats`` says otherwise."""
    logits_clean, logits_adv = paired_forwards(model, x, x_adv, resolve_bn_stats("trades", bn_stats), model, model)
    return {**trades_terms(logits_clean, logits_adv, y, cls_loss=cls_loss, trades_beta=trades_beta),
            "logits_clean": logits_clean.detach(), "logits_adv": logits_adv.detach()}
