"""NVIDIA DALI pipelines (train and validation, CPU or GPU) behind the shared ``Loader`` interface."""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali import math as dmath
from nvidia.dali.auto_aug import augmentations as a
from nvidia.dali.auto_aug.core import select, signed_bin
from nvidia.dali.data_node import DataNode
from nvidia.dali.pipeline import do_not_convert
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

from aadscale.data.augment import (ERASE_AREA, ERASE_ASPECT, IMAGENET_AREA, IMAGENET_ASPECT, RAND_AUGMENT_EXAMPLE,
                                   WARP_FILL)
from aadscale.data.loader import Batch, Loader
from aadscale.data.sampler import mix_seed
from aadscale.data.scan import readable
from aadscale.data.sources import FileSamples
from aadscale.errors import InputError

if TYPE_CHECKING:
    from timm.data.auto_augment import RandAugment

DALI_AUGMENTS = ("inception", "none")
DALI_LAYOUTS = {"contiguous": "CHW", "channels_last": "HWC"}  # memory format -> the pipeline's output layout
MAX_LEVEL = 10  # timm's magnitudes run over levels 0..10 (its default upper bound)
BINS_PER_LEVEL = 10  # DALI's magnitude bins: level m is bin 10 m of 101, so timm's noisy levels keep 0.1 steps
MAGNITUDE_BINS = MAX_LEVEL * BINS_PER_LEVEL + 1


def _posterize_mask(bits: int) -> np.uint8:
    return np.uint8((0xFF << (8 - bits)) & 0xFF)


def _posterize(magnitude: float) -> np.uint8:
    return _posterize_mask(int(magnitude))


def _posterize_increasing(magnitude: float) -> np.uint8:
    return _posterize_mask(4 - int(magnitude))


def _solarize(magnitude: float) -> np.float32:
    return np.float32(math.floor(magnitude))


def _solarize_increasing(magnitude: float) -> np.float32:
    return np.float32(256 - math.floor(magnitude))


# timm's RandAugment ops (timm.data.auto_augment) as DALI augmentations whose magnitude range
# spans timm's levels 0..10 with timm's level-to-argument formulas; DALI's warps negate with
# the opposite sign convention (their distribution is symmetric, so the policy is the same).
RAND_AUGMENT_OPS = {
    "AutoContrast": a.auto_contrast,
    "Equalize": a.equalize,  # OpenCV's histogram equalisation, PIL's rounds a little differently
    "Invert": a.invert,
    "Rotate": a.rotate.augmentation((0, 30), True),
    "Posterize": a.posterize.augmentation((0, 4), False, _posterize),
    "PosterizeIncreasing": a.posterize.augmentation((0, 4), False, _posterize_increasing),
    "Solarize": a.solarize.augmentation((0, 256), False, _solarize),
    "SolarizeIncreasing": a.solarize.augmentation((0, 256), False, _solarize_increasing),
    "SolarizeAdd": a.solarize_add,
    "Color": a.color.augmentation((0.1, 1.9), False, None),
    "ColorIncreasing": a.color,
    "Contrast": a.contrast.augmentation((0.1, 1.9), False, None),
    "ContrastIncreasing": a.contrast,
    "Brightness": a.brightness.augmentation((0.1, 1.9), False, None),
    "BrightnessIncreasing": a.brightness,
    "Sharpness": a.sharpness.augmentation((0.1, 1.9), False, a.sharpness_kernel_shifted),
    "SharpnessIncreasing": a.sharpness,  # PIL leaves a 1-pixel border unsharpened, DALI does not
    "ShearX": a.shear_x,
    "ShearY": a.shear_y,
    "TranslateXRel": a.translate_x.augmentation((0, 0.45), True),
    "TranslateYRel": a.translate_y.augmentation((0, 0.45), True),
}


@dataclass(frozen=True)
class DaliRandAugment:
    """timm's RandAugment settings the DALI pipeline runs: op names, layers, per-op probability, magnitude."""
    ops: tuple[str, ...]
    num_layers: int
    prob: float
    magnitude: float
    magnitude_std: float

    @classmethod
    def from_timm(cls, policy: RandAugment) -> DaliRandAugment:
        """The settings of timm's ``RandAugment``; InputError for what DALI does not map."""
        op = policy.ops[0]
        missing = sorted({o.name for o in policy.ops} - set(RAND_AUGMENT_OPS))
        problems = [f"mmax{op.magnitude_max}"] if op.magnitude_max is not None else []
        if policy.choice_weights is not None:
            problems.append("a weighted op choice (tweights, t3aw)")
        if missing:
            problems.append(f"timm's ops {', '.join(missing)} (t3a, t3aw)")
        if problems:
            raise InputError(f"augment.rand_augment with {' and '.join(problems)} is not available with DALI; "
                             f"use a spec without, e.g. {RAND_AUGMENT_EXAMPLE!r}, or data.backend=torch")
        return cls(tuple(o.name for o in policy.ops), policy.num_layers, op.prob, op.magnitude, op.magnitude_std)


