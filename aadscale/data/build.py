"""``build_loader``: one entry point for every dataset and backend."""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from aadscale.data.arrays import read_cifar10, read_mnist
from aadscale.data.augment import (AUGMENTS, default_val_resize, effective_color_jitter, rand_augment,
                                   train_transform, val_transform)
from aadscale.data.demo import DEFAULT_DEMO_ROOT, ensure_demo_data
from aadscale.data.loader import Loader
from aadscale.data.sources import list_images
from aadscale.data.torch_backend import ArrayDataset, FileDataset, TorchLoader
from aadscale.errors import InputError
from aadscale.memory_format import MEMORY_FORMATS

log = logging.getLogger("aadscale.data")

BACKENDS = ("torch", "dali-cpu", "dali-gpu", "auto")
FILE_DATASETS = ("imagenet", "folder", "demo")
ARRAY_READERS = {"cifar10": read_cifar10, "mnist": read_mnist}
DEFAULT_AUGMENT = {"imagenet": "inception", "folder": "inception", "demo": "none",
                   "cifar10": "pad-crop", "mnist": "none"}


def resolve_backend(backend: str, dataset: str) -> str:
    """The backend that will run: ``auto`` picks dali-gpu, dali-cpu, torch in that order; others must work."""
    if backend not in BACKENDS:
        raise InputError(f"data backend {backend!r} is not one of {BACKENDS}")
    has_dali = importlib.util.find_spec("nvidia") is not None and \
        importlib.util.find_spec("nvidia.dali") is not None
    has_cuda = torch.cuda.is_available()
    if backend == "auto":
        if dataset not in FILE_DATASETS or not has_dali:
            return "torch"
        return "dali-gpu" if has_cuda else "dali-cpu"
    if backend.startswith("dali"):
        if dataset not in FILE_DATASETS:
            raise InputError(f"backend {backend!r} reads image files; dataset {dataset!r} needs "
                             f"data.backend=torch (or auto)")
        if not has_dali:
            raise InputError(f"backend {backend!r} needs NVIDIA DALI, which is not installed: "
                             f"pip install nvidia-dali-cuda130, or use data.backend=torch")
        if backend == "dali-gpu" and not has_cuda:
            raise InputError("backend 'dali-gpu' needs a CUDA GPU and torch.cuda.is_available() is "
                             "False; use data.backend=dali-cpu or torch")
    return backend


def _resolve(root, dataset: str, image_size: int, val_resize: int, augment: str | None):
    """Check the dataset settings; the root (demo default), augmentation and validation resize."""
    if dataset not in FILE_DATASETS + tuple(ARRAY_READERS):
        raise InputError(f"dataset {dataset!r} is not one of {FILE_DATASETS + tuple(ARRAY_READERS)}")
    if image_size < 1:
        raise InputError(f"image_size={image_size} must be >= 1")
    if not str(root):
        if dataset != "demo":
            raise InputError(f"no data root given for dataset {dataset!r}; set data.root (--data)")
        root = DEFAULT_DEMO_ROOT
    augment = augment or DEFAULT_AUGMENT[dataset]
    if augment not in AUGMENTS:
        raise InputError(f"augment {augment!r} is not one of {AUGMENTS}")
    resize = val_resize or default_val_resize(image_size, augment)
    if resize < image_size:
        raise InputError(f"val_resize={resize} is smaller than image_size={image_size}; the centre "
                         f"crop needs val_resize >= image_size (0 picks a default)")
    return root, augment, resize


def _transform(train: bool, augment: str, resize: int, image_size: int, **policy):
    return (functools.partial(train_transform, augment=augment, size=image_size, **policy) if train
            else functools.partial(val_transform, resize=resize, size=image_size))


def _policy(train: bool, image_size: int, spec: str, color_jitter: float, erasing: float) -> dict:
    """The per-image policy of a training loader (none for validation): timm's RandAugment or None,
    the colour jitter timm keeps beside it, the erasing probability; InputError for bad values."""
    policy = rand_augment(spec, image_size)  # checked for validation loaders too: the spec is wrong either way
    if color_jitter < 0 or not 0 <= erasing <= 1:
        raise InputError(f"need color_jitter >= 0 and 0 <= erasing <= 1; got color_jitter={color_jitter}, "
                         f"erasing={erasing}")
    if not train:
        return {}
    jitter = effective_color_jitter(spec, color_jitter)
    if jitter != color_jitter:
        log.warning("color_jitter=%g is off beside rand_augment=%r, as in timm (which keeps it only "
                    "beside its '3a' op sets)", color_jitter, spec)
    return dict(rand_augment=policy, color_jitter=jitter, erasing=erasing)


