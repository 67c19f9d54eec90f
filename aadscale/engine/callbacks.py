"""What the loop tells the outside world (Ray Tune reporting, tests): a small callback protocol."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class StepInfo:
    """Where the run is: global optimiser step, epoch, the latest metrics, the run folder."""
    step: int
    epoch: int
    metrics: dict = field(default_factory=dict)
    run_dir: Path | None = None
    checkpoint: Path | None = None
    evaluated: bool = False  # at an epoch end: the engine evaluated (``metrics`` has fresh eval/*)


class Callback:
    """Override what you need; every hook runs on every rank."""

    def on_step_end(self, info: StepInfo) -> None:
        """After an optimiser step (and its checkpoint, if one was due)."""

    def on_checkpoint(self, info: StepInfo) -> None:
        """After a checkpoint was written; ``info.checkpoint`` is its folder."""

    def on_epoch_end(self, info: StepInfo) -> None:
        """After an epoch, its checkpoint and, when ``info.evaluated``, its evaluation (fresh eval/* metrics)."""
