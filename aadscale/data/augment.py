"""Per-sample train and validation transforms of the torch backend (PIL images or uint8 tensors)."""
from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image

from aadscale.errors import InputError

if TYPE_CHECKING:
    from timm.data.auto_augment import RandAugment

AUGMENTS = ("inception", "pad-crop", "none")
IMAGENET_AREA = (0.08, 1.0)
IMAGENET_ASPECT = (3 / 4, 4 / 3)
ERASE_AREA = (0.02, 1 / 3)  # timm's RandomErasing: area fraction and aspect ratio of the box
ERASE_ASPECT = (0.3, 1 / 0.3)
WARP_FILL = 128  # grey outside a rotated/sheared/translated image: DALI's warps take one value for all channels
RAND_AUGMENT_EXAMPLE = "rand-m9-mstd0.5-inc1"
_RAND_AUGMENT_PART = re.compile(r"(m|n|mmax|inc)\d+|(p|mstd)\d+(\.\d+)?|t(weights|3aw|3a)")

Picture = Image.Image | torch.Tensor


def _uniform(low: float, high: float, gen: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand(1, generator=gen))


def _random_box(height: int, width: int, gen: torch.Generator, area, aspect,
                fits: Callable[[int, int], bool]) -> tuple[int, int, int, int] | None:
    """(top, left, h, w) of a box of a random area fraction and log-uniform aspect (w / h): ten tries to fit."""
    log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
    for _ in range(10):
        target = height * width * _uniform(*area, gen)
        ratio = math.exp(_uniform(*log_aspect, gen))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if fits(h, w):
            top = int(torch.randint(0, height - h + 1, (1,), generator=gen))
            left = int(torch.randint(0, width - w + 1, (1,), generator=gen))
            return top, left, h, w
    return None


def inception_box(height: int, width: int, gen: torch.Generator, area=IMAGENET_AREA,
                  aspect=IMAGENET_ASPECT) -> tuple[int, int, int, int]:
    """(top, left, h, w) of an Inception-style random crop, as torchvision's RandomResizedCrop."""
    box = _random_box(height, width, gen, area, aspect, lambda h, w: 0 < w <= width and 0 < h <= height)
    if box is not None:
        return box
    ratio = width / height  # ten misses: the largest centred crop with an allowed aspect
    w, h = width, height
    if ratio < aspect[0]:
        h = round(width / aspect[0])
    elif ratio > aspect[1]:
        w = round(height * aspect[1])
    return (height - h) // 2, (width - w) // 2, h, w


def to_unit(image: Picture) -> torch.Tensor:
    """float32 CHW in [0, 1] from a PIL image or a uint8 CHW tensor (no mean/std)."""
    tensor = F.pil_to_tensor(image) if isinstance(image, Image.Image) else image
    return tensor.to(torch.float32).div_(255.0)


def rand_augment(spec: str, size: int) -> RandAugment | None:
    """timm's RandAugment for ``spec`` ('' = off) with bilinear warps and a grey fill; InputError if malformed."""
    if not spec:
        return None
    name, *parts = spec.split("-")
    if name != "rand" or not all(_RAND_AUGMENT_PART.fullmatch(part) for part in parts):
        raise InputError(f"augment.rand_augment={spec!r} is not a timm RandAugment spec: 'rand' then "
                         f"'-'-separated m<int> n<int> p<float> mstd<float> mmax<int> inc<0|1> "
                         f"t<weights|3a|3aw>, e.g. {RAND_AUGMENT_EXAMPLE!r}")
    from timm.data.auto_augment import rand_augment_transform
    hparams = dict(translate_const=int(size * 0.45), img_mean=(WARP_FILL,) * 3,
                   interpolation=Image.Resampling.BILINEAR)
    return rand_augment_transform(spec, hparams)


def effective_color_jitter(rand_augment_spec: str, color_jitter: float) -> float:
    """timm's rule: colour jitter is off when RandAugment is on, unless the spec names the '3a' set."""
    return 0.0 if rand_augment_spec and "3a" not in rand_augment_spec else color_jitter