class IndexedDataset(Dataset):
    """A split by integer index, read as validation (no randomness): ``(image [0, 1] CHW, label)``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def classes(self) -> list[str]:
        """The split's class names (label i is ``classes[i]``)."""
        return self.dataset.samples.classes

    def __getitem__(self, i: int):
        return self.dataset[(i, 0)]


def build_dataset(root: str | os.PathLike, split: str, *, image_size: int, dataset: str = "folder",
                  val_resize: int = 0, augment: str | None = None) -> IndexedDataset:
    """``split`` as a map-style dataset with the validation transform, for evaluation and analysis.

    They choose their own fixed subsets by index; ``augment`` only sets the default resize.
    """
    root, augment, resize = _resolve(root, dataset, image_size, val_resize, augment)
    transform = _transform(False, augment, resize, image_size)
    if dataset in ARRAY_READERS:
        return IndexedDataset(ArrayDataset(ARRAY_READERS[dataset](root, split), transform))
    files = list_images(ensure_demo_data(root) if dataset == "demo" else root, split)
    return IndexedDataset(FileDataset(files, transform))


def build_loader(root: str | os.PathLike, split: str, *, backend: str = "torch", batch_size: int,
                 image_size: int, rank: int = 0, world_size: int = 1, dataset: str = "folder",
                 train: bool | None = None, seed: int = 0, workers: int = 2, val_resize: int = 0,
                 augment: str | None = None, cache_dir: str | os.PathLike | None = None,
                 memory_format: str = "contiguous", rand_augment: str = "", color_jitter: float = 0.0,
                 erasing: float = 0.0) -> Loader:
    """Batches of ``(images float32 [0, 1] NCHW, labels int64)`` of ``split`` for ``rank`` of ``world_size``.

    ``batch_size`` is per rank. ``train`` (default: split starts with 'train') shuffles from
    seed + epoch, augments and drops the last partial batch; validation reads one fixed
    permutation (from seed) and keeps the last partial batch. ``augment`` defaults per dataset
    (inception for imagenet/folder, pad-crop for cifar10, none for mnist and demo).
    ``cache_dir`` holds the DALI backends' list of corrupt files (default $AADSCALE_CACHE).
    ``memory_format`` (``contiguous`` or ``channels_last``): the DALI backends write that layout
    directly; the torch backend always hands over NCHW batches (pinned when CUDA is there),
    which the copy to the device converts (``Tensor.to(device, memory_format=...)``), so the
    layout never costs a host copy.
    Training loaders only (ignored for validation), after crop and flip, in timm's order:
    ``rand_augment`` (timm's RandAugment spec, e.g. 'rand-m9-mstd0.5-inc1'; '' = off),
    ``color_jitter`` (brightness, contrast and saturation factor; off beside RandAugment, as in
    timm), ``erasing`` (probability of one random box filled with uniform noise in [0, 1]).
    """
    if batch_size < 1 or not 0 <= rank < world_size:
        raise InputError(f"need batch_size >= 1 and 0 <= rank < world_size; got "
                         f"batch_size={batch_size}, rank={rank}, world_size={world_size}")
    if memory_format not in MEMORY_FORMATS:
        raise InputError(f"memory_format={memory_format!r} must be one of {list(MEMORY_FORMATS)}")
    root, augment, resize = _resolve(root, dataset, image_size, val_resize, augment)
    train = split.startswith("train") if train is None else train
    name = resolve_backend(backend, dataset)
    policy = _policy(train, image_size, rand_augment, color_jitter, erasing)
    transform = _transform(train, augment, resize, image_size, **policy)  # torch backend
    common = dict(batch_size=batch_size, rank=rank, world_size=world_size, train=train, seed=seed)
    if dataset in ARRAY_READERS:
        samples = ARRAY_READERS[dataset](root, split)
        loader: Loader = TorchLoader(ArrayDataset(samples, transform), workers=workers,
                                     classes=samples.classes, **common)
    else:
        files = list_images(ensure_demo_data(root) if dataset == "demo" else root, split)
        if name == "torch":
            loader = TorchLoader(FileDataset(files, transform), workers=workers,
                                 classes=files.classes, **common)
        else:
            from aadscale.data.dali import DaliLoader
            loader = DaliLoader(files, device=name.removeprefix("dali-"), workers=workers,
                                augment=augment, image_size=image_size, resize=resize,
                                cache_dir=Path(cache_dir) if cache_dir else None,
                                memory_format=memory_format, classes=files.classes, **policy, **common)
    log.info("data backend %s%s: %s split %r of %s, rank %d/%d, %d samples, %d batches of %d",
             name, " (auto)" if backend == "auto" else "", dataset, split, root, rank, world_size,
             loader.num_samples, len(loader), batch_size)
    return loader
