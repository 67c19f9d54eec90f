"""Models to evaluate: the engine's exported checkpoint, a bare state_dict, or a torchvision network."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from aadscale import models
from aadscale.config import Config, from_dict
from aadscale.models.imagenet import TORCHVISION_WEIGHTS


@dataclass
class LoadedModel:
    """The model in eval mode, the run's config when the file carries one, and a label for reports."""
    model: models.PixelModel
    config: Config | None
    description: str


def parse_eps(text: str | float) -> float:
    """``"4/255"``, ``"0.3"`` or a number -> float in [0, 1]."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        num, sep, den = str(text).partition("/")
        try:
            value = float(num) / (float(den) if sep else 1.0)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"eps {text!r} is not a number; write e.g. 4/255 or 0.03") from None
    if not 0 <= value <= 1:
        raise ValueError(f"eps={value} must be in [0, 1] (pixel space, e.g. 8/255)")
    return value


def _load_state(model: models.PixelModel, state: dict, where: str) -> None:
    state = {k.removeprefix("module."): v for k, v in state.items()}
    target = model if any(k.startswith("net.") for k in state) else model.net
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise ValueError(f"{where}: the state_dict does not fit the model ({first}); "
                         "check --model / --num-classes or the checkpoint's config") from None


def load_model(checkpoint: str | Path | None = None, *, model_name: str | None = None,
               num_classes: int | None = None, in_channels: int = 3, torchvision: str | None = None,
               pretrained: bool = False, device: str | torch.device = "cpu") -> LoadedModel:
    """Build the model to evaluate from exactly one source.

    - ``checkpoint`` holding ``{"model": state_dict, "config": <to_dict(cfg)>}`` (the
      engine's export): the architecture comes from the config;
    - ``checkpoint`` holding a bare state_dict: give ``model_name`` and ``num_classes``;
    - ``torchvision="resnet50"`` (or another name with torchvision weights): random
      weights, or torchvision's ImageNet weights with ``pretrained`` (needs the network).
    Files are read with ``torch.load(..., weights_only=True)``.
    """
    if (checkpoint is None) == (torchvision is None):
        raise ValueError("give exactly one of a checkpoint path or --torchvision NAME")
    if torchvision is not None:
        if torchvision not in TORCHVISION_WEIGHTS:
            raise ValueError(f"--torchvision {torchvision!r}: choose one of {', '.join(TORCHVISION_WEIGHTS)}")
        model = models.build(torchvision, num_classes or 1000, pretrained=pretrained,
                             in_channels=in_channels)
        weights = "ImageNet weights" if pretrained else "random weights"
        return LoadedModel(model.to(device).eval(), None, f"torchvision {torchvision} ({weights})")
    path = Path(checkpoint)
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for foreign or unsafe files
        raise ValueError(f"{path}: cannot be read as a weights-only torch file ({err})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict (state_dict or {{'model', 'config'}}), "
                         f"got {type(obj).__name__}")
    cfg = None
    if isinstance(obj.get("model"), dict) and isinstance(obj.get("config"), dict):
        cfg = from_dict(obj["config"])
        model_name, num_classes = cfg.model.name, cfg.model.num_classes  # the file's own config wins
        in_channels = cfg.model.in_channels
        model = models.build(model_name, num_classes, in_channels=in_channels, dropout=cfg.model.dropout)
        state = obj["model"]
    else:
        if model_name is None or num_classes is None:
            raise ValueError(f"{path} is a bare state_dict without a config; "
                             "give --model NAME --num-classes K")
        model = models.build(model_name, num_classes, in_channels=in_channels)
        state = obj["model"] if isinstance(obj.get("model"), dict) else obj
    _load_state(model, state, str(path))
    return LoadedModel(model.to(device).eval(), cfg, f"{path.name} ({model_name}, {num_classes} classes)")
