"""``shiftbench demo``: the whole workflow on miniature data, each command printed as typed."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="try the whole workflow in about a minute: miniature data, tiny CLIP, every command shown",
        description="Writes small datasets in the real layouts and a tiny zero-shot/fine-tuned CLIP pair "
        "into DIR, then runs check-data, run, wiseft, soup, report, submit, validate and leaderboard "
        "there, printing each command as you would type it.",
    )
    p.add_argument("dir", nargs="?", type=Path, default=Path("shiftbench-demo"), metavar="DIR",
                   help="a new or empty folder (default: ./shiftbench-demo)")
    p.set_defaults(func=demo_cmd)


def demo_cmd(args: argparse.Namespace) -> int:
    from harness.demo import run_demo

    run_demo(args.dir)
    return 0
