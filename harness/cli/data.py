"""``check-data``, ``pack`` and ``make-heldout``: the data side of the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

V2_VARIANTS = {
    "matched-frequency": "imagenetv2",
    "threshold-0.7": "imagenetv2-threshold-0.7",
    "threshold0.7": "imagenetv2-threshold-0.7",
    "top-images": "imagenetv2-top-images",
    "topimages": "imagenetv2-top-images",
}
USER_SHIFTS = ("folder", "folder-unlabeled", "wds")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check-data", help="which shifts are present under --data-root, complete and verified"
    )
    p.add_argument("shifts", nargs="*", help="shift names (default: every built-in shift)")
    p.add_argument("--data-root", required=True, type=Path)
    p.add_argument("--split", help="split to check (default: each shift's official test split)")
    p.add_argument(
        "--deep", action="store_true", help="also decode every image and verify shard hashes"
    )
    p.add_argument(
        "--form",
        choices=("folder", "wds"),
        help="check only this form (default: the one a run reads)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON report per line")
    p.set_defaults(func=check_data)

    p = sub.add_parser("pack", help="write a shift as CLIP_benchmark-style webdataset shards")
    p.add_argument("shift")
    p.add_argument("--data-root", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--split", help="split to pack (WILDS default: the official OOD test)")
    p.add_argument(
        "--variant", help="ImageNetV2 variant: matched-frequency, threshold-0.7, top-images"
    )
    p.add_argument("--maxcount", type=int, default=10_000, help="images per shard (default 10000)")
    p.set_defaults(func=pack_cmd)

    p = sub.add_parser(
        "make-heldout", help="draw and save a seeded held-out slice of ImageNet train"
    )
    p.add_argument("--data-root", required=True, type=Path)
    p.add_argument("--per-class", type=int, default=26)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=make_heldout)


def check_data(args: argparse.Namespace) -> int:
    from harness.registry import get_shift, shifts
    from shifts.check import check_shift

    if not args.data_root.is_dir():
        raise FileNotFoundError(f"--data-root {args.data_root} is not a folder")
    names = args.shifts or [n for n in shifts.names() if n not in USER_SHIFTS]
    status = 0
    for name in names:
        shift = get_shift(name)
        report = check_shift(shift, args.data_root, args.split, deep=args.deep, form=args.form)
        print(json.dumps(report.to_dict()) if args.json else report.summary())
        if report.found and report.problems:
            status = 2  # partial or wrong data is always an error
        elif not report.found and args.shifts:
            status = 2  # a shift asked for by name must be there
    return status


def resolve_pack_name(shift: str, variant: str | None) -> str:
    if variant is None:
        return shift
    if not shift.startswith("imagenetv2"):
        raise ValueError(f"--variant applies to imagenetv2 only, not {shift!r}")
    if variant not in V2_VARIANTS:
        raise ValueError(
            f"unknown ImageNetV2 variant {variant!r}; choose one of matched-frequency, threshold-0.7, top-images"
        )
    return V2_VARIANTS[variant]


def pack_cmd(args: argparse.Namespace) -> int:
    from harness.registry import get_shift
    from shifts.pack import pack

    shift = get_shift(resolve_pack_name(args.shift, args.variant))
    manifest = pack(shift, args.data_root, args.out, args.split, args.maxcount, progress=True)
    print(
        f"packed {manifest['n']} images of {shift.spec.name} [{manifest['split']}] into {len(manifest['shards'])} shards under {args.out}"
    )
    return 0


def make_heldout(args: argparse.Namespace) -> int:
    from shifts.imagenet import write_heldout_keys

    path = write_heldout_keys(args.data_root, args.per_class, args.seed)
    print(f"wrote {path} ({args.per_class} images per class, seed {args.seed})", file=sys.stderr)
    return 0
