"""``submit``, ``validate`` and ``leaderboard``: package a run for the leaderboard, check a bundle
without trusting it, and build the ranked site from a folder of bundles."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _suite(text: str | None) -> tuple[str, ...]:
    if text is None:
        from reports.submission import DEFAULT_REQUIRED_SHIFTS

        return DEFAULT_REQUIRED_SHIFTS
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    if not names:
        raise ValueError(
            "--require needs at least one shift name, e.g. --require imagenet,imagenet-r"
        )
    return names


def _add_require(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--require",
        metavar="SHIFTS",
        help="comma-separated shifts every submission must cover (default: the leaderboard suite "
        "imagenet,imagenetv2,imagenet-r,imagenet-sketch,imagenet-a,objectnet)",
    )


def _add_incomplete(p: argparse.ArgumentParser, text: str) -> None:
    p.add_argument("--allow-incomplete", action="store_true", help=text)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "submit",
        help="package one model of a run directory as a validated leaderboard submission",
        description="Bundle a model card, results.jsonl rows and per-example predictions (with sha256) "
        "into a .tar.gz, then validate it; nothing is written when validation fails.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument(
        "--card", type=Path, required=True, help="model card TOML (see docs/leaderboard.md)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("submission.tar.gz"),
        help="bundle to write (default: %(default)s)",
    )
    p.add_argument(
        "--model",
        help="which model of RUN_DIR to submit (default: the card's run_model, or the only one)",
    )
    p.add_argument(
        "--data-root",
        type=Path,
        help="dataset root: also check keys and labels (needed for ObjectNet, whose class map ships with the data)",
    )
    _add_require(p)
    _add_incomplete(p, "bundle a run scored on data other than the published test sets, marked "
                    "incomplete in its manifest: a trial of the workflow, refused by validate and leaderboard "
                    "unless they are given --allow-incomplete too")
    p.set_defaults(func=_submit)

    p = sub.add_parser(
        "validate",
        help="check a submission bundle: schema, hashes, counts, keys, protocols, recomputed metrics",
        description="Each failure is printed as one line; the exit status is 1 when any check fails.",
    )
    p.add_argument("submission", type=Path, metavar="SUBMISSION")
    p.add_argument(
        "--data-root", type=Path, help="dataset root: also check keys and labels against the data"
    )
    _add_require(p)
    _add_incomplete(p, "accept a bundle marked incomplete (a trial) instead of refusing it")
    p.set_defaults(func=_validate)

    p = sub.add_parser(
        "leaderboard",
        help="validate a folder of submissions and write the ranked site (HTML, Markdown, PDF)",
        description="Accepted submissions are placed against the baseline trend and ranked by average "
        "effective robustness and average OOD accuracy, one table per protocol version; rejected ones "
        "are listed with the reasons.",
    )
    p.add_argument("submissions", type=Path, metavar="SUBMISSIONS_DIR")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="site folder to write (created; only files inside it are written)",
    )
    p.add_argument(
        "--baseline",
        type=Path,
        action="append",
        default=[],
        metavar="RESULTS_JSONL",
        help="results.jsonl of the baseline models the trend is fitted on (repeatable)",
    )
    p.add_argument(
        "--data-root", type=Path, help="dataset root: also check keys and labels against the data"
    )
    p.add_argument(
        "--trust-labels",
        action="store_true",
        help="without --data-root, list bundles whose labels cannot be checked (marked as unverified) "
        "instead of rejecting them",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="revalidate every bundle instead of reusing SITE_DIR/.validation for unchanged ones",
    )
    _add_require(p)
    _add_incomplete(p, "accept bundles marked incomplete (trials) instead of listing them as rejected")
    p.set_defaults(func=_leaderboard)


def _submit(args: argparse.Namespace) -> int:
    from harness.files import missing_folders, remove_empty_folders, temp_path
    from reports.submission import build_members, load_card, pack
    from reports.submission_validate import validate_bundle

    card = load_card(args.card)
    manifest, members = build_members(args.run_dir, card, args.model, args.allow_incomplete)
    out: Path = args.out
    made = missing_folders(out)  # a refused bundle leaves none of them behind
    staging = temp_path(out, ".unchecked")
    pack(manifest, members, staging)
    try:
        v = validate_bundle(
            staging,
            required=_suite(args.require),
            data_root=args.data_root,
            allow_incomplete=args.allow_incomplete,
        )
    except BaseException:
        staging.unlink(missing_ok=True)
        remove_empty_folders(made)
        raise
    if not v.ok:
        staging.unlink(missing_ok=True)
        remove_empty_folders(made)
        for f in v.failures:
            print(f"{args.run_dir}: {f}", file=sys.stderr)
        print(
            f"shiftbench submit: {len(v.failures)} check(s) failed; no bundle written",
            file=sys.stderr,
        )
        return 1
    staging.replace(out)
    trial = " (marked incomplete: a trial bundle)" if manifest.get("incomplete") else ""
    labels = "" if v.labels_checked else "; labels not checked against the data (pass --data-root)"
    print(
        f"wrote {out}: {manifest['model']} on {len(manifest['predictions'])} shifts, all checks passed{trial}{labels}"
    )
    return 0


def _validate(args: argparse.Namespace) -> int:
    from reports.submission_validate import validate_bundle

    v = validate_bundle(
        args.submission,
        required=_suite(args.require),
        data_root=args.data_root,
        allow_incomplete=args.allow_incomplete,
    )
    if v.ok:
        trial = " (a trial bundle on incomplete data)" if v.manifest.get("incomplete") else ""
        checked = (
            f"keys and labels checked against {args.data_root}"
            if v.labels_checked
            else "labels UNVERIFIED: the bundle's own labels were trusted; pass --data-root to check them against the dataset"
        )
        print(f"{args.submission}: OK: {v.manifest['model']}, {len(v.scores)} settings recomputed{trial}; {checked}")
        return 0
    for f in v.failures:
        print(f"{args.submission}: {f}")
    return 1


def _leaderboard(args: argparse.Namespace) -> int:
    from reports.leaderboard import build_leaderboard

    board = build_leaderboard(
        args.submissions,
        args.out,
        required=_suite(args.require),
        baselines=args.baseline,
        data_root=args.data_root,
        fresh=args.fresh,
        trust_labels=args.trust_labels,
        allow_incomplete=args.allow_incomplete,
    )
    print(
        f"wrote {args.out}: {len(board.accepted)} accepted, {len(board.rejected)} rejected, "
        f"{len(board.tables)} protocol table(s); open {args.out / 'index.html'}"
    )
    return 0
