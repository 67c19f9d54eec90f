"""Mixup / CutMix on the device batch, after whichever loader (timm's ``Mixup``): soft targets out."""
from __future__ import annotations

from aadscale.errors import InputError


def build_mix(mixup: float, cutmix: float, *, prob: float, switch: float, num_classes: int, micro_batch: int):
    """timm's ``Mixup`` in batch mode (one lambda per batch, the batch mixed with its reverse), or None
    when ``mixup`` and ``cutmix`` are both 0. Its targets are the mixed one-hot labels, unsmoothed:
    ``objective.label_smoothing`` smooths them in the loss (the same targets as timm's smoothed
    ones), and Grad-CAM explains the mixed labels alone."""
    if not (mixup or cutmix):
        return None
    if micro_batch % 2:
        raise InputError(f"Mixup/CutMix pair each image with another of its batch, so the batch per rank "
                         f"must be even, got {micro_batch}; change data.batch_size (or the rank count)")
    from timm.data import Mixup
    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=prob, switch_prob=switch, mode="batch",
                 label_smoothing=0.0, num_classes=num_classes)
