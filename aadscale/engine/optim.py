"""Optimisers and learning-rate schedules from the typed config (schedules are pure step -> factor)."""
from __future__ import annotations

import math
from typing import Iterable

import torch

from aadscale.config import OptimConfig, check_fused_optimizer
from aadscale.errors import InputError

# optim.implementation -> the keyword arguments torch's optimisers take for it
IMPLEMENTATIONS = {"auto": {}, "foreach": {"foreach": True}, "fused": {"fused": True},
                   "loop": {"foreach": False}}


def implementation_kwargs(cfg: OptimConfig) -> dict[str, bool]:
    """``foreach`` / ``fused`` for torch's optimiser from ``optim.implementation``."""
    if cfg.implementation not in IMPLEMENTATIONS:
        raise InputError(f"optim.implementation={cfg.implementation!r} must be one of {list(IMPLEMENTATIONS)}")
    check_fused_optimizer(cfg)
    return IMPLEMENTATIONS[cfg.implementation]


def build_optimizer(cfg: OptimConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """SGD with momentum, AdamW or RMSprop (the paper's ImageNet choice) from ``cfg``."""
    params = [p for p in params if p.requires_grad]
    kernels = implementation_kwargs(cfg)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.momentum > 0, **kernels)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kernels)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, alpha=0.9, eps=1.0,
                                   weight_decay=cfg.weight_decay, **kernels)
    raise InputError(f"optim.name={cfg.name!r} must be sgd, adamw or rmsprop")


def lr_factor(cfg: OptimConfig, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier of the base learning rate after ``step`` optimiser steps (warm-up included).

    ``paper``: x0.94 every 2 epochs (the paper's ImageNet schedule); ``step``: x decay_rate
    every decay_epochs; ``cosine``: to 0 over the run; ``constant``.
    """
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    epoch = step / max(steps_per_epoch, 1)
    if cfg.schedule == "constant":
        factor = 1.0
    elif cfg.schedule == "paper":
        factor = 0.94 ** math.floor(epoch / 2)
    elif cfg.schedule == "step":
        factor = cfg.decay_rate ** math.floor(epoch / cfg.decay_epochs) if cfg.decay_epochs else 1.0
    elif cfg.schedule == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * min(step / max(total_steps, 1), 1.0)))
    else:
        raise InputError(f"optim.schedule={cfg.schedule!r} is not known")
    return warm * factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(cfg, step, steps_per_epoch, total_steps))
