"""Report pages from a run directory's stored predictions: agreement-on-the-line per shift, paired
comparisons when two or more models share the run, and calibration under shift.

:func:`build` analyses every run directory among the report's inputs and returns the pages (each
a function of the open PDF) and what they found, for ``summary.json``. An analysis that cannot be
done on a run (too few models, no predictions) is stated on its page, never silently left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

Page = Callable[[Any], None]
#: Pairs of models compared one by one; with more models, each is compared with the best on ID.
MAX_PAIRS = 10
LINES_PER_PAGE = 52


def run_dirs(inputs: Sequence[Path]) -> list[Path]:
    """Inputs that are run directories with stored predictions."""
    return [Path(p) for p in inputs if Path(p).is_dir() and (Path(p) / "predictions").is_dir()]


def _text_pages(title: str, text: str) -> list[Page]:
    from reports.pdf import LANDSCAPE, _text_page

    lines = text.splitlines() or [""]
    chunks = [lines[i : i + LINES_PER_PAGE] for i in range(0, len(lines), LINES_PER_PAGE)]
    return [lambda pdf, k=k, c=c: _text_page(pdf, title + (f" ({k + 1}/{len(chunks)})" if len(chunks) > 1 else ""),
                                              "\n".join(c), size=LANDSCAPE, fontsize=7, family="monospace")
            for k, c in enumerate(chunks)]


def _agreement_figure(est: Any, shift: str, run_name: str):
    import matplotlib.pyplot as plt

    from reports import scales
    from reports.agreement import probit

    fig, ax = plt.subplots(figsize=(11.69, 8.27))
    i, j = est.pairs()
    zx, zy = probit(est.id_agreement[i, j], est.n_id), probit(est.ood_agreement[i, j], est.n_ood)
    ax.scatter(zx, zy, s=40, facecolors="none", edgecolors="#1f77b4", label=f"agreement, {len(zx)} model pairs")
    line = est.agreement_line
    za = probit(est.id_accuracy, est.n_id)
    lo, hi = min(zx.min(), za.min()) - 0.2, max(zx.max(), za.max()) + 0.2
    grid = np.linspace(lo, hi, 50)
    ax.plot(grid, line.slope * grid + line.intercept, color="#1f77b4",
            label=f"agreement fit: slope {line.slope:.2f}, intercept {line.intercept:.2f}, R^2 {line.r2:.3f}")
    ys = [zy, line.slope * grid + line.intercept, probit(est.aline_d, est.n_ood)]
    if est.ood_accuracy is not None:
        acc = est.accuracy_line
        ax.scatter(za, probit(est.ood_accuracy, est.n_ood), s=30, color="#d62728", marker="s", label="accuracy (labels, check only)")
        ax.plot(grid, acc.slope * grid + acc.intercept, color="#d62728", ls="--",
                label=f"accuracy fit: slope {acc.slope:.2f}, intercept {acc.intercept:.2f}, R^2 {acc.r2:.3f}")
        ys.append(probit(est.ood_accuracy, est.n_ood))
    ax.scatter(za, probit(est.aline_d, est.n_ood), s=30, color="#2ca02c", marker="^", label="ALine-D estimates")
    ylo, yhi = min(float(np.min(y)) for y in ys) - 0.2, max(float(np.max(y)) for y in ys) + 0.2
    ticks = np.array([0.1, 1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99, 99.9])
    z = scales.forward("probit", ticks / 100)
    for set_ticks, set_labels, (a, b) in ((ax.set_xticks, ax.set_xticklabels, (lo, hi)), (ax.set_yticks, ax.set_yticklabels, (ylo, yhi))):
        keep = (z >= a) & (z <= b)
        set_ticks(z[keep])
        set_labels([f"{t:g}" for t in ticks[keep]])
    ax.set_xlim(lo, hi)
    ax.set_ylim(ylo, yhi)
    ax.set_xlabel(f"ID ({est.id_setting}) agreement / accuracy, % (probit scale)")
    ax.set_ylabel(f"{shift} agreement / accuracy, % (probit scale)")
    holds, verdict = est.verdict()
    ax.set_title(f"Agreement-on-the-line: {shift} ({run_name}) - {'holds' if holds else 'DOES NOT HOLD'}", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def _figure_page(make: Callable[[], Any]) -> Page:
    def page(pdf: Any) -> None:
        import matplotlib.pyplot as plt

        fig = make()
        pdf.savefig(fig)
        plt.close(fig)

    return page


def _ood_shifts(run: Any) -> list[str]:
    """Settings to estimate: OOD shifts with rows, and unlabelled shifts with stored predictions."""
    settings = [s for s in dict.fromkeys(r.setting for r in run.rows) if not run.is_id(s)]
    stored = {meta.get("shift", "") for _, meta in run.run.stored_predictions()}
    settings += sorted(s for s in stored if s and s not in settings and run.is_unlabeled(s))
    return settings


def agreement_section(run: Any) -> tuple[list[Page], list[dict[str, Any]]]:
    from reports.run_analyses import agreement_estimate, format_estimate

    pages: list[Page] = []
    found: list[dict[str, Any]] = []
    notes = []
    for shift in _ood_shifts(run):
        try:
            est = agreement_estimate(run, shift)
        except (ValueError, FileNotFoundError) as exc:
            notes.append(f"{shift}: not estimated ({exc})")
            continue
        found.append({"run": run.path.name, "shift": shift, "id_setting": est.id_setting, **est.to_dict()})
        pages.append(_figure_page(lambda est=est, shift=shift: _agreement_figure(est, shift, run.path.name)))
        text = format_estimate(est, shift) + "".join(f"\nWARNING: {w}" for w in est.warnings)
        pages += _text_pages(f"Agreement-on-the-line: {shift} ({run.path.name})", text)
    if notes:
        pages += _text_pages(f"Agreement-on-the-line ({run.path.name})", "\n".join(notes))
    return pages, found


def _pairs(run: Any, models: list[str]) -> list[tuple[str, str]]:
    pairs = list(combinations(models, 2))
    if len(pairs) <= MAX_PAIRS:
        return pairs
    id_acc = {m: next((r.metrics["top1"] for r in run.rows if r.model == m and run.is_id(r.setting) and "top1" in r.metrics), 0.0)
              for m in models}
    best = max(models, key=lambda m: id_acc[m])
    return [(m, best) for m in models if m != best]


def paired_section(run: Any, samples: int, seed: int) -> tuple[list[Page], dict[str, Any]]:
    from reports.run_analyses import (
        TestbedTrends,
        compare_pair,
        compare_sweep,
        format_pair,
        format_sweep,
        settings_of,
        wiseft_sweeps,
    )

    models = list(dict.fromkeys(r.model for r in run.rows))
    found: dict[str, Any] = {"run": run.path.name, "pairs": [], "wiseft": []}
    if len(models) < 2:
        return [], found
    texts = []
    sweeps = wiseft_sweeps(run)
    in_sweeps = {m for s in sweeps for m in s["members"].values()}
    for sweep in sweeps:
        rows = compare_sweep(run, sweep, None, samples, seed, 0.95, 0.05)
        found["wiseft"].append({**sweep, "members": {str(k): v for k, v in sweep["members"].items()}, "rows": rows})
        texts.append(format_sweep(rows, sweep, 0.95, 0.05))
    others = [m for m in models if m not in in_sweeps]
    trends = TestbedTrends(run.path, "logit", samples, seed)
    for a, b in _pairs(run, others):
        settings = settings_of(run, [a, b])
        if not settings:
            continue
        rows = compare_pair(run, a, b, settings, trends, samples, seed, 0.95)
        found["pairs"].append({"a": a, "b": b, "rows": rows})
        texts.append(f"A = {a}\nB = {b}\n{format_pair(rows, 0.95)}")
    if not texts:
        return [], found
    header = ("Accuracy differences over the images both models were scored on: paired bootstrap interval\n"
              f"({samples} resamples) and McNemar's exact test; ER difference against the testbed's logit trend.")
    return _text_pages(f"Paired comparisons ({run.path.name})", header + "\n\n" + "\n\n".join(texts)), found


def calibration_section(run: Any, calibrate_on: str | None) -> tuple[list[Page], list[dict[str, Any]]]:
    from reports.calibration import calibration_figure, calibration_rows, format_table

    if not run.rows:
        return [], []
    try:
        rows = calibration_rows(run, calibrate_on)
    except (FileNotFoundError, ValueError) as exc:
        return _text_pages(f"Calibration under shift ({run.path.name})", f"Not computed: {exc}"), []
    pages = [_figure_page(lambda: calibration_figure(run, rows, f"Calibration under shift ({run.path.name}): ECE, 15 bins"))]
    note = (f"Temperature fitted per model on {calibrate_on} and applied to every setting.\n\n" if calibrate_on
            else "No temperature scaling (report --calibrate-on SHIFT fits one on ID data).\n\n")
    pages += _text_pages(f"Calibration under shift ({run.path.name})", note + format_table(rows))
    return pages, [{"run": run.path.name, **r.to_dict()} for r in rows]


def build(inputs: Sequence[Path], samples: int, seed: int, calibrate_on: str | None = None) -> tuple[list[Page], dict[str, Any]]:
    """Pages and findings for every run directory among ``inputs``."""
    from reports.stored import StoredRun

    pages: list[Page] = []
    found: dict[str, Any] = {"agreement": [], "paired": [], "calibration": []}
    for path in run_dirs(inputs):
        run = StoredRun(path)
        p, f = agreement_section(run)
        pages += p
        found["agreement"] += f
        try:
            p, f2 = paired_section(run, max(samples, 100), seed)
        except (FileNotFoundError, ValueError) as exc:
            p, f2 = _text_pages(f"Paired comparisons ({run.path.name})", f"Not computed: {exc}"), {"pairs": [], "wiseft": []}
        pages += p
        if f2["pairs"] or f2["wiseft"]:
            found["paired"].append(f2)
        p, f3 = calibration_section(run, calibrate_on)
        pages += p
        found["calibration"] += f3
    return pages, found
