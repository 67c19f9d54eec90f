"""The progress bar: log lines every N steps without a terminal, silence on other ranks."""
from __future__ import annotations

import logging

import pytest
import torch

from aadscale.tracking import Progress, format_metrics


def test_logs_every_n_steps_without_tty(caplog):
    caplog.set_level(logging.INFO, logger="aadscale.progress")
    with Progress(total=10, enabled=True, desc="train", log_every=4, tty=False) as bar:
        for _ in range(10):
            bar.update(loss=torch.tensor(0.5), acc=50.0)
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split()[1] for line in lines] == ["4/10", "8/10", "10/10"]
    assert "ETA" in lines[0] and "loss=0.5 acc=50" in lines[0]


def test_disabled_is_silent(caplog):
    caplog.set_level(logging.INFO, logger="aadscale.progress")
    bar = Progress(total=5, enabled=False, log_every=1, tty=False)
    for _ in range(5):
        bar.update(loss=1.0)
    assert bar.step == 0 and not caplog.records


def test_tqdm_bar_on_a_tty(capsys):
    with Progress(total=3, enabled=True, desc="epoch 1", tty=True) as bar:
        bar.update(2, loss=0.25)
        assert bar.step == 2 and bar.eta_seconds() >= 0
    err = capsys.readouterr().err
    assert "epoch 1" in err and "loss=0.25" in err and "2/3" in err


def test_format_and_bad_arguments():
    assert format_metrics({"loss": 0.123456, "step": 3}) == "loss=0.1235 step=3"
    with pytest.raises(ValueError, match="log_every=0"):
        Progress(total=3, enabled=True, log_every=0)
