"""Memory-format names of the config (contiguous NCHW, channels_last NHWC) and what ``auto`` picks."""
from __future__ import annotations

import torch

from aadscale.errors import InputError

MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
CHOICES = ("auto", *MEMORY_FORMATS)


def resolve_memory_format(name: str, device: torch.device | str) -> str:
    """The format that runs: ``auto`` is channels_last on CUDA, contiguous elsewhere."""
    if name not in CHOICES:
        raise InputError(f"memory format {name!r} must be one of {list(CHOICES)}")
    if name == "auto":
        return "channels_last" if torch.device(device).type == "cuda" else "contiguous"
    return name

