"""NVIDIA DALI pipelines (train and validation, CPU or GPU) behind the shared ``Loader`` interface."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

from aadscale.data.augment import IMAGENET_AREA, IMAGENET_ASPECT
from aadscale.data.loader import Batch, Loader
from aadscale.data.sampler import mix_seed
from aadscale.data.scan import readable
from aadscale.data.sources import FileSamples
from aadscale.errors import InputError

DALI_AUGMENTS = ("inception", "none")
DALI_LAYOUTS = {"contiguous": "CHW", "channels_last": "HWC"}  # memory format -> the pipeline's output layout


@pipeline_def
def image_pipeline(files: list[str], labels: list[int], *, shard_id: int, num_shards: int,
                   device: str, train: bool, augment: str, size: int, resize: int, layout: str = "CHW"):
    """Read this shard, decode (nvJPEG when ``device='gpu'``), crop, flip, then float [0, 1] CHW or HWC."""
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
    elif train:
        images = fn.decoders.image(jpegs, device=decoder_device, output_type=types.RGB)
        images = fn.resize(images, resize_x=size, resize_y=size, antialias=True)
    else:
        images = fn.decoders.image(jpegs, device=decoder_device, output_type=types.RGB)
        images = fn.resize(images, resize_shorter=resize, antialias=True)
    images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout=layout,
                                      crop=(size, size), mean=[0.0], std=[255.0], mirror=mirror)
    return images, label.gpu() if device == "gpu" else label


class DaliLoader(Loader):
    """One DALI pipeline per pass over the rest of an epoch, fed this epoch's sample order.

    Files that do not decode are dropped first (``scan.readable``): DALI would stop on them.
    ``memory_format="channels_last"``: the pipeline writes HWC images, handed over as an
    [N, C, H, W] view with channels_last strides (no copy).
    """

    def __init__(self, samples: FileSamples, *, device: str, workers: int, augment: str,
                 image_size: int, resize: int, cache_dir: Path | None = None,
                 memory_format: str = "contiguous", **kwargs):
        if augment not in DALI_AUGMENTS:
            raise InputError(f"augment={augment!r} is not available with DALI; use one of "
                             f"{DALI_AUGMENTS} or backend='torch'")
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
