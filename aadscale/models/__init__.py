"""Models on [0, 1] pixel input with normalisation inside: ``build(name, num_classes)``."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from aadscale.errors import InputError
from aadscale.models import imagenet, small, timm_models  # noqa: F401  (registers the builders)
from aadscale.models.convstem import STEMS, unsupported
from aadscale.models.imagenet import TORCHVISION_WEIGHTS
from aadscale.models.modes import eval_mode, frozen_running_stats
from aadscale.models.normalize import IMAGENET_MEAN, IMAGENET_STD, Normalize, PixelModel
from aadscale.models.registry import (
    Network,
    family_builder,
    get_builder,
    list_families,
    list_models,
    register_family,
    register_model,
)
from aadscale.models.token_grid import TokenGrid
from aadscale.models.weights import load_state, read_weights

if TYPE_CHECKING:
    from aadscale.config import ModelConfig

__all__ = ["build", "build_from_config", "list_models", "list_families", "register_model", "register_family",
           "Network", "Normalize", "PixelModel", "TokenGrid", "eval_mode", "frozen_running_stats",
           "load_weights", "load_state", "read_weights"]


def _stats(in_channels: int, mean, std):
    if mean is None:
        mean = IMAGENET_MEAN if in_channels == 3 else (0.5,) * in_channels
    if std is None:
        std = IMAGENET_STD if in_channels == 3 else (0.5,) * in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise InputError(f"mean/std have {len(mean)}/{len(std)} entries but in_channels={in_channels}")
    return mean, std


def _registered(name: str, num_classes: int, pretrained: bool | str, in_channels: int,
                dropout: float | None, model_kwargs: Mapping[str, Any], cam_layer: str | None) -> Network:
    builder = get_builder(name)
    if model_kwargs:
        raise InputError(f"model.kwargs {dict(model_kwargs)} go to timm.create_model; model {name!r} takes "
                         "none (timm models are named timm/<name>)")
    kwargs: dict = {"in_channels": in_channels}
    if dropout is not None:
        kwargs["dropout"] = dropout
    if pretrained is True or pretrained == "torchvision":
        if name not in TORCHVISION_WEIGHTS:
            raise InputError(f"model {name!r} has no torchvision weights; models that do: "
                             f"{', '.join(TORCHVISION_WEIGHTS)} (or pass a state_dict path)")
        kwargs["weights"] = TORCHVISION_WEIGHTS[name]
        # the ImageNet head is loaded first, then replaced if num_classes differs
    if pretrained == "timm":
        raise InputError(f"model {name!r} is not a timm model; timm's weights are for timm/<name> models")
    if "in_channels" not in inspect.signature(builder).parameters:
        kwargs.pop("in_channels")
    net, default_layer = builder(num_classes, **kwargs)
    layer = cam_layer or default_layer
    if layer not in dict(net.named_modules()):
        raise InputError(f"model.cam_layer={layer!r} is not a module of {name}; pass one of its "
                         "named_modules() names")
    return Network(net, layer)


def build(name: str, num_classes: int, pretrained: bool | str = False, *, in_channels: int = 3,
          dropout: float | None = None, mean=None, std=None, model_kwargs: Mapping[str, Any] | None = None,
          cam_layer: str | None = None, stem: str = "patch") -> PixelModel:
    """Build a registered model taking [0, 1] pixels, its attention layer name in ``.cam_layer``.

    ``name``: a registered name (``list_models()``) or ``timm/<any timm model>``, with
    ``model_kwargs`` for ``timm.create_model`` (sizes, ``img_size``, ``drop_path_rate``, ...).
    ``pretrained``: False; True / "torchvision" (torchvision's ImageNet weights) or True /
    "timm" (timm's default weights from the Hugging Face hub), downloaded where the network
    allows; or a path to a weights file (a ``state_dict``; for timm models also safetensors,
    adapted to the class count and image size by timm's loader). ``cam_layer``: the network's
    module whose output is the Grad-CAM layer, instead of the model's own choice. ``mean`` /
    ``std``: the normalisation (default: a timm model's pretrained config, else ImageNet's).
    ``stem``: "patch" (the model's own) or "convstem" (timm ConvNeXt and ViT: ``aadscale.models.convstem``).
    """
    if num_classes < 2:
        raise InputError(f"num_classes={num_classes} must be >= 2")
    if stem not in STEMS:
        raise InputError(f"stem={stem!r} must be one of {list(STEMS)}")
    family = family_builder(name)
    model_kwargs = model_kwargs or {}
    if family is not None:
        built = family(num_classes, in_channels=in_channels, dropout=dropout, pretrained=pretrained,
                       model_kwargs=model_kwargs, cam_layer=cam_layer, stem=stem)
    elif stem != "patch":
        raise unsupported(name)
    else:
        built = _registered(name, num_classes, pretrained, in_channels, dropout, model_kwargs, cam_layer)
    own = built.mean is not None and len(built.mean) == in_channels  # a timm model's own statistics
    mean, std = _stats(in_channels, built.mean if mean is None and own else mean,
                       built.std if std is None and own else std)
    model = PixelModel(built.net, built.cam_layer, mean, std, num_classes, in_channels)
    if family is None and isinstance(pretrained, str) and pretrained not in ("", "torchvision"):
        load_weights(model, pretrained)
    return model


def build_from_config(cfg: ModelConfig, pretrained: bool = True) -> PixelModel:
    """``build`` from the config's model section; ``pretrained=False`` ignores ``model.pretrained``
    (the weights come from a checkpoint)."""
    return build(cfg.name, cfg.num_classes, (cfg.pretrained or False) if pretrained else False,
                 in_channels=cfg.in_channels, dropout=cfg.dropout, model_kwargs=cfg.kwargs,
                 cam_layer=cfg.cam_layer or None, stem=cfg.stem)


def load_weights(model: PixelModel, path: str | Path) -> None:
    """Load a state_dict file (of the PixelModel, of the bare network, or an engine export)."""
    obj = read_weights(path)
    load_state(model, obj["model"] if isinstance(obj.get("model"), dict) else obj, str(path))
