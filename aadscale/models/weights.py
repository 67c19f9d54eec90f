"""Weights into a model: reading a file safely and loading a state_dict with an error that says what to fix."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from aadscale.errors import InputError


def read_weights(path: str | Path) -> dict:
    """A ``.safetensors`` file, or a file saved by torch read with ``weights_only=True`` (an engine
    export is a dict holding ``"model"`` and ``"config"``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"weights file {str(path)!r} not found; give a path to a state_dict file")
    kind = "safetensors" if path.suffix == ".safetensors" else "weights-only torch"
    try:
        if kind == "safetensors":  # the hub's format (timm models): tensors only, nothing executed
            import safetensors.torch
            obj = safetensors.torch.load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch and safetensors raise several types for foreign or unsafe files
        raise InputError(f"{path}: cannot be read as a {kind} file ({err})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a dict (state_dict or {{'model', 'config'}}), "
                         f"got {type(obj).__name__}")
    return obj


def load_state(model: nn.Module, state: dict, where: str) -> None:
    """Load ``state`` (of the PixelModel, of its bare network, or DDP's ``module.`` keys), strictly."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    target = model if any(k.startswith("net.") for k in state) else getattr(model, "net", model)
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as err:  # missing, unexpected or misshapen tensors
        first = str(err).splitlines()[0]
        raise InputError(f"{where}: the state_dict does not fit the model ({first}); was it saved "
                         "from the same architecture and class count (--model / --num-classes, "
                         "or the checkpoint's config)?") from None
