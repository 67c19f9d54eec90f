"""Command lines: options and ``section.field=value`` overrides in any order, for the launcher and ``aadscale``."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from aadscale import cli
from aadscale.commands import compare, evaluate, figures

LAUNCHER = Path(__file__).resolve().parent.parent / "launchers" / "train_imagenet.py"


@pytest.fixture(scope="module")
def launcher():
    spec = importlib.util.spec_from_file_location("train_imagenet", LAUNCHER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launcher_takes_options_and_overrides_in_any_order(launcher):
    args = launcher.parse_args(["train.epochs=2", "--preset", "demo", "train.max_steps=2", "--resume", "auto",
                                "log.dir=runs"])
    assert (args.preset, args.resume) == ("demo", "auto")
    assert args.overrides == ["train.epochs=2", "train.max_steps=2", "log.dir=runs"]


def test_commands_take_options_and_overrides_in_any_order():
    args = cli.parse_args(["compare", "train.epochs=1", "--seeds", "0", "objective.lambda1=0.5", "--limit", "8"])
    assert (args.command, args.run, args.seeds, args.limit) == ("compare", compare.run, "0", 8)
    assert args.overrides == ["train.epochs=1", "objective.lambda1=0.5"]
    args = cli.parse_args(["demo", "train.epochs=1", "--ranks", "1", "attack.eps=4/255"])
    assert (args.ranks, args.overrides) == (1, ["train.epochs=1", "attack.eps=4/255"])


def test_positionals_and_sub_commands_still_parse():
    args = cli.parse_args(["evaluate", "--out", "o", "model.pt", "--eps", "8/255"])
    assert (args.run, args.checkpoint, args.out, args.eps) == (evaluate.run, "model.pt", "o", "8/255")
    assert cli.parse_args(["evaluate", "--out", "o"]).checkpoint is None
    args = cli.parse_args(["figures", "eps", "--checkpoint", "m.pt", "--out", "f.png"])  # sub-commands: options only
    assert (args.command, args.command_figure, args.run) == ("figures", "eps", figures.run_curve)
    assert args.checkpoint == "m.pt"


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "--out", "o", "a.pt", "b.pt"], "unrecognized arguments: b.pt"),
    (["train"], "invalid choice: 'train'"),
    (["compare", "--bogus", "0"], "unrecognized arguments: --bogus"),
])
def test_bad_command_lines_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.parse_args(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
