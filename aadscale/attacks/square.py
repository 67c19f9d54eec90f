"""Square Attack (Andriushchenko et al., ECCV 2020), L-inf: random search with square updates, no gradients."""
from __future__ import annotations

import math

import torch
from torch import nn

from aadscale.attacks.ascent import check_inputs
from aadscale.attacks.losses import cw_loss
from aadscale.errors import InputError
from aadscale.models.modes import eval_mode

# iterations (on a 10,000-query scale) after which the square's area fraction p is halved
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(i: int, queries: int, p_init: float = 0.8) -> float:
    """The share of the image a square covers at iteration ``i``: ``p_init`` halved at the
    paper's iterations, rescaled from 10,000 queries to ``queries``."""
    it = int(i / queries * 10_000)
    return p_init / 2 ** sum(it > h for h in _HALVINGS)


def _signs(shape: tuple[int, ...], generator: torch.Generator | None, device) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=generator, device=device).float() * 2 - 1


def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, queries: int = 1000,
           p_init: float = 0.8, restarts: int = 1,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """The worst point per image found by ``queries`` forward passes of random square updates.

    Gradient-free, so it is not fooled by masked or obfuscated gradients: a defense that
    resists PGD but not Square masks its gradients. Starts from vertical stripes of +-eps;
    each iteration redraws one square window (the same place for the batch, +-2 eps per
    channel) and keeps it for the images whose margin ``max_{j!=y} f_j - f_y`` improved.
    Images already fooled (the clean image included) stop being queried. Eval mode, float32.
    """
    check_inputs(x, y, eps)
    if queries < 1 or restarts < 1:
        raise InputError(f"queries={queries} and restarts={restarts} must be >= 1")
    if not 0 < p_init <= 1:
        raise InputError(f"p_init={p_init} must be in (0, 1]")
    x = x.detach().float()
    y = y.to(x.device)
    n, c, h, w = x.shape
    lower, upper = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)

    def margin(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cw_loss(model(images), labels, kappa=float("inf"))  # > 0: fooled

    with eval_mode(model), torch.autocast(x.device.type, enabled=False), torch.no_grad():
        best_x, best = x.clone(), margin(x, y)
        for _ in range(restarts):
            todo = (best <= 0).nonzero().squeeze(1)  # images not fooled yet
            if todo.numel() == 0:
                break
            x0, y0, lo, hi = x[todo], y[todo], lower[todo], upper[todo]
            cur = torch.max(torch.min(x0 + eps * _signs((len(todo), c, 1, w), generator, x.device), hi), lo)
            cur_margin = margin(cur, y0)
            for i in range(queries - 1):
                active = (cur_margin <= 0).nonzero().squeeze(1)
                if active.numel() == 0:
                    break
                p = square_fraction(i, queries, p_init)
                s = min(max(int(round(math.sqrt(p * h * w))), 1), h - 1)
                r, q = torch.randint(0, h - s + 1, (2,), generator=generator, device=x.device).tolist()
                cand = cur[active].clone()
                cand[:, :, r:r + s, q:q + s] += _signs((1, c, 1, 1), generator, x.device) * 2 * eps
                cand = torch.max(torch.min(cand, hi[active]), lo[active])
                m = margin(cand, y0[active])
                better = m > cur_margin[active]
                cur[active[better]], cur_margin[active[better]] = cand[better], m[better]
            take = cur_margin > best[todo]
            best_x[todo[take]], best[todo[take]] = cur[take], cur_margin[take]
    return best_x
