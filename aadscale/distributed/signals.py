"""Signals that ask a job to save and stop: caught on whichever rank they reach, noted on the host only.

A handler that did anything but note the signal could interrupt a collective or a
checkpoint write half-way. This one records which signal came and when; the training loop
folds the note into a reduction it already does, so that every rank agrees on the step to
stop at, and stops there with a complete checkpoint (``aadscale.engine.trainer``).
"""
from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

RESUME_EXIT_CODE = 75  # sysexits.h EX_TEMPFAIL: the run saved on a signal; run it again to resume


@dataclass(frozen=True)
class Received:
    """The first stop signal this process caught, and when (``time.monotonic``)."""
    name: str
    at: float


class SavedOnSignal(Exception):
    """The run stopped at a step boundary after a stop signal and saved a complete checkpoint there."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path) -> None:
        super().__init__(f"{signal_name} received: stopped at step {step} and saved {checkpoint}; "
                         f"exit code {RESUME_EXIT_CODE}: run the same command with --resume auto to continue")
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint


def ignore_in_worker(worker_id: int) -> None:
    """A data-loader worker's ``worker_init_fn``: ignore the stop signals its parent rank catches.

    The DeepSpeed launcher signals every process of a rank's tree and torch gives its workers a
    handler that dies on SIGTERM; a dead worker would fail the rank before it can save. A forked
    worker still holds its parent's Python handlers, which say which signals the rank catches.
    """
    for number in signal.Signals:
        handler = signal.getsignal(number)
        if isinstance(getattr(handler, "__self__", None), StopSignals):
            signal.signal(number, signal.SIG_IGN)


class StopSignals:
    """Catches ``names`` while installed (main thread only: Python delivers signals there) and notes the first.

    Elsewhere (a Ray Train worker runs the loop in another thread) nothing is installed and
    ``active`` is False: the process's owner handles its signals.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.received: Received | None = None
        self._previous: dict[int, object] = {}
        self.active = False

    def install(self) -> "StopSignals":
        """Catch the signals from now on; returns self."""
        if self.names and threading.current_thread() is threading.main_thread():
            for name in self.names:
                number = signal.Signals[name]
                self._previous[number] = signal.signal(number, self._note)
            self.active = True
        return self

    def _note(self, number: int, frame) -> None:
        if self.received is None:
            self.received = Received(signal.Signals(number).name, time.monotonic())

    def close(self) -> None:
        """Put back the handlers that were there before."""
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()
        self.active = False

    def __enter__(self) -> "StopSignals":
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.close()
