"""Entry points: bad input is one line and exit code 2; any other error keeps its traceback."""
from __future__ import annotations

import pytest

from aadscale import cli
from aadscale.errors import InputError


def _with_run(monkeypatch, error: Exception):
    import aadscale.commands.demo as demo

    def run(args):
        raise error
    monkeypatch.setattr(demo, "run", run)  # what `aadscale demo` runs, without training


def test_input_error_is_reported_in_one_line(monkeypatch, capsys):
    _with_run(monkeypatch, InputError("eps=-1 must be >= 0"))
    assert cli.main(["demo"]) == 2
    assert capsys.readouterr().err.strip() == "aadscale demo: error: eps=-1 must be >= 0"


def test_a_library_value_error_is_not_taken_for_bad_input(monkeypatch):
    _with_run(monkeypatch, ValueError("raised inside torch"))
    with pytest.raises(ValueError, match="inside torch"):
        cli.main(["demo"])


def test_config_and_attacks_raise_the_project_error():
    import torch

    from aadscale import attacks
    from aadscale.config import load_config
    with pytest.raises(InputError, match="did you mean epochs"):
        load_config("demo", ["train.epoch=2"])
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        attacks.pgd(torch.nn.Linear(4, 2), torch.full((1, 1, 2, 2), 2.0), torch.tensor([0]), eps=0.1)
