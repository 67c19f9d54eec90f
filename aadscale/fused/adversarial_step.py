"""``AdversarialStep``: the fused PGD + Grad-CAM step in one of three execution modes."""
from __future__ import annotations

import functools
import itertools
import logging
import time

import torch
from torch import nn

from aadscale.attacks.ascent import check_pixel_range, check_shapes, default_alpha
from aadscale.errors import InputError
from aadscale.fused.attack import StepOutput, clean_adv_cams, pgd_last, pgd_with_cams
from aadscale.fused.graph import CapturedCall
from aadscale.precision import autocast_dtype

log = logging.getLogger("aadscale.fused")

MODES = ("eager", "graph", "compile", "auto")
OTHER_SHAPES = ("capture", "eager")


def is_zero3_partitioned(model: nn.Module) -> bool:
    """True if DeepSpeed ZeRO-3 partitions the parameters (they are gathered by hooks on every forward)."""
    return any(hasattr(p, "ds_status") for p in model.parameters())


def resolve_mode(mode: str, device: torch.device, zero3: bool = False) -> str:
    """The mode that runs: ``auto`` is graph on CUDA (eager under ZeRO-3) and eager elsewhere."""
    if mode not in MODES:
        raise InputError(f"step mode {mode!r} must be one of {list(MODES)}")
    if mode == "graph" and device.type != "cuda":
        raise InputError(f"step mode 'graph' records CUDA graphs but the model is on {device}; "
                         "use 'eager' (or 'auto', which picks eager off CUDA)")
    if mode == "graph" and zero3:
        raise InputError("step mode 'graph' cannot capture a ZeRO-3 model (its parameters are "
                         "gathered by hooks on every forward); use 'eager' or train.zero_stage <= 2")
    if mode == "auto":
        return "graph" if device.type == "cuda" and not zero3 else "eager"
    return mode


