"""The torch backend: PIL / array datasets behind a DataLoader reading this rank's indices."""
from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Iterator

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from aadscale.data.arrays import ArraySamples
from aadscale.data.loader import Batch, Loader
from aadscale.data.sampler import mix_seed
from aadscale.data.scan import UNREADABLE
from aadscale.data.sources import FileSamples
from aadscale.distributed.signals import ignore_in_worker
from aadscale.errors import InputError

log = logging.getLogger("aadscale.data")
Transform = Callable[[object, torch.Generator], torch.Tensor]


class FileDataset(Dataset):
    """Decodes ``(index, epoch seed)`` items; an unreadable file is replaced by the next readable one and logged."""

    def __init__(self, samples: FileSamples, transform: Transform):
        self.samples, self.transform = samples, transform
        self.replaced = multiprocessing.Value("i", 0)  # shared by the DataLoader workers

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, epoch_seed = item
        seed = mix_seed(epoch_seed, index)  # the sample's augmentation, whichever rank or worker reads it
        for offset in range(len(self.samples)):
            i = (index + offset) % len(self.samples)
            try:
                with Image.open(self.samples.paths[i]) as image:
                    picture = image.convert("RGB")
            except UNREADABLE as err:
                with self.replaced.get_lock():
                    self.replaced.value += 1
                    count = self.replaced.value
                log.warning("unreadable image replaced by the next sample (%d so far): %s (%s)",
                            count, self.samples.paths[i], err)
                continue
            return self.transform(picture, torch.Generator().manual_seed(seed)), self.samples.labels[i]
        raise InputError(f"none of the {len(self.samples)} images is readable; check the data folder")


class ArrayDataset(Dataset):
    """``(index, epoch seed)`` items of in-memory uint8 images (CIFAR-10, MNIST)."""

    def __init__(self, samples: ArraySamples, transform: Transform):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, epoch_seed = item
        seed = mix_seed(epoch_seed, index)
        image = torch.from_numpy(self.samples.images[index]).permute(2, 0, 1)
        return self.transform(image, torch.Generator().manual_seed(seed)), int(self.samples.labels[index])


class TorchLoader(Loader):
    """DataLoader over this rank's remaining indices; augmentations are seeded by (seed, epoch, sample)."""

    backend = "torch"

    def __init__(self, dataset: FileDataset | ArrayDataset, *, workers: int, **kwargs):
        super().__init__(size=len(dataset), **kwargs)
        self.dataset, self.workers = dataset, workers

    def _batches(self) -> Iterator[Batch]:
        epoch_seed = mix_seed(self.seed, self._epoch)
        items = [(i, epoch_seed) for i in self.remaining()[self.rank]]
        if not items:
            return
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=items, num_workers=self.workers,
                            pin_memory=torch.cuda.is_available(), worker_init_fn=ignore_in_worker)
        yield from loader
