"""Regenerate the bundled testbed table from the vendored published sources.

    python -m reports.testbed.build [--sources data/published] [--out reports/testbed/testbed.csv.gz]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.api import Result
from reports.importers import read_open_clip, read_testbed, read_timm_dir
from reports.table import write_table

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SOURCES = REPO / "data" / "published"
DEFAULT_OUT = Path(__file__).with_name("testbed.csv.gz")


def build_rows(sources: Path = DEFAULT_SOURCES) -> list[Result]:
    """All testbed rows from the three published sources under ``sources``."""
    sources = Path(sources)
    if not sources.is_dir():
        raise FileNotFoundError(f"{sources}: vendored published results not found (expected timm/, open_clip/, imagenet_testbed/)")
    return (
        read_timm_dir(sources / "timm")
        + read_open_clip(sources / "open_clip" / "openclip_results.csv")
        + read_testbed(sources / "imagenet_testbed" / "robustness_top1s.csv", sources / "imagenet_testbed" / "model_types.json")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=Path, default=DEFAULT_SOURCES)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    rows = build_rows(args.sources)
    write_table(rows, args.out)
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
