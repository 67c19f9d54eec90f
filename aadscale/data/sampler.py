"""Which samples a rank reads in an epoch (DistributedSampler semantics), as pure functions."""
from __future__ import annotations

import math

import numpy as np
import torch


def epoch_order(n: int, *, world_size: int, epoch: int, seed: int) -> list[int]:
    """A permutation of n samples (seeded by seed + epoch) padded by wrapping to a multiple of world_size."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    total = math.ceil(n / world_size) * world_size
    return (order * math.ceil(total / n))[:total]


def num_batches(num_samples: int, batch_size: int, drop_last: bool) -> int:
    """Batches in an epoch of ``num_samples``; the last partial one counts unless dropped."""
    return num_samples // batch_size if drop_last else math.ceil(num_samples / batch_size)


def mix_seed(*values: int) -> int:
    """A well-mixed 31-bit seed from integers (e.g. seed, epoch, sample)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1)[0] >> 1)
