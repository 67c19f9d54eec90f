"""Readers for CIFAR-10 and MNIST in their standard files on disk (no download, no md5 check)."""
from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aadscale.data.classes import label_names
from aadscale.errors import InputError


@dataclass(frozen=True)
class ArraySamples:
    """Images as uint8 [N, H, W, C], int64 labels and the class names (label i is ``classes[i]``)."""
    images: np.ndarray
    labels: np.ndarray
    classes: list[str]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.labels)


def _is_train(split: str) -> bool:
    if split not in ("train", "val", "test"):
        raise InputError(f"split {split!r} is not one of train, val, test for CIFAR-10 / MNIST")
    return split == "train"


def read_cifar10(root: str | os.PathLike, split: str) -> ArraySamples:
    """CIFAR-10's python pickle batches (``data_batch_1..5`` for train, ``test_batch`` otherwise)."""
    root = Path(root)
    folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    names = [f"data_batch_{i}" for i in range(1, 6)] if _is_train(split) else ["test_batch"]
    images, labels = [], []
    for name in names:
        path = folder / name
        if not path.is_file():
            raise InputError(f"CIFAR-10 file {path} is missing; extract cifar-10-python.tar.gz "
                             f"(https://www.cs.toronto.edu/~kriz/cifar.html) into {root}")
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    meta = folder / "batches.meta"
    classes = label_names(10)
    if meta.is_file():
        with open(meta, "rb") as f:
            classes = [name.decode() for name in pickle.load(f, encoding="bytes")[b"label_names"]]
    return ArraySamples(np.concatenate(images).transpose(0, 2, 3, 1).copy(),
                        np.concatenate(labels), classes)


def read_idx(path: Path) -> np.ndarray:
    """An idx file (MNIST's format, optionally gzipped) of unsigned bytes."""
    data = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if data[:3] != b"\x00\x00\x08":
        raise InputError(f"{path} is not an unsigned-byte idx file (magic {data[:4].hex()})")
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def read_mnist(root: str | os.PathLike, split: str) -> ArraySamples:
    """MNIST's idx files (``train-*`` / ``t10k-*``, ``.gz`` or not) in ``root`` or ``root/MNIST/raw``."""
    root = Path(root)
    prefix = "train" if _is_train(split) else "t10k"

    def find(kind: str) -> Path:
        for folder in (root, root / "MNIST" / "raw"):
            for suffix in ("", ".gz"):
                if (folder / f"{prefix}-{kind}{suffix}").is_file():
                    return folder / f"{prefix}-{kind}{suffix}"
        raise InputError(f"MNIST file {root / (prefix + '-' + kind)}[.gz] is missing; put the four "
                         f"idx files from http://yann.lecun.com/exdb/mnist/ into {root}")

    images = read_idx(find("images-idx3-ubyte"))
    labels = read_idx(find("labels-idx1-ubyte")).astype(np.int64)
    if len(images) != len(labels):
        raise InputError(f"MNIST in {root}: {len(images)} images but {len(labels)} labels")
    return ArraySamples(images[..., None].copy(), labels, label_names(10))
