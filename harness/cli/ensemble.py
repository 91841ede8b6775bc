"""``shiftbench ensemble``: logit-averaging ensembles from stored predictions."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("ensemble", help="average the stored logits of models in a run directory and score the ensemble (no model runs)")
    p.add_argument("run_dir", help="a run directory written by `shiftbench run`")
    p.add_argument("--members", required=True, help="comma-separated model names as results.jsonl has them (two or more)")
    p.add_argument("--label", help="the ensemble's name in results (default: ensemble(A+B...))")
    p.add_argument("--json", action="store_true", help="print the new rows as JSON lines")
    p.set_defaults(func=cmd_ensemble)


def cmd_ensemble(args: argparse.Namespace) -> int:
    from harness.cli.run import print_rows
    from harness.engine.ensemble import ensemble_run_dir
    from harness.engine.run import RunLog
    from harness.engine.store import RunDir

    members = [m.strip() for m in args.members.split(",") if m.strip()]
    run_dir = RunDir(args.run_dir)
    print_rows(ensemble_run_dir(run_dir, members, args.label, RunLog()), args.json)
    return 0
