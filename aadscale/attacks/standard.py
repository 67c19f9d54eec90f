"""FGSM, StepLL, Iter-StepLL, PGD and CW: one loop, different losses and defaults."""
from __future__ import annotations

import torch
from torch import nn

from aadscale.attacks.ascent import check_inputs, run_attack
from aadscale.attacks.losses import ce_loss, cw_loss, least_likely_loss
from aadscale.models.modes import eval_mode


def ce_objective(model: nn.Module, y: torch.Tensor):
    """x_adv -> (CE on the true label, logits)."""
    def objective(x_adv):
        logits = model(x_adv)
        return ce_loss(logits, y), logits
    return objective


def cw_objective(model: nn.Module, y: torch.Tensor, kappa: float):
    """x_adv -> (CW margin, logits)."""
    def objective(x_adv):
        logits = model(x_adv)
        return cw_loss(logits, y, kappa), logits
    return objective


def least_likely_objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """x_adv -> (minus CE on the clean image's least-likely class, logits)."""
    check_inputs(x, y, 0.0)
    with eval_mode(model), torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        y_ll = model(x.float()).argmin(1)

    def objective(x_adv):
        logits = model(x_adv)
        return least_likely_loss(logits, y_ll), logits
    return objective


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float | None = None,
         steps: int = 1, random_start: bool = False, restarts: int = 1, keep_best: bool = False,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """FGSM: x + eps * sign(grad CE); ``random_start=True`` gives FGSM-RS (alpha defaults to eps).

    PGD with FGSM's defaults: one step, no random start, the last iterate.
    """
    return pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, random_start=random_start, restarts=restarts,
               keep_best=keep_best, generator=generator)


def step_ll(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float | None = None,
            steps: int = 1, random_start: bool = False, restarts: int = 1, keep_best: bool = False,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """StepLL (eq. 4): one step of size eps toward the least-likely class."""
    return run_attack(model, x, y, least_likely_objective(model, x, y), eps=eps, alpha=alpha,
                      steps=steps, random_start=random_start, restarts=restarts,
                      keep_best=keep_best, generator=generator)


def iter_step_ll(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                 alpha: float | None = None, steps: int = 10, random_start: bool = False,
                 restarts: int = 1, keep_best: bool = True,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Iter-StepLL: ``steps`` StepLL steps of size alpha, projected to the eps ball."""
    return step_ll(model, x, y, eps=eps, alpha=alpha, steps=steps, random_start=random_start,
                   restarts=restarts, keep_best=keep_best, generator=generator)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float | None = None,
        steps: int = 10, random_start: bool = True, restarts: int = 1, keep_best: bool = True,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """PGD-k (Madry et al.): uniform random start, k signed steps on CE, projection after each."""
    return run_attack(model, x, y, ce_objective(model, y), eps=eps, alpha=alpha, steps=steps,
                      random_start=random_start, restarts=restarts, keep_best=keep_best,
                      generator=generator)


def cw(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float | None = None,
       steps: int = 10, random_start: bool = True, restarts: int = 1, keep_best: bool = True,
       kappa: float = 50.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """CW-k: the PGD loop on the Carlini-Wagner margin loss (L-inf, as in Madry et al.)."""
    return run_attack(model, x, y, cw_objective(model, y, kappa), eps=eps, alpha=alpha, steps=steps,
                      random_start=random_start, restarts=restarts, keep_best=keep_best,
                      generator=generator)
