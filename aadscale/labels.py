"""A training batch's targets: integer labels [N], or soft targets [N, C] whose rows weigh the
classes (Mixup/CutMix). Losses, the training attack and Grad-CAM take either; evaluation takes labels."""
from __future__ import annotations

import torch

from aadscale.errors import InputError


def is_soft(y: torch.Tensor) -> bool:
    """True for soft targets [N, C] (floating point), False for integer labels [N]."""
    return y.dim() == 2 and y.dtype.is_floating_point


def check_targets(y: object, n: int, *, soft: bool = True, where: str = "y") -> None:
    """Refuse anything but integer labels [n] (or, with ``soft``, float soft targets [n, C]); no device sync."""
    ok = isinstance(y, torch.Tensor) and y.shape[:1] == (n,) and (
        (y.dim() == 1 and not y.dtype.is_floating_point) or (soft and is_soft(y)))
    if not ok:
        kinds = f"integer labels of shape [{n}]" + (f" or soft targets [{n}, classes]" if soft else "")
        raise InputError(f"{where} must be {kinds}, got {getattr(y, 'dtype', type(y))} "
                         f"{tuple(getattr(y, 'shape', ()))}")


def hard_labels(y: torch.Tensor) -> torch.Tensor:
    """Integer labels: ``y`` itself, or each soft target's dominant class (accuracy, "fooled")."""
    return y.argmax(1) if is_soft(y) else y


def class_score(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per image, the logit of its label, or the logits weighted by its soft target (Grad-CAM's score)."""
    if is_soft(y):
        return (logits * y.to(logits.dtype)).sum(1)
    return logits.gather(1, y.to(logits.device).view(-1, 1)).squeeze(1)
