"""Precision names of the config (fp32, bf16, fp16) and the autocast dtype each one stands for."""
from __future__ import annotations

import torch

from aadscale.errors import InputError

AUTOCAST: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of ``precision``; None for fp32 (no autocast)."""
    if precision not in AUTOCAST:
        raise InputError(f"precision {precision!r} must be one of {list(AUTOCAST)}")
    return AUTOCAST[precision]
