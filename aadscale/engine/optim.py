"""Optimisers and learning-rate schedules from the typed config (schedules are pure step -> factor)."""
from __future__ import annotations

import math
import torch
from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from torch import nn

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


def base_lr(cfg: OptimConfig, batch_size: int) -> float:
    """The learning rate at ``data.batch_size``: ``optim.lr``, or with ``lr_base_size`` > 0 the lr per
    that many images scaled linearly (timm's rule; Goyal et al. 2017)."""
    return cfg.lr * batch_size / cfg.lr_base_size if cfg.lr_base_size else cfg.lr


def param_groups(cfg: OptimConfig, model: nn.Module) -> list[dict]:
    """timm's parameter groups: weight decay off for 1-D parameters and the network's
    ``no_weight_decay()`` names (``no_decay_1d``), and an ``lr_scale`` per layer (``layer_decay``)."""
    net = getattr(model, "net", model)  # a PixelModel's network: timm's names and groupings are its own
    skip = set(net.no_weight_decay()) if cfg.no_decay_1d and hasattr(net, "no_weight_decay") else set()
    if cfg.layer_decay:
        groups = param_groups_layer_decay(net, cfg.weight_decay, skip, weight_decay_exclude_1d=cfg.no_decay_1d,
                                          layer_decay=cfg.layer_decay)
    elif cfg.no_decay_1d:
        groups = param_groups_weight_decay(net, cfg.weight_decay, no_weight_decay_list=skip)
    else:
        groups = [{"params": [p for p in net.parameters() if p.requires_grad], "weight_decay": cfg.weight_decay}]
    inside = {id(p) for p in net.parameters()}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in inside]
    return groups + ([{"params": rest, "weight_decay": cfg.weight_decay}] if rest else [])


def build_optimizer(cfg: OptimConfig, model: nn.Module, batch_size: int) -> torch.optim.Optimizer:
    """SGD with momentum, AdamW or RMSprop (the paper's ImageNet choice) from ``cfg``, over
    ``param_groups``; each group's lr is ``base_lr`` times its ``lr_scale``."""
    lr = base_lr(cfg, batch_size)
    groups = param_groups(cfg, model)
    for group in groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    kernels = implementation_kwargs(cfg)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0, **kernels)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), **kernels)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, momentum=cfg.momentum, alpha=0.9, eps=1.0, **kernels)
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
