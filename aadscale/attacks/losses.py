"""Per-sample attack losses, all to be ascended."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from aadscale.errors import InputError


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the true label (FGSM, PGD)."""
    return F.cross_entropy(logits, y, reduction="none")


def least_likely_loss(logits: torch.Tensor, y_ll: torch.Tensor) -> torch.Tensor:
    """Minus cross-entropy on the least-likely label (StepLL descends toward it)."""
    return -F.cross_entropy(logits, y_ll, reduction="none")


def cw_loss(logits: torch.Tensor, y: torch.Tensor, kappa: float = 50.0) -> torch.Tensor:
    """Carlini-Wagner margin max_{j!=y} f_j - f_y, capped at kappa (Madry et al.'s CW-k loss)."""
    true = logits.gather(1, y.view(-1, 1)).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return (others.max(1).values - true).clamp(max=kappa)


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio (APGD-DLR), (max_{j!=y} z_j - z_y) / (z_pi1 - z_pi3): scale invariant."""
    if logits.shape[1] < 3:
        raise InputError(f"the DLR loss needs >= 3 classes, the model has {logits.shape[1]}; use loss='ce'")
    top = logits.topk(3, dim=1).values
    return cw_loss(logits, y, kappa=float("inf")) / (top[:, 0] - top[:, 2] + 1e-12)
