"""``objective.bn_stats``: which of a training step's clean and adversarial forwards update
BatchNorm's running statistics, the same in every base objective and in AAD, so that AAD is
measured against a base with the statistics it uses itself."""
from __future__ import annotations

from typing import Callable, TypeVar

import torch
from torch import nn

from aadscale.errors import InputError
from aadscale.models.modes import frozen_running_stats, replayable_rng

BN_STATS = ("base", "clean", "adv", "both")
# "base": the forwards the base objective trains on (textbook Madry: adv; ALP and TRADES: both)
_BASE_BN = {"madry": "adv", "alp": "both", "trades": "both"}

C = TypeVar("C")
A = TypeVar("A")


def resolve_bn_stats(base: str, bn_stats: str) -> str:
    """``clean``, ``adv`` or ``both``: ``bn_stats`` with ``base`` replaced by the forwards ``base`` trains on."""
    if bn_stats not in BN_STATS:
        raise InputError(f"bn_stats={bn_stats!r} must be one of {list(BN_STATS)}")
    return _BASE_BN[base] if bn_stats == "base" else bn_stats


def paired_forwards(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, bn_stats: str,
                    clean_forward: Callable[[torch.Tensor], C],
                    adv_forward: Callable[[torch.Tensor], A]) -> tuple[C, A]:
    """``(clean_forward(x), adv_forward(x_adv))``, in that order, the second drawing the same dropout
    masks as the first; each updates the running statistics only if ``bn_stats`` (resolved) names it.

    Every forward still normalises with its own batch statistics (train mode).
    """
    with replayable_rng(x.device) as replay:
        with frozen_running_stats(model, bn_stats == "adv"):
            clean = clean_forward(x)
        replay()
        with frozen_running_stats(model, bn_stats == "clean"):
            adv = adv_forward(x_adv)
    return clean, adv