class AdversarialStep:
    """PGD-k (random start, last iterate) and the eval-mode Grad-CAMs of x and x_adv, for training.

    ``mode``: ``eager`` (a plain call), ``graph`` (one CUDA graph per batch shape, static
    buffers, the generator registered with it), ``compile`` (``torch.compile`` of the PGD
    loop; the maps stay eager because the Grad-CAM hook needs the layer's output as a
    graph node) or ``auto`` (graph on CUDA, falling back to eager if capture fails; eager
    elsewhere). ``other_shapes``: a batch of a new shape is captured too (``capture``) or
    runs eagerly (``eager``; e.g. the smaller last batch). ``cams=False`` skips the maps.
    ``precision`` ``bf16``/``fp16`` runs the step's forwards under autocast (``attack.precision``,
    for a training attack only); ``fp32`` (default) in float32. ``model_mode``: the model's mode
    during PGD (``attack.model_mode``; the maps are always eval-mode). ``set_budget`` changes eps
    and the step size (an attack warm-up): graphs and compiled code are made again for them.

    The first call checks the pixel range at once (one device sync); later calls only record
    it on the device, and ``check_pixels()`` raises the same error for them where the caller
    syncs anyway (the engine: when it logs and when it saves).
    """

    def __init__(self, model: nn.Module, *, eps: float, steps: int, alpha: float | None = None,
                 mode: str = "eager", layer: str | None = None, cams: bool = True,
                 other_shapes: str = "capture", warmup: int = 3, precision: str = "fp32",
                 model_mode: str = "eval") -> None:
        if steps < 1:
            raise InputError(f"steps={steps} must be >= 1")
        alpha = default_alpha(eps, steps) if alpha is None else alpha
        if alpha <= 0 and eps > 0:
            raise InputError(f"alpha={alpha} must be > 0")
        if other_shapes not in OTHER_SHAPES:
            raise InputError(f"other_shapes={other_shapes!r} must be one of {list(OTHER_SHAPES)}")
        if warmup < 1:
            raise InputError(f"warmup={warmup} must be >= 1 (capture needs a warmed-up autograd)")
        self.model, self.cams, self.layer, self.steps, self.model_mode = model, cams, layer, steps, model_mode
        self.requested, self.other_shapes, self.warmup = mode, other_shapes, warmup
        device = next(model.parameters()).device
        self.mode = resolve_mode(mode, device, is_zero3_partitioned(model))
        self.dtype = autocast_dtype(precision)
        self._pixels: tuple[torch.Tensor, torch.Tensor] | None = None  # running (min, max) on the device
        self._pool = None
        self.set_budget(eps, alpha)
        log.info("adversarial step: mode %s (asked %s) on %s, PGD-%d, maps %s, %s, model in %s mode",
                 self.mode, mode, device, steps, "on" if cams else "off", precision, model_mode)

    def set_budget(self, eps: float, alpha: float) -> None:
        """Attack with radius ``eps`` and step ``alpha`` from the next call on (captured graphs and
        compiled code are dropped: the sizes are constants in them)."""
        self.eps = eps
        common = dict(eps=eps, alpha=alpha, steps=self.steps, dtype=self.dtype, mode=self.model_mode)
        self._pgd = functools.partial(pgd_last, self.model, **common)
        self._fn = functools.partial(pgd_with_cams, self.model, layer=self.layer, cams=self.cams, **common)
        self._compiled = torch.compile(self._pgd, dynamic=False) if self.mode == "compile" else None
        self._graphs: dict[tuple, CapturedCall] = {}
        self._weights: tuple[int, ...] = ()

    def __call__(self, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator | None = None) -> StepOutput:
        """The adversarial twin of ``(x, y)`` and, with ``cams``, both maps; ``generator`` seeds the start."""
        check_shapes(x, y, self.eps, soft=True)
        self._record_pixels(x)
        y = y.to(x.device)
        if self.mode == "graph":
            return self._graphed(x, y, generator)
        if self.mode == "compile":
            x_adv = self._compiled(x, y, generator=generator)
            cams = (clean_adv_cams(self.model, x, x_adv, y, self.layer, self.dtype) if self.cams
                    else (None, None))
            return StepOutput(x_adv, *cams)
        return self._eager(x, y, generator)

    def _record_pixels(self, x: torch.Tensor) -> None:
        lo, hi = torch.aminmax(x.detach())
        if self._pixels is None:
            check_pixel_range(lo, hi)  # the first batch: a clear error before any work
            self._pixels = lo, hi
        else:  # no sync in the hot path: torch.minimum/maximum keep a NaN for check_pixels
            self._pixels = torch.minimum(self._pixels[0], lo), torch.maximum(self._pixels[1], hi)

    def check_pixels(self) -> None:
        """Raise the pixel-range error if a batch so far had pixels outside [0, 1] or NaN (one device sync)."""
        if self._pixels is not None:
            check_pixel_range(*self._pixels)

    def _eager(self, x, y, generator) -> StepOutput:
        return self._fn(x, y, generator=generator)

    def _graphed(self, x, y, generator) -> StepOutput:
        weights = tuple(t.data_ptr() for t in itertools.chain(self.model.parameters(), self.model.buffers()))
        if weights != self._weights:  # a reallocated weight would be read at its old address
            if self._graphs:
                log.warning("model weights were reallocated: re-capturing the adversarial step")
            self._graphs.clear()
            self._weights = weights
        key = (tuple(x.shape), x.dtype, x.device)
        captured = self._graphs.get(key)
        if captured is not None and captured.generator is not generator:
            captured = None  # a graph is bound to the generator it was recorded with
        if captured is None:
            if self._graphs and self.other_shapes == "eager" and key not in self._graphs:
                return self._eager(x, y, generator)
            captured = self._capture(key, x, y, generator)
            if captured is None:
                return self._eager(x, y, generator)
        return captured(x, y)

    def _capture(self, key, x, y, generator) -> CapturedCall | None:
        start = time.perf_counter()
        try:
            captured = CapturedCall(lambda xs, ys, g: self._fn(xs, ys, generator=g), x, y, generator,
                                    warmup=self.warmup, pool=self._pool)
        except RuntimeError as err:
            if self.requested != "auto":
                raise RuntimeError(f"capturing the adversarial step as a CUDA graph failed ({err}); "
                                   "use step mode 'eager' or 'auto'") from err
            log.warning("CUDA-graph capture failed (%s): the adversarial step runs eagerly", err)
            self.mode = "eager"
            return None
        if self._pool is None:
            self._pool = captured.graph.pool()  # graphs of other shapes share one memory pool
        self._graphs[key] = captured
        log.info("captured the adversarial step for batch shape %s in %.2f s",
                 list(key[0]), time.perf_counter() - start)
        return captured
