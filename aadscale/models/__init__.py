"""Models on [0, 1] pixel input with normalisation inside: ``build(name, num_classes)``."""
from __future__ import annotations

import inspect
from pathlib import Path

from aadscale.errors import InputError
from aadscale.models import imagenet, small  # noqa: F401  (registers the builders)
from aadscale.models.imagenet import TORCHVISION_WEIGHTS
from aadscale.models.modes import eval_mode, frozen_running_stats
from aadscale.models.normalize import IMAGENET_MEAN, IMAGENET_STD, Normalize, PixelModel
from aadscale.models.registry import get_builder, list_models, register_model
from aadscale.models.weights import load_state, read_weights

__all__ = ["build", "list_models", "register_model", "Normalize", "PixelModel", "eval_mode",
           "frozen_running_stats", "load_weights", "load_state", "read_weights"]


def _stats(in_channels: int, mean, std):
    if mean is None:
        mean = IMAGENET_MEAN if in_channels == 3 else (0.5,) * in_channels
    if std is None:
        std = IMAGENET_STD if in_channels == 3 else (0.5,) * in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise InputError(f"mean/std have {len(mean)}/{len(std)} entries but in_channels={in_channels}")
    return mean, std


def build(name: str, num_classes: int, pretrained: bool | str = False, *, in_channels: int = 3,
          dropout: float | None = None, mean=None, std=None) -> PixelModel:
    """Build a registered model taking [0, 1] pixels, its attention layer name in ``.cam_layer``.

    ``pretrained``: False, True / "torchvision" (torchvision's ImageNet weights, downloaded
    by torchvision where the network allows) or a path to a saved ``state_dict``.
    """
    builder = get_builder(name)
    if num_classes < 2:
        raise InputError(f"num_classes={num_classes} must be >= 2")
    kwargs: dict = {"in_channels": in_channels}
    if dropout is not None:
        kwargs["dropout"] = dropout
    use_tv = pretrained is True or pretrained == "torchvision"
    if use_tv:
        if name not in TORCHVISION_WEIGHTS:
            raise InputError(f"model {name!r} has no torchvision weights; models that do: "
                             f"{', '.join(TORCHVISION_WEIGHTS)} (or pass a state_dict path)")
        kwargs["weights"] = TORCHVISION_WEIGHTS[name]
        # the ImageNet head is loaded first, then replaced if num_classes differs
    if "in_channels" not in inspect.signature(builder).parameters:
        kwargs.pop("in_channels")
    net, cam_layer = builder(num_classes, **kwargs)
    mean, std = _stats(in_channels, mean, std)
    model = PixelModel(net, cam_layer, mean, std, num_classes, in_channels)
    if isinstance(pretrained, str) and pretrained not in ("", "torchvision"):
        load_weights(model, pretrained)
    return model


def load_weights(model: PixelModel, path: str | Path) -> None:
    """Load a state_dict file (of the PixelModel, of the bare network, or an engine export)."""
    obj = read_weights(path)
    load_state(model, obj["model"] if isinstance(obj.get("model"), dict) else obj, str(path))
