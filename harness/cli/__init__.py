"""The ``shiftbench`` command line: the only place that knows argparse.

Each command group lives in its own module exposing ``register(subparsers)``, which adds its
subcommands with ``set_defaults(func=...)``; ``func(args)`` returns an exit status. Set
``SHIFTBENCH_DEBUG=1`` to see the traceback behind a one-line error. Modules import heavy libraries (torch, matplotlib) inside ``func``, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module

from harness import __version__

COMMAND_MODULES: tuple[str, ...] = (
    "harness.cli.run",
    "harness.cli.report",
    "harness.cli.leaderboard",
    "harness.cli.data",
    "harness.cli.merge",
    "harness.cli.ensemble",
    "harness.cli.download",
    "harness.cli.demo",
    "harness.cli.analyses",
)


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shiftbench",
        description="Evaluate image classifiers under distribution shift and report effective robustness.",
    )
    parser.add_argument("--version", action="version", version=f"shiftbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    # A path that is a file where a folder is needed (or the reverse), or one not writable, is
    # the user's input too: one line naming it, never a traceback.
    except (UserError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
            PermissionError) as exc:
        if os.environ.get("SHIFTBENCH_DEBUG"):
            raise
        print(f"shiftbench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"shiftbench {args.command}: interrupted; completed work is kept, rerun to resume",
            file=sys.stderr,
        )
        return 130
