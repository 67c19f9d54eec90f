"""Data: ``build_loader`` for the torch, dali-cpu and dali-gpu backends; the built-in demo dataset."""
from aadscale.data.build import (BACKENDS, IndexedDataset, build_dataset, build_loader,
                                 resolve_backend)
from aadscale.data.demo import DEFAULT_DEMO_ROOT, ensure_demo_data
from aadscale.data.loader import Loader

__all__ = ["build_loader", "build_dataset", "IndexedDataset", "resolve_backend", "BACKENDS",
           "ensure_demo_data", "DEFAULT_DEMO_ROOT", "Loader"]
