"""Where a sweep keeps its state and checkpoints: a local path or a URI (file://, s3://, gs://), and how to open it."""
from __future__ import annotations

import os


def is_uri(path: str) -> bool:
    """True for ``scheme://...``, False for a plain path."""
    return "://" in path


def absolute(path: str) -> str:
    """A URI as it is, a plain path made absolute (the workers may start in another folder)."""
    return path if is_uri(path) else os.path.abspath(path)


def filesystem(uri: str):
    """``(pyarrow.fs.FileSystem, path)`` for a URI or a local path."""
    import pyarrow.fs
    return pyarrow.fs.FileSystem.from_uri(uri)


def checkpoint_uri(path: str, storage: str) -> str:
    """A Ray checkpoint's storage path as a URI ``ray.train.Checkpoint(uri)`` can open anywhere."""
    scheme, sep, _ = storage.partition("://")
    return f"{scheme}://{path}" if sep else path  # file:///abs/path, s3://bucket/key
