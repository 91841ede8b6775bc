"""``shiftbench report`` as a function: inputs -> analysis -> summary.json and report.pdf."""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import __version__
from reports import importers
from reports.analysis import BaselineRule, analyse, highlight_mask, unpaired
from reports.summary import CLIPPING_RULE, build_summary, write_json
from reports.table import Row
from reports.trend import DEFAULT_SAMPLES, DEFAULT_SEED

BUNDLED_SOURCES = {
    "timm": "huggingface/pytorch-image-models results/ @ aa4b585 (Apache-2.0)",
    "open_clip": "mlfoundations/open_clip docs/openclip_results.csv @ 89fb801 (MIT)",
    "imagenet-testbed": "modestyachts/imagenet-testbed robustness_top1s.csv @ 0170eec (MIT)",
}
DEFAULT_HIGHLIGHT = ("tag:clip-zero-shot",)


@dataclass
class ReportConfig:
    inputs: Sequence[Path] = ()
    fmt: str | None = None
    testbed: bool = True
    baseline: BaselineRule = field(default_factory=BaselineRule)
    transform: str = "logit"
    highlight: Sequence[str] = ()
    samples: int = DEFAULT_SAMPLES
    seed: int = DEFAULT_SEED
    split_imagenet_a: bool = False
    allow_incomplete: bool = False
    out: Path | None = Path("report.pdf")
    json: Path | None = Path("summary.json")
    png_dir: Path | None = None
    analyses: bool = True  # pages from run directories' stored predictions (reports.analysis_pages)
    calibrate_on: str | None = None


def distinct_source(rows: list[Row], path: Path, taken: dict[str, Path]) -> list[Row]:
    """Rows of ``path`` under source names no other input uses: two run directories that are
    both called ``run`` are two sources (``run:exp1/run``, ``run:exp2/run``), never merged."""
    path = Path(path).resolve()
    folder = path.parent if path.is_file() else path
    renamed: dict[str, str] = {}
    for source in sorted({r.source for r in rows}):
        name = source
        if name in taken and taken[name] != path:
            prefix, _, _ = source.partition(":")
            name = f"{prefix}:{folder.parent.name}/{folder.name}" if prefix else f"{source} ({folder})"
            if name in taken and taken[name] != path:
                name = f"{prefix or source}:{folder}"
        taken[name] = path
        renamed[source] = name
    return [r if renamed[r.source] == r.source else dataclasses.replace(r, source=renamed[r.source]) for r in rows]


def load_rows(cfg: ReportConfig) -> tuple[list[Row], set[str]]:
    """Bundled testbed (unless disabled) plus every input; returns rows and the user sources."""
    rows: list[Row] = []
    if cfg.testbed:
        from reports.testbed import load_testbed

        rows += load_testbed()
    user: set[str] = set()
    taken: dict[str, Path] = {}
    for path in cfg.inputs:
        new = importers.load(Path(path), cfg.fmt)
        if not new:
            raise ValueError(f"{path}: no accuracies found")
        incomplete = [r for r in new if importers.INCOMPLETE in dict(r.protocol)]
        if incomplete and not cfg.allow_incomplete:
            listed = "; ".join(f"{r.model} on {r.setting}: {dict(r.protocol)[importers.INCOMPLETE]} images" for r in incomplete[:3])
            more = f" and {len(incomplete) - 3} more" if len(incomplete) > 3 else ""
            raise ValueError(
                f"{path}: scored on fewer images than the shifts publish ({listed}{more}); such accuracies are not "
                "comparable with the testbed's. Complete the data and rerun, or pass --allow-incomplete to report them"
            )
        new = distinct_source(new, path, taken)
        user |= {r.source for r in new}
        rows += new
    if not rows:
        raise ValueError("nothing to report: no inputs and the bundled testbed is disabled")
    return rows, user


def run_report(cfg: ReportConfig) -> dict:
    """Do the whole report; returns the summary object."""
    rows, user_sources = load_rows(cfg)
    transforms = ("logit", "probit") if cfg.transform in ("logit", "probit") else (cfg.transform, "logit", "probit")
    groups = analyse(rows, cfg.baseline, transforms, cfg.transform, cfg.samples, cfg.seed, cfg.split_imagenet_a)
    highlight = list(cfg.highlight) or [*DEFAULT_HIGHLIGHT, *(f"source:{s}" for s in sorted(user_sources))]
    highlighted = {p.name for g in groups for p, h in zip(g.points, highlight_mask(g.points, highlight), strict=True) if h}
    counts = Counter(r.source for r in rows)
    sources = {s: counts[s] for s in sorted(counts)}
    summary = build_summary(groups, rule=cfg.baseline, transform=cfg.transform, samples=cfg.samples, seed=cfg.seed,
                            highlighted=highlighted, sources=sources, version=__version__)
    summary["highlight"] = highlight
    summary["inputs"] = [str(p) for p in cfg.inputs]
    summary["unpaired"] = unpaired(rows)
    extra: list = []
    if cfg.analyses:
        from reports import analysis_pages

        extra, summary["analyses"] = analysis_pages.build(cfg.inputs, cfg.samples, cfg.seed, cfg.calibrate_on)
    if cfg.out:
        from reports.pdf import write_pdf

        meta = {
            "version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "sources": {s: f"{n} rows; " + BUNDLED_SOURCES.get(s, "your input") for s, n in sources.items()},
            "baseline": cfg.baseline.describe(),
            "transform": cfg.transform,
            "clipping": CLIPPING_RULE,
            "samples": cfg.samples,
            "seed": cfg.seed,
            "highlight": highlight,
            "unpaired": summary["unpaired"],
        }
        summary["pages"] = write_pdf(cfg.out, groups, meta, highlight, user_sources, cfg.png_dir, extra)
    if cfg.json:  # after the PDF, so that the file records its page count
        write_json(summary, cfg.json)
    return summary
