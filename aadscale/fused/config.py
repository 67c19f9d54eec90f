"""The fused step for the engine's training attack (``attack.*`` plus the step mode)."""
from __future__ import annotations

import logging

from torch import nn

from aadscale.config import AttackConfig
from aadscale.fused.step import AdversarialStep

log = logging.getLogger("aadscale.fused")

FUSED_ATTACKS = ("pgd", "fgsm_rs")


def from_attack_config(model: nn.Module, cfg: AttackConfig, mode: str = "eager",
                       cams: bool = False) -> AdversarialStep | None:
    """The step equal to ``engine.step.training_attack`` for pgd and fgsm_rs; None where that one must run.

    None for ``attack.name=none`` and, in eager or auto mode, for attacks the fused step
    does not cover (step_ll); ValueError if graph or compile mode is asked for those.
    """
    if cfg.name == "none":
        return None
    if cfg.name not in FUSED_ATTACKS:
        if mode in ("graph", "compile"):
            raise ValueError(f"step mode {mode!r} covers attack.name in {list(FUSED_ATTACKS)}, "
                             f"not {cfg.name!r}; use step mode 'eager' or 'auto' for it")
        if mode == "auto":
            log.info("attack %s has no fused step: it runs eagerly", cfg.name)
        return None
    if cfg.name == "pgd":
        return AdversarialStep(model, eps=cfg.eps, alpha=cfg.alpha or None, steps=cfg.steps,
                               mode=mode, cams=cams, precision=cfg.precision)
    # fgsm_rs (Wong et al.) is PGD-1 from a random start with a 1.25 eps step
    return AdversarialStep(model, eps=cfg.eps, alpha=cfg.alpha or 1.25 * cfg.eps, steps=1,
                           mode=mode, cams=cams, precision=cfg.precision)
