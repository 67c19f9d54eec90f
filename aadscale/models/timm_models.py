"""Any timm model as ``timm/<name>``: its own normalisation statistics, a Grad-CAM layer per family,
weights from the hub or a local file."""
from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from aadscale.errors import InputError
from aadscale.models.convstem import use_convstem
from aadscale.models.registry import Network, register_family
from aadscale.models.token_grid import TokenGrid
from aadscale.models.weights import load_state, read_weights

log = logging.getLogger("aadscale.models")

# timm.create_model arguments that come from ModelConfig fields, never from model.kwargs
RESERVED = {"num_classes": "model.num_classes", "in_chans": "model.in_channels", "drop_rate": "model.dropout",
            "pretrained": "model.pretrained", "pretrained_cfg_overlay": "model.pretrained",
            "checkpoint_path": "model.pretrained", "pretrained_cfg": "model.pretrained"}
CAM_ATTR = "aad_cam"  # the TokenGrid's name inside a transformer network


def cam_point(net: nn.Module, cam_layer: str | None) -> tuple[str, str]:
    """(module whose output is the Grad-CAM layer, its layout: ``nchw``, ``tokens`` or ``nhwc``).

    ViT-like models (patch tokens after ``num_prefix_tokens`` class/register/distillation
    tokens): the last block's ``norm1``, the tokens its attention reads; after it the
    patch tokens reach the logits only through the class token's attention (with class-token
    pooling, the last block's output patch tokens do not reach them at all). Models whose
    features are NHWC (Swin): the last stage. CNNs: the last stage timm lists in
    ``feature_info``. ``cam_layer`` names another module of the same layout.
    """
    name = type(net).__name__
    tokens = hasattr(net, "num_prefix_tokens") and hasattr(net, "patch_embed")
    layout = "tokens" if tokens else "nhwc" if getattr(net, "output_fmt", "NCHW") == "NHWC" else "nchw"
    if not cam_layer:
        blocks = getattr(net, "blocks", None)
        if tokens and blocks is not None and len(blocks) and hasattr(blocks[-1], "norm1"):
            cam_layer = f"blocks.{len(blocks) - 1}.norm1"
        elif not tokens and getattr(net, "feature_info", None):
            cam_layer = net.feature_info[-1]["module"]
        else:
            raise InputError(f"no known Grad-CAM layer for the timm model {name}; pass model.cam_layer="
                             f"<a module of the network with a spatial output> (one of net.named_modules())")
    try:
        net.get_submodule(cam_layer)
    except AttributeError:
        last = [n for n, _ in net.named_modules() if n][-6:]
        raise InputError(f"model.cam_layer={cam_layer!r} is not a module of {name}; last module names "
                         f"are {last}") from None
    return cam_layer, layout


def unfuse_attention_after(net: nn.Module, cam_layer: str) -> list[str]:
    """Attention modules after ``cam_layer`` take timm's explicit softmax path; returns their names.

    AAD's preservation term differentiates Grad-CAM's gradient, a double backward through
    every layer after the Grad-CAM layer, and torch's fused attention kernels (flash and
    memory-efficient on CUDA, flash on CPU) have no double backward. Registration order
    stands for execution order, as in timm's sequential transformers.
    """
    names, after = [], False
    for name, module in net.named_modules():
        if after and getattr(module, "fused_attn", False):
            module.fused_attn = False
            names.append(name)
        after = after or name == cam_layer
    return names


def _head_rows(state: Mapping[str, Any], classifier: str | tuple | None) -> int | None:
    first = classifier if isinstance(classifier, str) else (classifier or (None,))[0]
    weight = state.get(f"{first}.weight")
    return None if weight is None else int(weight.shape[0])


def read_state(path: str | Path) -> dict:
    """The state_dict of a weights file (``read_weights``: safetensors, or torch with ``weights_only=True``)."""
    return select_state(read_weights(path))


def select_state(obj: Mapping[str, Any]) -> dict:
    """The state_dict in a file's dict: the EMA weights, else ``state_dict``, else ``model``, as timm's
    reader picks them, else the dict itself; ``module.`` (DDP) and aadscale's ``net.`` prefixes dropped."""
    from timm.models import clean_state_dict
    key = next((k for k in ("state_dict_ema", "model_ema", "state_dict", "model")
                if isinstance(obj.get(k), dict)), None)
    state = clean_state_dict(obj[key] if key else obj)
    if any(k.startswith("net.") for k in state):
        state = {k.removeprefix("net."): v for k, v in state.items()}
    return state


def _is_file(pretrained: bool | str) -> bool:
    return isinstance(pretrained, str) and pretrained not in ("", "timm", "torchvision")


