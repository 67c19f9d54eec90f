"""The classification loss L_cls (paper: multi-label soft margin on one-hot targets, or CE) and plain training."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aadscale.errors import InputError
from aadscale.labels import is_soft
from aadscale.models.modes import frozen_running_stats

CLS_LOSSES = ("ce", "soft_margin")


@dataclass(frozen=True)
class ClsLoss:
    """L_cls as configured: ``objective.cls_loss`` and ``objective.label_smoothing``."""
    kind: str = "ce"
    smoothing: float = 0.0


def classification_loss(logits: torch.Tensor, y: torch.Tensor, kind: str | ClsLoss = "ce") -> torch.Tensor:
    """Mean L_cls over the batch: ``"ce"`` or ``"soft_margin"`` (the paper's choice), or a ``ClsLoss``.

    ``y``: labels [N] or soft targets [N, C] (Mixup/CutMix). Smoothing eps mixes the target with
    the uniform one, t (1 - eps) + eps / C, as timm's ``Mixup(label_smoothing)`` +
    ``SoftTargetCrossEntropy`` do; with the mix's one-hot targets left unsmoothed, Grad-CAM
    explains the mixed labels alone.
    """
    spec = kind if isinstance(kind, ClsLoss) else ClsLoss(kind)
    if spec.kind == "ce":
        return F.cross_entropy(logits, y, label_smoothing=spec.smoothing)
    if spec.kind == "soft_margin":
        target = y.to(logits.dtype) if is_soft(y) else F.one_hot(y, logits.shape[1]).to(logits.dtype)
        target = target * (1 - spec.smoothing) + spec.smoothing / logits.shape[1]
        return F.multilabel_soft_margin_loss(logits, target)
    raise InputError(f"cls_loss={spec.kind!r} must be one of {CLS_LOSSES}")


def plain(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor | None = None, *,
          cls_loss: str | ClsLoss = "ce") -> dict[str, torch.Tensor]:
    """Undefended training: L_cls on clean images (``x_adv``, if given, is only scored, and its
    forward leaves BatchNorm's running statistics alone)."""
    logits = model(x)
    loss = classification_loss(logits, y, cls_loss)
    out = {"loss": loss, "cls": loss.detach(), "logits_clean": logits.detach()}
    if x_adv is not None:
        with torch.no_grad(), frozen_running_stats(model):
            out["logits_adv"] = model(x_adv)
    return out
