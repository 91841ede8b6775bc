"""``shiftbench report``: effective robustness against the bundled testbed, as PDF and JSON."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from reports.importers import FORMATS

    p = sub.add_parser(
        "report",
        help="fit ID-vs-OOD trends and report effective robustness (PDF + summary.json)",
        description="Fit ID-vs-OOD trends on a baseline set and report effective robustness. With no "
        "arguments, uses the bundled testbed of published results only.",
    )
    p.add_argument("inputs", nargs="*", type=Path, metavar="RUN_DIR_OR_RESULTS",
                   help="run directories (with results.jsonl) or result files to place against the trend")
    p.add_argument("--results", action="append", type=Path, default=[], metavar="FILE",
                   help="a results file (timm CSV, open_clip CSV, imagenet-testbed CSV, WiSE-FT or model-soups JSONL, results.jsonl); repeatable")
    p.add_argument("--format", choices=FORMATS, default=None, help="format of the inputs (default: detected per file)")
    p.add_argument("--no-testbed", action="store_true", help="leave the bundled testbed out")
    p.add_argument("--baseline", action="append", default=None, metavar="TAG",
                   help="fit on models carrying this tag (repeatable: all must match; default: standard)")
    p.add_argument("--baseline-source", action="append", default=[], metavar="SOURCE",
                   help="restrict the baseline to these sources (e.g. imagenet-testbed)")
    p.add_argument("--baseline-exclude", action="append", default=[], metavar="TEXT",
                   help="leave models whose name contains TEXT out of the baseline")
    p.add_argument("--baseline-min-id", type=float, default=None, metavar="ACC",
                   help="leave models with ID accuracy below ACC (a fraction) out of the baseline")
    p.add_argument("--transform", choices=("logit", "probit", "linear"), default="logit")
    p.add_argument("--highlight", action="append", default=[], metavar="PATTERN",
                   help="models to label: glob on the name or the exact name, tag:TAG or source:SOURCE (default: tag:clip-zero-shot and your inputs)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap samples (default 1000)")
    p.add_argument("--seed", type=int, default=None, help="bootstrap seed (default: imagenet-testbed's)")
    p.add_argument("--split-imagenet-a", action="store_true",
                   help="piecewise ImageNet-A fit split at 91.86%% ID accuracy on its classes, as imagenet-testbed does")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="report run rows scored on fewer images than published (their protocol records 'images: n of N')")
    p.add_argument("--out", type=Path, default=Path("report.pdf"), help="PDF path (default report.pdf)")
    p.add_argument("--json", type=Path, default=Path("summary.json"), help="summary path (default summary.json)")
    p.add_argument("--png-dir", type=Path, default=None, help="also save every page as a PNG in this folder")
    p.add_argument("--figures-dir", type=Path, default=None,
                   help="also write every plot as a standalone PDF and PNG, and the summary table as summary.csv and summary.tex")
    p.add_argument("--baseline-results", action="append", type=Path, default=[], metavar="RUN_DIR|FILE",
                   help="results of models you ran whose every model joins the baseline trend (e.g. your ERM models on WILDS); repeatable")
    p.add_argument("--id-shift", action="append", default=[], metavar="SETTING=ID",
                   help="pair a setting's results with an ID setting, e.g. folder:pets=imagenet; overrides the id_setting a row "
                   "was written with (`shiftbench run --id-shift`), for this report only; repeatable")
    p.add_argument("--no-analyses", action="store_true",
                   help="leave out the pages computed from run directories' predictions (agreement-on-the-line, "
                   "paired comparisons, calibration)")
    p.add_argument("--calibrate-on", default=None, metavar="SHIFT",
                   help="calibration pages: fit each model's temperature on this ID shift (e.g. imagenet-heldout)")
    p.set_defaults(func=run)


def check_calibrate_on(shift: str, inputs: list[Path], no_analyses: bool) -> None:
    """``--calibrate-on`` steers only the calibration pages, computed from run directories'
    stored predictions: refused where there are none, rather than ignored."""
    from reports.analysis_pages import run_dirs

    if no_analyses:
        raise ValueError(f"--calibrate-on {shift} fits the calibration pages' temperatures, which --no-analyses leaves "
                         "out: drop one of the two")
    if not run_dirs(inputs):
        raise ValueError(f"--calibrate-on {shift}: calibration pages come from the stored predictions of run directories "
                         "(a folder with predictions/), and no input is one; pass the run directory, or drop --calibrate-on")


def run(args: argparse.Namespace) -> int:
    from reports.analysis import BaselineRule
    from reports.report import ReportConfig, run_report
    from reports.trend import DEFAULT_SEED

    if args.bootstrap < 0:
        raise ValueError("--bootstrap must be >= 0")
    if args.baseline_min_id is not None and not 0 <= args.baseline_min_id <= 1:
        raise ValueError(f"--baseline-min-id {args.baseline_min_id} is not a fraction in [0, 1]")
    if args.calibrate_on is not None:
        check_calibrate_on(args.calibrate_on, [*args.inputs, *args.results], args.no_analyses)
    rule = BaselineRule(
        tags=tuple(args.baseline or ("standard",)),
        sources=tuple(args.baseline_source),
        exclude=tuple(args.baseline_exclude),
        min_x=args.baseline_min_id,
    )
    cfg = ReportConfig(
        inputs=[*args.inputs, *args.results],
        fmt=args.format,
        testbed=not args.no_testbed,
        baseline=rule,
        transform=args.transform,
        highlight=args.highlight,
        samples=args.bootstrap,
        seed=DEFAULT_SEED if args.seed is None else args.seed,
        split_imagenet_a=args.split_imagenet_a,
        allow_incomplete=args.allow_incomplete,
        out=args.out,
        json=args.json,
        png_dir=args.png_dir,
        baseline_results=args.baseline_results,
        id_shifts=parse_id_shifts(args.id_shift),
        figures_dir=args.figures_dir,
        analyses=not args.no_analyses,
        calibrate_on=args.calibrate_on,
    )
    summary = run_report(cfg)
    fitted = len({(f["shift"], f["x_setting"], f.get("metric"), tuple(f["protocol"].items())) for f in summary["fits"]})
    print(f"wrote {args.out.resolve()} ({summary['pages']} pages)")
    print(f"wrote {args.json.resolve()}")
    if args.figures_dir:
        print(f"wrote {len(summary.get('figures', []))} files to {args.figures_dir.resolve()}")
    dropped = len(summary["dropped"])
    print(f"shiftbench report: {fitted} trends fitted, {len(summary['unfitted'])} groups without a baseline, "
          f"{sum(m['highlighted'] for m in summary['models'])} highlighted model-shift pairs, "
          f"{dropped} input rows not placed" + (" (listed with reasons in the PDF and summary.json)" if dropped else ""))
    return 0


def parse_id_shifts(entries: list[str]) -> dict[str, str]:
    """``SETTING=ID`` entries -> {setting: ID setting}; malformed ones are an error."""
    out: dict[str, str] = {}
    for e in entries:
        setting, eq, ref = e.partition("=")
        if not eq or not setting.strip() or not ref.strip():
            raise ValueError(f"--id-shift {e!r}: expected SETTING=ID, e.g. folder=imagenet")
        if setting.strip() == ref.strip():
            raise ValueError(f"--id-shift {e!r}: a setting cannot be its own ID reference")
        out[setting.strip()] = ref.strip()
    return out