def _level_bin(policy: DaliRandAugment) -> int | DataNode:
    """This layer's magnitude bin per sample: timm's level m, drawn from N(m, mstd) or U(0, m) when mstd > 0."""
    if policy.magnitude_std == 0:
        return round(min(max(policy.magnitude, 0), MAX_LEVEL) * BINS_PER_LEVEL)
    if math.isinf(policy.magnitude_std):
        level = fn.random.uniform(range=[0.0, float(policy.magnitude)])
    else:
        level = fn.random.normal() * float(policy.magnitude_std) + float(policy.magnitude)
    level = dmath.clamp(level, 0.0, float(MAX_LEVEL))
    return fn.cast(dmath.floor(level * BINS_PER_LEVEL + 0.5), dtype=types.INT32)


def apply_rand_augment(images: DataNode, policy: DaliRandAugment, size: int) -> DataNode:
    """timm's RandAugment on uint8 HWC ``size`` x ``size`` images: per layer one op, applied with ``prob``."""
    # not converted by AutoGraph: they hold no conditions, and converting their parameter tables is slow
    suite = [do_not_convert(op.__call__) for op in [*map(RAND_AUGMENT_OPS.get, policy.ops), a.identity]]
    for _ in range(policy.num_layers):
        op = fn.random.uniform(values=list(range(len(policy.ops))), dtype=types.INT32)
        if policy.prob < 1:
            keep = fn.cast(fn.random.coin_flip(probability=policy.prob), dtype=types.INT32)
            op = op * keep + len(policy.ops) * (1 - keep)  # the last op, identity, when the layer is skipped
        images = select(suite, op, data=images, magnitude_bin=signed_bin(_level_bin(policy)),
                        **op_arguments(size))
    return images


def op_arguments(size: int) -> dict:
    """What every RandAugment op gets beside its magnitude: the bins, image shape, warp fill and interpolation."""
    return dict(num_magnitude_bins=MAGNITUDE_BINS, shape=(size, size), fill_value=WARP_FILL,
                interp_type=types.INTERP_LINEAR)


def jitter_colors(images: DataNode, strength: float) -> DataNode:
    """torchvision's ColorJitter(s, s, s) on uint8 images, in the fixed order brightness, contrast, saturation."""
    for op in (a.brightness.op, a.contrast.op, a.color.op):
        images = op(images, fn.random.uniform(range=[max(0.0, 1 - strength), 1 + strength]))
    return images


def erase(images: DataNode, probability: float, size: int) -> DataNode:
    """timm's random erasing on [0, 1] images: with ``probability`` one box, filled with uniform noise in [0, 1]."""
    anchor, shape = fn.random_crop_generator(types.Constant(np.array([size, size], dtype=np.int64)),
                                             random_area=list(ERASE_AREA), random_aspect_ratio=list(ERASE_ASPECT))
    shape = shape * fn.random.coin_flip(probability=probability)
    # the box is marked -1 (no pixel is negative), then the marked pixels take the noise
    marked = fn.erase(images, anchor=fn.cast(anchor, dtype=types.FLOAT), shape=fn.cast(shape, dtype=types.FLOAT),
                      axis_names="HW", fill_value=-1.0)
    return marked + (marked < 0) * (fn.random.uniform(marked, range=[0.0, 1.0]) - marked)


