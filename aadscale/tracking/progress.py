"""A progress bar with ETA on the main rank; a log line every N steps where there is no terminal."""
from __future__ import annotations

import logging
import sys
import time
from typing import Any, Mapping

from aadscale.errors import InputError

log = logging.getLogger("aadscale.progress")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """``loss=0.693 acc=51.2``: floats to 4 significant digits."""
    return " ".join(f"{k}={_fmt(v)}" for k, v in metrics.items())


class Progress:
    """Count steps toward ``total``: a tqdm bar on a TTY, else a logging line every ``log_every`` steps.

    Disabled (other ranks) it does nothing. Use as a context manager or call ``close()``.
    """

    def __init__(self, total: int, enabled: bool, desc: str = "train", log_every: int = 50,
                 initial: int = 0, tty: bool | None = None):
        if total < 0 or log_every < 1:
            raise InputError(f"total={total} must be >= 0 and log_every={log_every} >= 1")
        self.total, self.desc, self.log_every = total, desc, log_every
        self.step = initial
        self.enabled = enabled
        self._start, self._start_step = time.monotonic(), initial
        self._bar = None
        tty = sys.stderr.isatty() if tty is None else tty
        if enabled and tty:
            from tqdm import tqdm
            self._bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True)

    def eta_seconds(self) -> float:
        """Seconds left at the rate seen since this bar started (inf before the first step)."""
        done = self.step - self._start_step
        if done <= 0:
            return float("inf")
        return max(self.total - self.step, 0) * (time.monotonic() - self._start) / done

    def update(self, n: int = 1, **metrics: Any) -> None:
        """Advance by ``n`` steps and show ``metrics`` (floats or 0-d tensors)."""
        if not self.enabled:
            return
        before, self.step = self.step, self.step + n
        shown = {k: (v.item() if hasattr(v, "item") else v) for k, v in metrics.items()}
        if self._bar is not None:
            if shown:
                self._bar.set_postfix_str(format_metrics(shown), refresh=False)
            self._bar.update(n)
        elif self.step // self.log_every > before // self.log_every or self.step >= self.total:
            log.info(self.line(shown))

    def line(self, metrics: Mapping[str, Any]) -> str:
        """``train 120/1000 (12%) 3.2 it/s ETA 04:35 loss=...``: the text of a log line."""
        from tqdm import tqdm
        elapsed = time.monotonic() - self._start
        rate = (self.step - self._start_step) / elapsed if elapsed > 0 else 0.0
        pct = 100.0 * self.step / self.total if self.total else 100.0
        eta = self.eta_seconds()
        eta_txt = tqdm.format_interval(eta) if eta != float("inf") else "?"
        return (f"{self.desc} {self.step}/{self.total} ({pct:.0f}%) {rate:.2f} it/s "
                f"ETA {eta_txt} {format_metrics(metrics)}").rstrip()

    def close(self) -> None:
        """Close the bar (further updates are ignored)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.enabled = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
