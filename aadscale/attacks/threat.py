"""The L-inf threat model as a step object: random start, ascent step, projection."""
from __future__ import annotations

import torch


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
