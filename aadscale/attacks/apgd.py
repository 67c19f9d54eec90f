"""APGD (Croce & Hein, 2020), L-inf: step-size halving at checkpoints, momentum 0.75, restarts."""
from __future__ import annotations

import functools
import math
from typing import Callable

import torch
from torch import nn

from aadscale.attacks.ascent import check_inputs
from aadscale.attacks.losses import ce_loss, dlr_loss
from aadscale.attacks.threat import LinfStep
from aadscale.errors import InputError
from aadscale.labels import hard_labels
from aadscale.models.modes import eval_mode


def checkpoints(steps: int) -> list[int]:
    """Iterations where the step size may be halved: p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), times ``steps``, rounded up."""
    if steps < 1:
        raise InputError(f"steps={steps} must be >= 1")
    p, out = [0.0, 0.22], []
    while p[-1] <= 1:
        w = math.ceil(p[-1] * steps)
        if 0 < w <= steps and (not out or w > out[-1]):
            out.append(w)
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return out


LOSSES = {"ce": ce_loss, "dlr": dlr_loss}
LossGrad = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 100,
         restarts: int = 1, loss: str = "ce", rho: float = 0.75, momentum: float = 0.75,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """APGD-CE (or APGD-DLR) in the L-inf ball: the worst point found per image.

    Step size starts at 2 * eps per image. At each checkpoint w_j it is halved (and the
    iterate restarts from the best point) when fewer than ``rho`` of the steps since
    w_{j-1} raised the loss, or when neither the step size nor the best loss changed
    since the last checkpoint. Updates use momentum: x <- P(x + a (z - x) + (1 - a)(x - x_prev))
    with z = P(x + eta sign(grad)) and a = ``momentum`` (1 at the first step). Across
    restarts (uniform random starts) an image that is fooled, the clean image included,
    stays fooled; otherwise the point of highest loss is returned.
    """
    check_inputs(x, y, eps)
    if loss not in LOSSES:
        raise InputError(f"loss={loss!r} must be one of {sorted(LOSSES)}")
    if steps < 1 or restarts < 1:
        raise InputError(f"steps={steps} and restarts={restarts} must be >= 1")
    x = x.detach().float()
    y = y.to(x.device)
    marks = set(checkpoints(steps))
    with eval_mode(model), torch.autocast(x.device.type, enabled=False), torch.enable_grad():
        threat = LinfStep(x, eps, alpha=0.0)
        with torch.no_grad():  # an image the model already gets wrong counts as fooled
            found = _Found(x, model(x).argmax(1) != y)
        loss_grad = functools.partial(loss_and_grad, model, LOSSES[loss], y)
        for _ in range(restarts):
            x_best, loss_best = apgd_run(loss_grad, threat, threat.random_perturb(x, generator), found,
                                         eps=eps, steps=steps, marks=marks, rho=rho, momentum=momentum)
            found.keep_highest(x_best, loss_best)
    return found.adv


def loss_and_grad(model: nn.Module, loss_fn: Callable, y: torch.Tensor,
                  x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The per-image loss at ``x_adv``, its gradient in the input, and which images it fools."""
    x_adv = x_adv.detach().requires_grad_(True)
    logits = model(x_adv)
    value = loss_fn(logits, y)
    (grad,) = torch.autograd.grad(value.sum(), x_adv)
    return value.detach(), grad, logits.argmax(1) != hard_labels(y)


def apgd_run(loss_grad: LossGrad, threat: LinfStep, x_adv: torch.Tensor, found: _Found | None, *,
             eps: float, steps: int, marks: set[int], rho: float,
             momentum: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One APGD run from ``x_adv``: its highest-loss point and loss per image (every iterate is
    also offered to ``found``, if given, which keeps the first one that fools each image)."""
    value, grad, fooled = loss_grad(x_adv)
    if found is not None:
        found.record(x_adv, fooled)
    size = _StepSize(eps, value)
    x_best, loss_best, grad_best = x_adv.clone(), value.clone(), grad.clone()
    x_prev, value_prev = x_adv.clone(), value.clone()
    for i in range(1, steps + 1):
        a = 1.0 if i == 1 else momentum
        z = threat.project(x_adv + size.eta * grad.sign())
        x_prev, x_adv = x_adv, threat.project(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev))
        value, grad, fooled = loss_grad(x_adv)
        if found is not None:
            found.record(x_adv, fooled)
        size.increases += (value > value_prev).float()
        value_prev = value
        better = value > loss_best
        x_best[better], grad_best[better] = x_adv[better], grad[better]
        loss_best = torch.where(better, value, loss_best)
        if i in marks:
            reduce = size.checkpoint(i, loss_best, rho)
            x_adv[reduce], grad[reduce] = x_best[reduce], grad_best[reduce]
    return x_best, loss_best


class _StepSize:
    """One run's per-image step size ``eta`` (2 eps at first) and what its checkpoints compare."""

    def __init__(self, eps: float, loss: torch.Tensor) -> None:
        n, device = loss.shape[0], loss.device
        self.eta = torch.full((n, 1, 1, 1), 2.0 * eps, device=device)
        self.increases = torch.zeros(n, device=device)  # steps since the last checkpoint that raised the loss
        self.loss_best_at_mark = loss.clone()
        self.reduced_at_mark = torch.zeros(n, dtype=torch.bool, device=device)
        self.last_mark = 0

    def checkpoint(self, i: int, loss_best: torch.Tensor, rho: float) -> torch.Tensor:
        """Halve the step of the images that oscillate (fewer than ``rho`` of the steps since the
        last checkpoint raised the loss) or stall (neither their step nor their best loss changed
        since then); return them: they go back to their best point."""
        oscillating = self.increases < rho * (i - self.last_mark)
        stalled = ~self.reduced_at_mark & (loss_best <= self.loss_best_at_mark)
        reduce = oscillating | stalled
        self.eta[reduce] /= 2
        self.reduced_at_mark, self.loss_best_at_mark = reduce, loss_best.clone()
        self.increases.zero_()
        self.last_mark = i
        return reduce


class _Found:
    """What apgd returns per image: the first point that fools the model (the clean image when
    it already does), else the highest-loss point over restarts."""

    def __init__(self, x: torch.Tensor, fooled: torch.Tensor) -> None:
        self.adv, self.fooled = x.clone(), fooled
        self.top_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)

    def record(self, x_adv: torch.Tensor, fooled: torch.Tensor) -> None:
        """Keep ``x_adv`` for the images it is the first to fool."""
        new = fooled & ~self.fooled
        self.adv[new] = x_adv[new]
        self.fooled = self.fooled | fooled

    def keep_highest(self, x_best: torch.Tensor, loss_best: torch.Tensor) -> None:
        """Keep a run's best point for the images still not fooled whose top loss it beats."""
        take = ~self.fooled & (loss_best > self.top_loss)
        self.adv[take] = x_best[take]
        self.top_loss = torch.where(take, loss_best, self.top_loss)
