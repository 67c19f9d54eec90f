"""Model-zoo weights (RobustBench and similar): a plain state dict, perhaps under ``state_dict``,
with ``module.``, ``model.`` or ``base_model.`` prefixes and the zoo's own normalisation as
``normalize.mean``/``normalize.std``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from aadscale.errors import InputError

NORMALIZE_KEYS = ("normalize.mean", "normalize.std")
# RobustBench's nn.Sequential(normalize, model) around the network; Singh et al.'s training script
# (nmndeep/revisiting-at) saves its WrappedModel as base_model.
WRAPPERS = ("model.", "base_model.")


@dataclass(frozen=True)
class ZooWeights:
    """The network's state dict and, when the file carries them, its input normalisation."""
    state: dict[str, torch.Tensor]
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None


def _statistic(state: dict, key: str, where: str) -> list[float] | None:
    value = state.pop(key, None)
    if value is None:
        return None
    if not isinstance(value, torch.Tensor) or value.numel() not in (1, 3):
        raise InputError(f"{where}: {key} should hold 1 or 3 numbers, got {getattr(value, 'shape', value)}")
    return [float(v) for v in value.flatten()]


def unwrap(state: dict[str, torch.Tensor], where: str) -> ZooWeights:
    """Split the zoo's normalisation off ``state`` and drop a wrapper's prefix (``WRAPPERS``) that every other
    key has."""
    state = dict(state)
    mean, std = (_statistic(state, k, where) for k in NORMALIZE_KEYS)
    if (mean is None) != (std is None):
        raise InputError(f"{where}: has one of {' and '.join(NORMALIZE_KEYS)} but not the other")
    for prefix in WRAPPERS:
        if state and all(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    return ZooWeights(state, mean, std)


def zoo_weights(obj: dict, where: str) -> ZooWeights:
    """A file's dict (``read_weights``) as zoo weights: the state dict chosen as timm picks one (EMA,
    ``state_dict``, ``model``), ``module.``/``model.`` prefixes dropped, the normalisation split off."""
    from aadscale.models.timm_models import select_state
    return unwrap(select_state(obj), where)
