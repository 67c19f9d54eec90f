"""The batches interface every backend shares: length, epochs, and a resumable position."""
from __future__ import annotations

import abc
import math
from collections.abc import Iterator, Sequence

import torch

from aadscale.data.sampler import epoch_order, num_batches
from aadscale.errors import InputError

Batch = tuple[torch.Tensor, torch.Tensor]


class Loader(abc.ABC):
    """``(images, labels)`` batches of one rank: float32 [0, 1] NCHW and int64, resumable mid-epoch.

    NCHW names the dimensions; the strides are channels_last where a DALI backend was asked for it.

    Finishing an epoch moves to the next one; ``set_epoch`` with another epoch starts that epoch
    from its first batch, with the current epoch it keeps the position (so it may follow
    ``load_state_dict``). ``state_dict()["batch"]`` counts batches already handed out.
    """

    backend: str  # the backend that runs, set by each subclass

    def __init__(self, *, size: int, batch_size: int, rank: int, world_size: int, train: bool,
                 seed: int, classes: Sequence[str]):
        self.size, self.batch_size, self.rank, self.world_size = size, batch_size, rank, world_size
        self.train, self.seed, self.classes = train, seed, list(classes)
        self.num_samples = math.ceil(size / world_size)
        self._epoch, self._batch = 0, 0

    @property
    def num_classes(self) -> int:
        """Number of classes (label i is ``classes[i]``)."""
        return len(self.classes)

    def __len__(self) -> int:
        return num_batches(self.num_samples, self.batch_size, drop_last=self.train)

    def set_epoch(self, epoch: int) -> None:
        """Go to ``epoch`` (its order is drawn from seed + epoch); a no-op for the current epoch."""
        if epoch != self._epoch:
            self._epoch, self._batch = epoch, 0

    def state_dict(self) -> dict[str, int]:
        """The position: epoch and number of batches of it already handed out."""
        return {"epoch": self._epoch, "batch": self._batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a ``state_dict()``: the next iteration yields the rest of that epoch."""
        if not 0 <= state["batch"] <= len(self):
            raise InputError(f"loader state batch={state['batch']} is outside 0..{len(self)}; "
                             f"was it saved with another batch size or world size?")
        self._epoch, self._batch = int(state["epoch"]), int(state["batch"])

    def remaining(self) -> list[list[int]]:
        """For each rank, the sample indices it still reads this epoch, in order."""
        # validation reads one fixed permutation: any prefix of it is a class-mixed subset
        order = epoch_order(self.size, world_size=self.world_size,
                            epoch=self._epoch if self.train else 0, seed=self.seed)
        start, stop = self._batch * self.batch_size, len(self) * self.batch_size
        return [order[rank::self.world_size][start:stop] for rank in range(self.world_size)]

    def __iter__(self) -> Iterator[Batch]:
        for batch in self._batches():
            self._batch += 1  # counted when handed out: a checkpoint after the step resumes after it
            yield batch
        self._epoch, self._batch = self._epoch + 1, 0

    @abc.abstractmethod
    def _batches(self) -> Iterator[Batch]:
        """The batches of ``remaining()[self.rank]`` (implemented by each backend)."""
