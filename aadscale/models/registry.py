"""Model registry: ``@register_model`` builders looked up by name."""
from __future__ import annotations

import fnmatch
import warnings
from typing import Callable

from torch import nn

from aadscale.errors import InputError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a builder ``fn(num_classes, in_channels, dropout) -> (net, cam_layer)`` by its name."""
    if fn.__name__ in _REGISTRY:
        warnings.warn(f"model {fn.__name__!r} registered twice; the later one wins", stacklevel=2)
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style wildcard."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered under ``name``; InputError listing the known names otherwise."""
    if name not in _REGISTRY:
        raise InputError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REGISTRY[name]
