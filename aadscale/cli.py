"""The ``aadscale`` command: one sub-command per module in ``aadscale/commands/``."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import aadscale.commands
from aadscale.errors import InputError


def build_parser() -> argparse.ArgumentParser:
    """Collect every ``aadscale.commands.<name>.register(subparsers)``."""
    parser = argparse.ArgumentParser(prog="aadscale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for info in sorted(pkgutil.iter_modules(aadscale.commands.__path__), key=lambda i: i.name):
        importlib.import_module(f"aadscale.commands.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse and run; bad input (``InputError``) is printed without a traceback, anything else keeps it."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except InputError as err:
        print(f"aadscale {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
