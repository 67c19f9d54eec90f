"""Train/eval mode helpers: eval mode with each module's own mode restored, and train-mode
forwards that leave BatchNorm's running statistics alone."""
from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module in eval mode, then restore each one's own previous mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, was_training in modes:
            m.training = was_training


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
