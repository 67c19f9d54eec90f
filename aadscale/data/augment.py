"""Per-sample train and validation transforms of the torch backend (PIL images or uint8 tensors)."""
from __future__ import annotations

import math

import torch
import torchvision.transforms.functional as F
from PIL import Image

AUGMENTS = ("inception", "pad-crop", "none")
IMAGENET_AREA = (0.08, 1.0)
IMAGENET_ASPECT = (3 / 4, 4 / 3)

Picture = Image.Image | torch.Tensor


def _uniform(low: float, high: float, gen: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand(1, generator=gen))


def inception_box(height: int, width: int, gen: torch.Generator, area=IMAGENET_AREA,
                  aspect=IMAGENET_ASPECT) -> tuple[int, int, int, int]:
    """(top, left, h, w) of an Inception-style random crop, as torchvision's RandomResizedCrop."""
    log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
    for _ in range(10):
        target = height * width * _uniform(*area, gen)
        ratio = math.exp(_uniform(*log_aspect, gen))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=gen))
            left = int(torch.randint(0, width - w + 1, (1,), generator=gen))
            return top, left, h, w
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


def train_transform(image: Picture, gen: torch.Generator, *, augment: str, size: int) -> torch.Tensor:
    """One training view: ``inception`` crop, ``pad-crop`` (pad 4 reflect + crop) or ``none``; flips but for ``none``."""
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
    return to_unit(image)


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
