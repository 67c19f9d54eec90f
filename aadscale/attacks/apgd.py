"""APGD (Croce & Hein, 2020), L-inf: step-size halving at checkpoints, momentum 0.75, restarts."""
from __future__ import annotations

import math

import torch
from torch import nn

from aadscale.attacks.ascent import check_inputs
from aadscale.attacks.losses import ce_loss, dlr_loss
from aadscale.attacks.threat import LinfStep
from aadscale.errors import InputError
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
    loss_fn = LOSSES[loss]
    x = x.detach().float()
    y = y.to(x.device)
    marks = set(checkpoints(steps))
    with eval_mode(model), torch.autocast(x.device.type, enabled=False), torch.enable_grad():
        threat = LinfStep(x, eps, alpha=0.0)
        best_adv = x.clone()
        with torch.no_grad():  # an image the model already gets wrong counts as fooled
            fooled_any = model(x).argmax(1) != y
        top_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)

        def loss_grad(x_adv):
            x_adv = x_adv.detach().requires_grad_(True)
            logits = model(x_adv)
            value = loss_fn(logits, y)
            (grad,) = torch.autograd.grad(value.sum(), x_adv)
            return value.detach(), grad, logits.argmax(1) != y

        def record(x_adv, fooled):
            nonlocal fooled_any
            new = fooled & ~fooled_any
            best_adv[new] = x_adv[new]
            fooled_any = fooled_any | fooled

        for _ in range(restarts):
            x_adv = threat.random_perturb(x, generator)
            value, grad, fooled = loss_grad(x_adv)
            record(x_adv, fooled)
            eta = torch.full((x.shape[0], 1, 1, 1), 2.0 * eps, device=x.device)
            x_best, loss_best, grad_best = x_adv.clone(), value.clone(), grad.clone()
            x_prev, value_prev = x_adv.clone(), value.clone()
            increases = torch.zeros(x.shape[0], device=x.device)
            loss_best_at_mark, reduced_at_mark = loss_best.clone(), torch.zeros_like(fooled)
            last_mark = 0
            for i in range(1, steps + 1):
                a = 1.0 if i == 1 else momentum
                z = threat.project(x_adv + eta * grad.sign())
                x_new = threat.project(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev))
                x_prev, x_adv = x_adv, x_new
                value, grad, fooled = loss_grad(x_adv)
                record(x_adv, fooled)
                increases += (value > value_prev).float()
                value_prev = value
                better = value > loss_best
                x_best[better], grad_best[better] = x_adv[better], grad[better]
                loss_best = torch.where(better, value, loss_best)
                if i in marks:
                    oscillating = increases < rho * (i - last_mark)
                    stalled = ~reduced_at_mark & (loss_best <= loss_best_at_mark)
                    reduce = oscillating | stalled
                    eta[reduce] /= 2
                    x_adv[reduce], grad[reduce] = x_best[reduce], grad_best[reduce]
                    reduced_at_mark, loss_best_at_mark = reduce, loss_best.clone()
                    increases.zero_()
                    last_mark = i
            take = ~fooled_any & (loss_best > top_loss)  # not fooled: keep the highest loss
            best_adv[take] = x_best[take]
            top_loss = torch.where(take, loss_best, top_loss)
    return best_adv
