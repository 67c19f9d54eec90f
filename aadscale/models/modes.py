"""Train/eval mode helpers: eval mode with each module's own mode restored, train-mode
forwards that leave BatchNorm's running statistics alone, and train-mode forwards that draw
the same dropout masks."""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from aadscale.errors import InputError


@contextlib.contextmanager
def _every_module(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    modes = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield model
    finally:
        for m, was_training in modes:
            m.training = was_training


def eval_mode(model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
    """Put every module in eval mode, then restore each one's own previous mode."""
    return _every_module(model, False)


ATTACK_MODES = ("eval", "train")


@contextlib.contextmanager
def attack_mode(model: nn.Module, mode: str = "eval") -> Iterator[nn.Module]:
    """The model as a training attack sees it (``attack.model_mode``): ``eval`` (``eval_mode``), or
    ``train``: every module in train mode (batch statistics, dropout) with BatchNorm's running
    statistics left alone, each module's own mode restored after."""
    if mode not in ATTACK_MODES:
        raise InputError(f"attack mode {mode!r} must be one of {list(ATTACK_MODES)}")
    with _every_module(model, mode == "train"), frozen_running_stats(model, mode == "train"):
        yield model


@contextlib.contextmanager
def frozen_running_stats(model: nn.Module, frozen: bool = True) -> Iterator[nn.Module]:
    """Inside, BatchNorm layers in train mode still normalise with batch statistics but do not
    update their running statistics (or ``num_batches_tracked``); ``frozen=False`` is a no-op.

    Every train-mode forward moves the running statistics, whatever its loss is for; a
    forward on images the model is not tested on (masked images, a scoring pass) must not.
    """
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats] \
        if frozen else []
    for m in layers:
        m.track_running_stats = False  # train mode: F.batch_norm gets no running buffers
    try:
        yield model
    finally:
        for m in layers:
            m.track_running_stats = True


@contextlib.contextmanager
def replayable_rng(device: torch.device) -> Iterator[Callable[[], None]]:
    """Yields ``replay()``, which rewinds ``device``'s default generator (CUDA's or the CPU's) to its
    state on entry, so that a second train-mode forward draws the same dropout masks as the first.

    Passes of the same shapes end where one pass would have. On CUDA a copy of the entry state
    is swapped in by reference (``graphsafe_set_state``) and the live state swapped back on
    exit: nothing is read from the device. Inside a CUDA-graph capture torch copies no
    generator state: nothing is replayed there, with a warning.
    """
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        warnings.warn("replayable_rng inside a CUDA-graph capture: the passes draw independent "
                      "dropout masks", stacklevel=3)
        yield lambda: None
    elif device.type == "cuda":
        generator = torch.cuda.default_generators[device.index if device.index is not None
                                                  else torch.cuda.current_device()]
        start, live = generator.clone_state(), generator.graphsafe_get_state()
        try:
            yield lambda: generator.graphsafe_set_state(start.clone_state())
        finally:
            generator.graphsafe_set_state(live)
    else:
        start = torch.default_generator.get_state()
        yield lambda: torch.default_generator.set_state(start)
