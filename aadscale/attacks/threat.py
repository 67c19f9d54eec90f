"""The L-inf threat model as a step object: random start, ascent step, projection."""
from __future__ import annotations

import torch

from aadscale.errors import InputError


def check_eps(eps: float, where: str = "eps") -> float:
    """``eps`` if it is a radius in pixel space, [0, 1]; InputError naming ``where`` otherwise."""
    if not isinstance(eps, (int, float)) or eps != eps:
        raise InputError(f"{where}={eps!r} must be a number in [0, 1] (pixel space, e.g. 8/255)")
    if eps < 0 or eps > 1:
        raise InputError(f"{where}={eps} must be {'>= 0' if eps < 0 else '<= 1'} (pixel space, e.g. 8/255)")
    return float(eps)


def parse_eps(text: str | float, where: str = "eps") -> float:
    """``"4/255"``, ``"0.3"`` or a number -> float in [0, 1]; InputError naming ``where`` otherwise."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return check_eps(float(text), where)
    num, sep, den = str(text).partition("/")
    try:
        value = float(num) / (float(den) if sep else 1.0)
    except (ValueError, ZeroDivisionError):
        raise InputError(f"{where}={text!r} is not a number; write e.g. 4/255 or 0.03") from None
    return check_eps(value, where)


class LinfStep:
    """L-inf ball of radius ``eps`` around ``x0`` intersected with the [0, 1] pixel box."""

    def __init__(self, x0: torch.Tensor, eps: float, alpha: float) -> None:
        self.x0, self.eps, self.alpha = x0, eps, alpha
        self.lower = (x0 - eps).clamp(0, 1)
        self.upper = (x0 + eps).clamp(0, 1)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest point of the ball and the box (both are boxes, so a clamp)."""
        return torch.max(torch.min(x, self.upper), self.lower)

    def step(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """One signed-gradient ascent step, projected."""
        return self.project(x + self.alpha * grad.sign())

    def random_perturb(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A uniform point of the ball around ``x``, projected."""
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return self.project(x + (2 * noise - 1) * self.eps)
