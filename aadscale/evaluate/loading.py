"""Models to evaluate: the engine's exported checkpoint, a bare state_dict, or a torchvision network."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from aadscale import models
from aadscale.config import Config, from_dict
from aadscale.data.classes import class_difference, label_names
from aadscale.errors import InputError
from aadscale.models.imagenet import TORCHVISION_WEIGHTS
from aadscale.models.weights import load_state, read_weights
from aadscale.models.zoo import zoo_weights


@dataclass
class LoadedModel:
    """The model in eval mode, the run's config and class names when the file carries them, a label for reports."""
    model: models.PixelModel
    config: Config | None
    description: str
    classes: list[str] | None = None

    def check_classes(self, classes: Sequence[str], data: str) -> None:
        """Refuse data whose labels would not mean the model's classes (by name and order when the file
        names them, else by count against the model's outputs)."""
        expected = self.classes or label_names(self.model.num_classes)
        difference = class_difference(expected, classes, ("the model", "the data"))
        if difference:
            raise InputError(f"{data} does not have the classes {self.description} was trained on: "
                             f"{difference}. Point --data (and --split) at data of the model's classes")


def load_model(checkpoint: str | Path | None = None, *, model_name: str | None = None,
               num_classes: int | None = None, in_channels: int = 3, torchvision: str | None = None,
               pretrained: bool = False, device: str | torch.device = "cpu", stem: str = "patch",
               normalization: str = "auto") -> LoadedModel:
    """Build the model to evaluate from exactly one source.

    - ``checkpoint`` holding ``{"model": state_dict, "config": <to_dict(cfg)>, "classes": [...]}``
      (the engine's export): the architecture comes from the config;
    - ``checkpoint`` holding a bare state_dict or model-zoo weights (``aadscale.models.zoo``: under
      ``state_dict``, ``module.``/``model.`` prefixes, the zoo's ``normalize.*`` statistics used as
      the model's normalisation, or none with ``normalization="none"``): give ``model_name`` and
      ``num_classes`` (and ``stem="convstem"`` for a ConvStem model);
    - ``torchvision="resnet50"`` (or another name with torchvision weights): random
      weights, or torchvision's ImageNet weights with ``pretrained`` (needs the network).
    Files are read with ``torch.load(..., weights_only=True)``.
    """
    if normalization not in ("auto", "none"):
        raise InputError(f"normalization={normalization!r} must be 'auto' or 'none'")
    if (checkpoint is None) == (torchvision is None):
        raise InputError("give exactly one of a checkpoint path or --torchvision NAME")
    if torchvision is not None:
        if torchvision not in TORCHVISION_WEIGHTS:
            raise InputError(f"--torchvision {torchvision!r}: choose one of {', '.join(TORCHVISION_WEIGHTS)}")
        model = models.build(torchvision, num_classes or 1000, pretrained=pretrained,
                             in_channels=in_channels)
        weights = "ImageNet weights" if pretrained else "random weights"
        return LoadedModel(model.to(device).eval(), None, f"torchvision {torchvision} ({weights})")
    path = Path(checkpoint)
    obj = read_weights(path)
    cfg, classes = None, None
    if isinstance(obj.get("model"), dict) and isinstance(obj.get("config"), dict):
        cfg = from_dict(obj["config"])
        model_name, num_classes = cfg.model.name, cfg.model.num_classes  # the file's own config wins
        model = models.build_from_config(cfg.model, pretrained=False)
        state, classes = obj["model"], obj.get("classes")
    else:
        if model_name is None or num_classes is None:
            raise InputError(f"{path} is a bare state_dict without a config; "
                             "give --model NAME --num-classes K")
        zoo = zoo_weights(obj, str(path))
        mean, std = zoo.mean, zoo.std
        if normalization == "none":
            if mean is not None:
                raise InputError(f"{path} carries its normalisation (normalize.mean {mean}, normalize.std {std}); "
                                 "drop --normalization none")
            mean, std = [0.0] * in_channels, [1.0] * in_channels
        model = models.build(model_name, num_classes, in_channels=in_channels, mean=mean, std=std, stem=stem)
        state = zoo.state
    load_state(model, state, str(path))
    return LoadedModel(model.to(device).eval(), cfg, f"{path.name} ({model_name}, {num_classes} classes)",
                       classes)
