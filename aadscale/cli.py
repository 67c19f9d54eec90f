"""The ``aadscale`` command: one sub-command per module in ``aadscale/commands/``."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import NoReturn

import aadscale.commands
from aadscale.distributed import run_main
from aadscale.errors import InputError


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """Collect every ``aadscale.commands.<name>.register(subparsers)``: the parser and each command's own."""
    parser = argparse.ArgumentParser(prog="aadscale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for info in sorted(pkgutil.iter_modules(aadscale.commands.__path__), key=lambda i: i.name):
        importlib.import_module(f"aadscale.commands.{info.name}").register(sub)
    return parser, sub.choices


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; a command's options and positionals (overrides, a checkpoint) in any order."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, commands = build_parser()
    command = commands.get(argv[0]) if argv else None
    if command is None:
        return parser.parse_args(argv)  # --help, or the error that names the commands
    try:
        return command.parse_intermixed_args(argv[1:], argparse.Namespace(command=argv[0]))
    except TypeError:  # argparse cannot intermix a command with sub-commands (figures): they take options only
        return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Parse and run; bad input (``InputError``) is printed without a traceback, anything else keeps it."""
    args = parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except InputError as err:
        print(f"aadscale {args.command}: error: {err}", file=sys.stderr)
        return 2


def entry() -> NoReturn:
    """The console script ``aadscale``: ``main`` through the one exit path."""
    run_main(main)


if __name__ == "__main__":
    run_main(main)