@contextmanager
def _global_random_from(gen: torch.Generator) -> Iterator[None]:
    """Python's and NumPy's global generators (timm draws from them) seeded from ``gen``, restored on exit.

    Not thread-safe; the DataLoader runs transforms in worker processes or in the main thread.
    """
    seed = int(torch.randint(2**31, (1,), generator=gen))
    states = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])


def apply_rand_augment(policy: RandAugment, image: Picture, gen: torch.Generator) -> Image.Image:
    """timm's RandAugment of ``image`` with its draws seeded from ``gen``: the same sample, the same result."""
    picture = image if isinstance(image, Image.Image) else F.to_pil_image(image)
    with _global_random_from(gen):
        return policy(picture)


_JITTERS = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)


def jitter_colors(image: Picture, strength: float, gen: torch.Generator) -> Picture:
    """torchvision's ColorJitter(s, s, s): factors from [max(0, 1 - s), 1 + s], applied in random order."""
    for k in torch.randperm(len(_JITTERS), generator=gen).tolist():
        image = _JITTERS[k](image, _uniform(max(0.0, 1 - strength), 1 + strength, gen))
    return image


def erase(tensor: torch.Tensor, probability: float, gen: torch.Generator) -> torch.Tensor:
    """timm's RandomErasing box (one, with ``probability``), filled with uniform noise in [0, 1] in place."""
    if float(torch.rand(1, generator=gen)) >= probability:
        return tensor
    channels, height, width = tensor.shape
    box = _random_box(height, width, gen, ERASE_AREA, ERASE_ASPECT, lambda h, w: h < height and w < width)
    if box is not None:
        top, left, h, w = box
        tensor[:, top:top + h, left:left + w] = torch.rand((channels, h, w), generator=gen)
    return tensor


def train_transform(image: Picture, gen: torch.Generator, *, augment: str, size: int,
                    rand_augment: RandAugment | None = None, color_jitter: float = 0.0,
                    erasing: float = 0.0) -> torch.Tensor:
    """One training view: ``inception`` crop, ``pad-crop`` (pad 4 reflect + crop) or ``none``; flips but for ``none``.

    Then, in timm's order: RandAugment, colour jitter, to [0, 1], random erasing (each off by default).
    """
    _, height, width = F.get_dimensions(image)
    if augment == "inception":
        top, left, h, w = inception_box(height, width, gen)
        image = F.resized_crop(image, top, left, h, w, [size, size], antialias=True)
    else:
        if (height, width) != (size, size):
            image = F.resize(image, [size, size], antialias=True)
        if augment == "pad-crop":
            image = F.pad(image, [4], padding_mode="reflect")
            top, left = (int(torch.randint(0, 9, (1,), generator=gen)) for _ in range(2))
            image = F.crop(image, top, left, size, size)
    if augment != "none" and float(torch.rand(1, generator=gen)) < 0.5:
        image = F.hflip(image)
    if rand_augment is not None:
        image = apply_rand_augment(rand_augment, image, gen)
    if color_jitter:
        image = jitter_colors(image, color_jitter, gen)
    tensor = to_unit(image)
    return erase(tensor, erasing, gen) if erasing else tensor


def val_transform(image: Picture, gen: torch.Generator | None = None, *, resize: int,
                  size: int) -> torch.Tensor:
    """Resize the shorter side to ``resize``, then the centre ``size`` x ``size`` crop."""
    _, height, width = F.get_dimensions(image)
    scale = resize / min(height, width)  # the longer side rounded as DALI's resize_shorter does
    resized = F.resize(image, [round(height * scale), round(width * scale)], antialias=True)
    return to_unit(centre_crop(resized, size))


def centre_crop(image: Picture, size: int) -> Picture:
    """The centre crop with ties rounded up as DALI's ``crop_pos=0.5`` does (torchvision rounds half to even)."""
    _, height, width = F.get_dimensions(image)
    return F.crop(image, (height - size + 1) // 2, (width - size + 1) // 2, size, size)


def default_val_resize(image_size: int, augment: str) -> int:
    """ImageNet's 256/224 ratio after Inception crops (which zoom in), the image size otherwise."""
    return round(image_size * 256 / 224) if augment == "inception" else image_size
