"""``shiftbench estimate``, ``compare`` and ``calibrate``: analyses of a run's stored predictions.

None of them runs a model: they read ``predictions/`` and ``results.jsonl`` of a run directory
(see ``docs/analysis.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _csv(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def model_list(text: str | None, known) -> list[str]:
    """``--models`` as the run's model names: the engine's own names hold commas
    (``wiseft:ARCH[zs ..,ft ..](alpha=0.5)``, ``soup:ARCH[..](greedy,n=2)``), so the
    comma-separated pieces are joined back into names the run has, where exactly one way
    does that; otherwise the plain pieces (unknown ones are then named in the error)."""
    known = set(known)
    pieces = [t.strip() for t in (text or "").split(",")]
    ways: list[list[list[str]]] = [[[]]] + [[] for _ in pieces]  # ways[i]: splits of pieces[:i]
    for end in range(1, len(pieces) + 1):
        for start in range(end):
            name = ",".join(pieces[start:end])
            if name in known:
                ways[end] += [[*w, name] for w in ways[start]][:2]
    return ways[-1][0] if len(ways[-1]) == 1 else _csv(text)


def _data_root_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", type=Path, default=None,
                   help="where the shifts' data is (default: the run's last --data-root); some specs, e.g. "
                   "ObjectNet's class map or the held-out list's size, are completed from the data")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "estimate",
        help="estimate OOD accuracy without OOD labels (agreement-on-the-line: ALine-S, ALine-D)",
        description="Fit the ID-vs-OOD agreement line over model pairs (probit axes) and estimate each model's "
        "accuracy on a shift from its ID accuracy, using no OOD labels. On a labelled shift the labels stay hidden "
        "from the estimators and only check them: the true accuracies and the mean absolute error are printed.",
    )
    p.add_argument("run_dir", type=Path, help="a run directory with predictions of 3 or more models")
    p.add_argument("--shift", required=True, help="the shift to estimate (labelled, or folder-unlabeled)")
    p.add_argument("--id", dest="id_shift", default=None,
                   help="ID shift (default: the shift's ID reference; imagenet for unlabelled folders)")
    p.add_argument("--models", default=None, help="comma-separated models (default: every model with predictions on both)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the estimates as JSON")
    _data_root_option(p)
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser(
        "compare",
        help="paired comparison of models on the same images (bootstrap interval, McNemar's exact test, ER difference)",
        description="Per shift, the accuracy difference of two models over the images both were scored on, with a "
        "paired bootstrap interval and McNemar's exact test, and the difference in effective robustness against the "
        "bundled testbed's trend. With a WiSE-FT sweep in the run (or --wiseft), every alpha is compared with both endpoints.",
    )
    p.add_argument("run_dir", type=Path)
    p.add_argument("--models", default=None, metavar="A,B", help="the two models to compare")
    p.add_argument("--wiseft", action="store_true", help="compare every alpha of the run's WiSE-FT sweep with its endpoints")
    p.add_argument("--shifts", default=None, help="comma-separated settings (default: every one both models have)")
    p.add_argument("--bootstrap", type=int, default=2000, metavar="N", help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level for the sweep (Holm-adjusted; default 0.05)")
    p.add_argument("--transform", choices=("logit", "probit"), default="logit", help="trend axes for effective robustness")
    p.add_argument("--no-testbed", action="store_true", help="no effective robustness (skips fitting the testbed's trends)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE")
    _data_root_option(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "calibrate",
        help="calibration under shift: ECE (15 bins) and NLL per shift, optionally after an ID temperature",
        description="ECE and NLL of every labelled row from the stored logits; with --calibrate-on, one temperature per "
        "model fitted on that ID shift's predictions and applied to every shift. Writes the ID-vs-OOD calibration figure.",
    )
    p.add_argument("run_dir", type=Path)
    p.add_argument("--calibrate-on", default=None, metavar="SHIFT",
                   help="fit each model's temperature on this shift (e.g. imagenet-heldout; never a reported shift)")
    p.add_argument("--models", default=None, help="comma-separated models (default: all)")
    p.add_argument("--out", type=Path, default=Path("calibration.pdf"), help="figure path (.pdf or .png; default calibration.pdf)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE")
    _data_root_option(p)
    p.set_defaults(func=cmd_calibrate)


def _check_outputs(args: argparse.Namespace) -> None:
    """``--json`` (and calibrate's ``--out`` figure) checked before the run is read: a refused
    command writes nothing, and never a figure without its JSON."""
    from harness.files import check_output

    if args.json is not None:
        check_output(args.json, "--json", example="analysis.json")
    out = getattr(args, "out", None)
    if out is not None:
        from matplotlib.backend_bases import FigureCanvasBase

        check_output(out, "--out", example="calibration.pdf")
        kinds = FigureCanvasBase.get_supported_filetypes()
        if out.suffix.lstrip(".").lower() not in kinds:
            raise ValueError(f"--out {out}: cannot write a {out.suffix or 'suffix-less'} figure; end it in .pdf, .png or .svg")
    if out is not None and args.json is not None and out.absolute() == args.json.absolute():
        raise ValueError(f"--out and --json both name {out}: give two paths")


def _write_json(path: Path | None, payload: Any) -> None:
    if path is None:
        return
    from harness.engine.store import atomic_write_text

    atomic_write_text(Path(path), json.dumps(payload, indent=2, sort_keys=True) + "\n")
    print(f"wrote {Path(path).resolve()}", file=sys.stderr)


# -- estimate ------------------------------------------------------------------------------------


def cmd_estimate(args: argparse.Namespace) -> int:
    from reports.run_analyses import agreement_estimate, format_estimate
    from reports.stored import StoredRun

    _check_outputs(args)
    run = StoredRun(args.run_dir, args.data_root)
    est = agreement_estimate(run, args.shift, args.id_shift, (model_list(args.models, run.models()) or None) if args.models else None)
    print(format_estimate(est, args.shift))
    for w in est.warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    _write_json(args.json, {"shift": args.shift, "id_setting": est.id_setting, **est.to_dict()})
    return 0


# -- compare ---------------------------------------------------------------------------------------


def cmd_compare(args: argparse.Namespace) -> int:
    from reports.run_analyses import (
        TestbedTrends,
        compare_pair,
        compare_sweep,
        format_pair,
        format_sweep,
        settings_of,
        wiseft_sweeps,
    )
    from reports.stored import StoredRun

    if args.bootstrap < 100:
        raise ValueError("--bootstrap must be at least 100 for a percentile interval")
    if not 0.5 <= args.level < 1:
        raise ValueError(f"--level {args.level} must be in [0.5, 1)")
    _check_outputs(args)
    run = StoredRun(args.run_dir, args.data_root)
    if not run.rows:
        raise FileNotFoundError(f"{args.run_dir}: no results.jsonl rows to compare; run `shiftbench run` first")
    settings = _csv(args.shifts) or None
    payload: dict[str, Any] = {"level": args.level, "bootstrap": args.bootstrap, "seed": args.seed}
    known = run.models() if args.models else []
    models = model_list(args.models, known) if args.models else []
    sweeps = wiseft_sweeps(run)
    if models:
        if len(models) != 2:
            raise ValueError(f"--models takes two comma-separated models, got {len(models)}")
        for m in models:
            if m not in known:
                raise ValueError(f"{args.run_dir}: no model {m!r}; models here: {', '.join(sorted(known))}")
        chosen = settings or settings_of(run, models)
        if not chosen:
            raise ValueError(f"{args.run_dir}: {models[0]} and {models[1]} share no scored setting")
        trends = None if args.no_testbed else TestbedTrends(args.run_dir, args.transform, 1000, args.seed)
        rows = compare_pair(run, models[0], models[1], chosen, trends, args.bootstrap, args.seed, args.level)
        print(f"A = {models[0]}\nB = {models[1]}")
        print(format_pair(rows, args.level))
        payload["pairs"] = rows
    if args.wiseft or not models:
        if not sweeps:
            raise ValueError(f"{args.run_dir}: no WiSE-FT sweep with both endpoints (alpha 0 and 1) here; "
                             "name two models with --models A,B")
        payload["wiseft"] = []
        for sweep in sweeps:
            rows = compare_sweep(run, sweep, settings, args.bootstrap, args.seed, args.level, args.alpha)
            print(format_sweep(rows, sweep, args.level, args.alpha))
            payload["wiseft"].append({**sweep, "members": {str(k): v for k, v in sweep["members"].items()}, "rows": rows})
    _write_json(args.json, payload)
    return 0


# -- calibrate -------------------------------------------------------------------------------------


def cmd_calibrate(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg", force=True)
    from reports.calibration import calibration_figure, calibration_rows, format_table, save_figure
    from reports.stored import StoredRun

    _check_outputs(args)
    run = StoredRun(args.run_dir, args.data_root)
    if not run.rows:
        raise FileNotFoundError(f"{args.run_dir}: no results.jsonl rows; run `shiftbench run` first")
    rows = calibration_rows(run, args.calibrate_on, (model_list(args.models, run.models()) or None) if args.models else None)
    print(format_table(rows))
    if args.calibrate_on:
        print(f"temperature fitted per model on {args.calibrate_on}, applied unchanged to every setting", file=sys.stderr)
    save_figure(calibration_figure(run, rows), args.out)
    print(f"wrote {args.out.resolve()}", file=sys.stderr)
    _write_json(args.json, {"calibrate_on": args.calibrate_on, "bins": 15, "rows": [r.to_dict() for r in rows]})
    return 0