def pretrained_args(arch: str, pretrained: bool | str, num_classes: int) -> dict:
    """``timm.create_model`` arguments for ``pretrained``: False / '' (random init), True / 'timm'
    (timm's default weights from the Hugging Face hub) or a path to a local weights file."""
    if pretrained in (False, ""):
        return {}
    if pretrained is True or pretrained == "timm":
        return {"pretrained": True}
    if pretrained == "torchvision":
        raise InputError(f"timm/{arch} has no torchvision weights; use model.pretrained=timm (the hub) "
                         "or a path to a weights file")
    import timm
    state = read_state(pretrained)
    cfg = timm.models.get_pretrained_cfg(arch)
    rows = _head_rows(state, cfg.classifier if cfg else None)
    if rows is not None and rows != num_classes:
        log.info("%s: the file's head has %d classes, the model %d: the head starts from random weights",
                 pretrained, rows, num_classes)
    # timm's own loader adapts the file (position embeddings resampled to img_size, the input
    # conv to in_chans, the head dropped when the class counts differ) and loads the rest strictly
    return {"pretrained": True,
            "pretrained_cfg_overlay": {"state_dict": state, **({"num_classes": rows} if rows else {})}}


def _patch_grid(embed: nn.Module) -> tuple[int, int] | None:
    """The patch grid of a fixed-size patch embedding; None when it takes any image size."""
    if getattr(embed, "dynamic_img_size", False) or getattr(embed, "grid_size", None) is None:
        return None
    return tuple(embed.grid_size)


def _check_kwargs(model_kwargs: Mapping[str, Any]) -> None:
    for key in model_kwargs:
        if key in RESERVED:
            raise InputError(f"model.kwargs.{key} is set by {RESERVED[key]}; set that field instead")


def _put_convstem(net: nn.Module, arch: str, in_channels: int, pretrained: bool | str) -> None:
    """Replace ``net``'s stem by the ConvStem; a weights file (``pretrained``) is then loaded strictly, so
    it must hold a ConvStem model's weights (timm's hub weights have none: that stem stays random)."""
    replaced = use_convstem(net, in_channels, f"timm/{arch}")
    if _is_file(pretrained):
        load_state(net, read_state(pretrained), str(pretrained))
    elif pretrained:
        log.warning("timm/%s: timm's weights everywhere but %s, now the ConvStem, which starts from random "
                    "weights", arch, replaced)


@register_family("timm")
def timm_model(arch: str, num_classes: int, *, in_channels: int = 3, dropout: float | None = None,
               pretrained: bool | str = False, model_kwargs: Mapping[str, Any] | None = None,
               cam_layer: str | None = None, stem: str = "patch") -> Network:
    """``timm.create_model(arch, **model_kwargs)`` with its Grad-CAM layer (``cam_point``) and its
    pretrained config's mean/std; ViT and Swin outputs reach Grad-CAM through a ``TokenGrid``.
    ``stem="convstem"``: ConvNeXt and ViT get Singh et al.'s ConvStem (``aadscale.models.convstem``)."""
    import timm
    model_kwargs = dict(model_kwargs or {})
    _check_kwargs(model_kwargs)
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        raise InputError(f"unknown timm model {arch!r}" + (f"; did you mean {', '.join(close)}?" if close else
                                                          "; see timm.list_models()"))
    convstem_file = stem == "convstem" and _is_file(pretrained)  # loaded after the stem swap
    weights = {} if convstem_file else pretrained_args(arch, pretrained, num_classes)
    try:
        net = timm.create_model(arch, num_classes=num_classes, in_chans=in_channels, drop_rate=dropout,
                                **weights, **model_kwargs)
    except OSError as err:  # the hub cannot be reached, or has no such file
        raise InputError(f"timm/{arch}: the pretrained weights could not be fetched from the hub ({err}); "
                         "download them where the network allows and pass model.pretrained=<file>") from err
    except (TypeError, ValueError, LookupError, AssertionError, RuntimeError) as err:  # bad kwargs or file
        detail = " ".join(f"{type(err).__name__}: {err}".split())[:400]
        if "pretrained_cfg_overlay" in weights:
            raise InputError(f"{pretrained}: the weights do not fit timm/{arch} with model.kwargs={model_kwargs} "
                             f"({detail}); was the file saved from this architecture and these sizes?") from err
        raise InputError(f"timm.create_model({arch!r}, **{model_kwargs}) failed ({detail}); check model.kwargs "
                         "(the model's constructor arguments)") from err
    if stem == "convstem":
        _put_convstem(net, arch, in_channels, pretrained)
    point, layout = cam_point(net, cam_layer)
    cam = point
    if layout != "nchw":
        grid = TokenGrid("nhwc") if layout == "nhwc" else TokenGrid("tokens", net.num_prefix_tokens,
                                                                      _patch_grid(net.patch_embed))
        net.add_module(CAM_ATTR, grid)
        grid.attach(net.get_submodule(point))
        cam = CAM_ATTR
    unfuse_attention_after(net, point)
    cfg = net.pretrained_cfg
    return Network(net, cam, cfg.get("mean"), cfg.get("std"))
