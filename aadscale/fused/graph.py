"""Capture ``fn(x, y, generator)`` once as a CUDA graph with static buffers, then replay it."""
from __future__ import annotations

from typing import Any, Callable

import torch

from aadscale.errors import InputError

Outputs = Any  # what fn returns: a NamedTuple of tensors (or None entries)


def _clone(out: Outputs) -> Outputs:
    return type(out)(*(t.clone() if t is not None else None for t in out))


class CapturedCall:
    """``fn`` recorded for one input shape; ``__call__`` copies new inputs in, replays, copies outputs out.

    The generator is registered with the graph, so replay ``i`` draws what eager call ``i``
    would from the same generator state (its offset advances on every replay); the warm-up
    runs' draws are undone. Weights, BatchNorm buffers and the generator are read through
    their addresses: the caller must re-capture if any of them is reallocated.
    """

    def __init__(self, fn: Callable[..., Outputs], x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator | None, *, warmup: int = 3, pool=None) -> None:
        if x.device.type != "cuda":
            raise InputError(f"CUDA-graph capture needs CUDA inputs, got device {x.device}")
        device = x.device
        self.fn, self.generator = fn, generator
        self.x, self.y = x.detach().clone(), y.detach().clone()
        rng = generator if generator is not None else torch.cuda.default_generators[device.index or 0]
        state = rng.get_state()
        # warm-up on a side stream: autograd and cuDNN set themselves up outside the capture
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                fn(self.x, self.y, generator)
        torch.cuda.current_stream(device).wait_stream(side)
        torch.cuda.synchronize(device)
        rng.set_state(state)  # the warm-up draws are not part of the run's random stream
        self.graph = torch.cuda.CUDAGraph()
        if generator is not None:  # the default generator is registered by capture itself
            self.graph.register_generator_state(generator)
        with torch.cuda.graph(self.graph, pool=pool):
            self.out = fn(self.x, self.y, generator)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> Outputs:
        self.x.copy_(x)
        self.y.copy_(y)
        self.graph.replay()
        return _clone(self.out)  # the static outputs are overwritten by the next replay