@pipeline_def
def image_pipeline(files: list[str], labels: list[int], *, shard_id: int, num_shards: int,
                   device: str, train: bool, augment: str, size: int, resize: int, layout: str = "CHW",
                   rand_augment: DaliRandAugment | None = None, color_jitter: float = 0.0, erasing: float = 0.0):
    """Read this shard, decode (nvJPEG when ``device='gpu'``), crop, flip, then float [0, 1] CHW or HWC.

    The per-image policy (``build_loader`` sets it for training only), in timm's order:
    RandAugment (needs ``enable_conditionals``), colour jitter, random erasing after the
    conversion to [0, 1].
    """
    jpegs, label = fn.readers.file(files=files, labels=labels, shard_id=shard_id,
                                   num_shards=num_shards, random_shuffle=False,
                                   pad_last_batch=True, name="Reader")
    decoder_device = "mixed" if device == "gpu" else "cpu"
    mirror = 0
    if train and augment == "inception":
        images = fn.decoders.image_random_crop(jpegs, device=decoder_device, output_type=types.RGB,
                                               random_area=list(IMAGENET_AREA),
                                               random_aspect_ratio=list(IMAGENET_ASPECT),
                                               num_attempts=10)
        images = fn.resize(images, resize_x=size, resize_y=size, antialias=True)
        mirror = fn.random.coin_flip(probability=0.5)
        if rand_augment is not None or color_jitter:
            images, mirror = fn.flip(images, horizontal=mirror), 0  # timm flips before the policy
    elif train:
        images = fn.decoders.image(jpegs, device=decoder_device, output_type=types.RGB)
        images = fn.resize(images, resize_x=size, resize_y=size, antialias=True)
    else:
        images = fn.decoders.image(jpegs, device=decoder_device, output_type=types.RGB)
        images = fn.resize(images, resize_shorter=resize, antialias=True)
    if rand_augment is not None:
        images = apply_rand_augment(images, rand_augment, size)
    if color_jitter:
        images = jitter_colors(images, color_jitter)
    images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout=layout,
                                      crop=(size, size), mean=[0.0], std=[255.0], mirror=mirror)
    if erasing:
        images = erase(images, erasing, size)
    return images, label.gpu() if device == "gpu" else label


class DaliLoader(Loader):
    """One DALI pipeline per pass over the rest of an epoch, fed this epoch's sample order.

    Files that do not decode are dropped first (``scan.readable``): DALI would stop on them.
    ``memory_format="channels_last"``: the pipeline writes HWC images, handed over as an
    [N, C, H, W] view with channels_last strides (no copy). ``rand_augment`` (timm's
    ``RandAugment``), ``color_jitter`` and ``erasing`` are the per-image training policy.
    """

    def __init__(self, samples: FileSamples, *, device: str, workers: int, augment: str,
                 image_size: int, resize: int, cache_dir: Path | None = None,
                 memory_format: str = "contiguous", rand_augment: RandAugment | None = None,
                 color_jitter: float = 0.0, erasing: float = 0.0, **kwargs):
        if augment not in DALI_AUGMENTS:
            raise InputError(f"augment={augment!r} is not available with DALI; use one of "
                             f"{DALI_AUGMENTS} or backend='torch'")
        self.policy = dict(color_jitter=color_jitter, erasing=erasing, rand_augment=(
            None if rand_augment is None else DaliRandAugment.from_timm(rand_augment)))
        samples = readable(samples, workers=workers, cache_dir=cache_dir)
        super().__init__(size=len(samples), **kwargs)
        self.samples, self.device, self.workers = samples, device, workers
        self.augment, self.image_size, self.resize = augment, image_size, resize
        self.layout = DALI_LAYOUTS[memory_format]
        self.backend = f"dali-{device}"

    def _batches(self) -> Iterator[Batch]:
        # The reader shards its list contiguously, so every rank passes the same list: the
        # remaining indices of rank 0, then rank 1, ... (equal lengths); shard r is then ours.
        order = [i for shard in self.remaining() for i in shard]
        if not order:
            return
        pipe = image_pipeline(
            [self.samples.paths[i] for i in order], [self.samples.labels[i] for i in order],
            shard_id=self.rank, num_shards=self.world_size, device=self.device, train=self.train,
            augment=self.augment, size=self.image_size, resize=self.resize, layout=self.layout,
            **self.policy, enable_conditionals=self.policy["rand_augment"] is not None,
            batch_size=self.batch_size, num_threads=max(1, self.workers),
            device_id=torch.cuda.current_device() if self.device == "gpu" else None,
            seed=mix_seed(self.seed, self._epoch, self.rank, self._batch))
        policy = LastBatchPolicy.DROP if self.train else LastBatchPolicy.PARTIAL
        for out in DALIGenericIterator(pipe, ["images", "labels"], reader_name="Reader",
                                       last_batch_policy=policy):
            images = out[0]["images"]
            if self.layout == "HWC":
                images = images.permute(0, 3, 1, 2)  # [N, C, H, W] with channels_last strides
            yield images, out[0]["labels"].view(-1).long()
