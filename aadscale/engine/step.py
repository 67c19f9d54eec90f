"""One training step's maths: the training attack (eval mode, attack.precision) then the objective (train mode)."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from aadscale.attacks.loop import run_attack
from aadscale.attacks.standard import ce_objective, least_likely_objective
from aadscale.config import AttackConfig
from aadscale.precision import autocast_dtype


def training_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: AttackConfig,
                    generator: torch.Generator | None = None) -> torch.Tensor | None:
    """The adversarial twin of the batch for training (None for ``attack.name=none``).

    The same attacks as ``attacks.pgd`` / ``fgsm`` / ``step_ll`` with the model in eval mode;
    their forwards run in float32, or under autocast for ``attack.precision`` bf16/fp16 (the
    evaluation attacks never do). Only the final iterate is kept: training needs no restarts.
    """
    alpha = cfg.alpha or None
    if cfg.name == "none":
        return None
    common = dict(eps=cfg.eps, restarts=1, keep_best=False, generator=generator,
                  dtype=autocast_dtype(cfg.precision))
    if cfg.name == "pgd":
        return run_attack(model, x, y, ce_objective(model, y), alpha=alpha, steps=cfg.steps,
                          random_start=True, **common)
    if cfg.name == "fgsm_rs":  # Wong et al.: random start, one step of 1.25 eps
        return run_attack(model, x, y, ce_objective(model, y), alpha=alpha or 1.25 * cfg.eps, steps=1,
                          random_start=True, **common)
    if cfg.name == "step_ll":
        return run_attack(model, x, y, least_likely_objective(model, x, y), alpha=alpha,
                          steps=cfg.steps, random_start=False, **common)
    raise ValueError(f"attack.name={cfg.name!r} must be pgd, fgsm_rs, step_ll or none")


def compute_loss(model: nn.Module, objective, x: torch.Tensor, y: torch.Tensor,
                 x_adv: torch.Tensor | None, precision: str) -> dict[str, torch.Tensor]:
    """The objective's loss dict, its forwards under autocast for bf16/fp16 (weights stay float32)."""
    dtype = autocast_dtype(precision)
    ctx = torch.autocast(x.device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    with ctx:
        out = objective(model, x, y, x_adv)
    out["loss"] = out["loss"].float()
    return out
