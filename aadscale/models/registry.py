"""Model registry: ``@register_model`` builders looked up by name, and ``@register_family`` for
families of models named ``<family>/<name>`` (``timm/convnext_tiny``)."""
from __future__ import annotations

import fnmatch
import functools
import warnings
from typing import Callable, NamedTuple, Sequence

from torch import nn

from aadscale.errors import InputError

_REGISTRY: dict[str, Callable[..., tuple]] = {}
_FAMILIES: dict[str, Callable[..., Network]] = {}


class Network(NamedTuple):
    """What a builder returns: the network on normalised input, the dotted name of its Grad-CAM
    layer and, when the network has its own, the normalisation statistics (None: ``build``'s defaults)."""
    net: nn.Module
    cam_layer: str
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None


def register_model(fn: Callable[..., tuple]) -> Callable[..., tuple]:
    """Register a builder ``fn(num_classes, in_channels, dropout) -> (net, cam_layer)`` by its name."""
    if fn.__name__ in _REGISTRY:
        warnings.warn(f"model {fn.__name__!r} registered twice; the later one wins", stacklevel=2)
    _REGISTRY[fn.__name__] = fn
    return fn


def register_family(prefix: str) -> Callable[[Callable[..., Network]], Callable[..., Network]]:
    """Register ``fn(arch, num_classes, *, in_channels, dropout, pretrained, model_kwargs, cam_layer)
    -> Network`` as the builder of every model named ``<prefix>/<arch>``; it loads ``pretrained`` itself."""
    def register(fn: Callable[..., Network]) -> Callable[..., Network]:
        if prefix in _FAMILIES:
            warnings.warn(f"model family {prefix!r} registered twice; the later one wins", stacklevel=2)
        _FAMILIES[prefix] = fn
        return fn
    return register


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style wildcard (families not included: ``list_families``)."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def list_families() -> list[str]:
    """Registered family prefixes: a model of family ``f`` is named ``f/<name>``."""
    return sorted(_FAMILIES)


def family_builder(name: str) -> Callable[..., Network] | None:
    """The family builder for ``<family>/<arch>``, ``arch`` bound; None for a name without a family."""
    prefix, sep, arch = name.partition("/")
    if not sep:
        return None
    if prefix not in _FAMILIES or not arch:
        raise InputError(f"unknown model {name!r}; model families: "
                         f"{', '.join(f + '/<name>' for f in list_families())}")
    return functools.partial(_FAMILIES[prefix], arch)


def get_builder(name: str) -> Callable[..., tuple]:
    """The builder registered under ``name``; InputError listing the known names otherwise."""
    if name not in _REGISTRY:
        families = ", ".join(f"{f}/<name>" for f in list_families())
        raise InputError(f"unknown model {name!r}; known models: {', '.join(list_models())}"
                         + (f"; or a model of a family: {families}" if families else ""))
    return _REGISTRY[name]
