"""``shiftbench report`` as a function: inputs -> analysis -> summary.json and report.pdf."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import glob
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import __version__
from harness.api import Result
from reports import importers
from reports.analysis import BaselineRule, Point, analyse, highlight_mask, place, with_id_shifts
from reports.row_checks import one_row_per_setting
from reports.rows import source_of, with_source
from reports.summary import CLIPPING_RULE, build_summary, write_json
from reports.trend import DEFAULT_SAMPLES, DEFAULT_SEED

BUNDLED_SOURCES = {
    "timm": "huggingface/pytorch-image-models results/ @ aa4b585 (Apache-2.0)",
    "open_clip": "mlfoundations/open_clip docs/openclip_results.csv @ 89fb801 (MIT)",
    "imagenet-testbed": "modestyachts/imagenet-testbed robustness_top1s.csv @ 0170eec (MIT)",
    "wilds-paper": "Koh et al., WILDS, ICML 2021 (arXiv:2012.07421), Tables 4, 5 and 18: means over 3-10 seeds",
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
    #: Run directories or result files whose every model is a baseline model.
    baseline_results: Sequence[Path] = ()
    #: User shift setting -> the ID setting it is compared with (``folder`` -> ``imagenet``).
    id_shifts: dict[str, str] = field(default_factory=dict)
    #: Every figure also as a standalone PDF and PNG, plus the summary table as CSV and LaTeX.
    figures_dir: Path | None = None
    analyses: bool = True  # pages from run directories' stored predictions (reports.analysis_pages)
    calibrate_on: str | None = None


def distinct_source(rows: list[Result], path: Path, taken: dict[str, Path | None]) -> list[Result]:
    """Rows of ``path`` under source names no other input uses: two run directories that are
    both called ``run`` are two sources (``run:exp1/run``, ``run:exp2/run``), never merged.
    A name in ``taken`` with no path is reserved (the bundled sources: a timm ``results/``
    folder of your own is ``timm:<parent>/<folder>``, never the bundled ``timm``)."""
    path = Path(path).resolve()
    folder = path.parent if path.is_file() else path
    renamed: dict[str, str] = {}
    for source in sorted({source_of(r) for r in rows}):
        name = source
        if name in taken and taken[name] != path:
            prefix, _, _ = source.partition(":")
            name = f"{prefix}:{folder.parent.name}/{folder.name}" if prefix else f"{source} ({folder})"
            if name in taken and taken[name] != path:
                name = f"{prefix or source}:{folder}"
        taken[name] = path
        renamed[source] = name
    return [r if renamed[source_of(r)] == source_of(r) else with_source(r, renamed[source_of(r)]) for r in rows]


def _read_input(path: Path, fmt: str | None, source: str | None = None) -> list[Result]:
    rows = importers.load(Path(path), fmt)
    if source is not None:
        rows = [with_source(r, source) for r in rows]
    return rows


def baseline_source(path: Path) -> str:
    """``baseline:<name>``: rows of ``--baseline-results`` never share a source with other inputs."""
    path = Path(path)
    return f"baseline:{path.name if path.is_dir() else path.stem}"


def load_rows(cfg: ReportConfig) -> tuple[list[Result], set[str]]:
    """Bundled testbed (unless disabled), baseline results, then every input, as ``Result``
    rows; returns rows and the user sources (inputs and baseline results)."""
    rows: list[Result] = []
    if cfg.testbed:
        from reports.testbed import load_testbed, load_wilds_published

        rows += load_testbed() + load_wilds_published()
    user: set[str] = set()
    # The bundled sources' names are reserved, testbed or not: an input's rows never join theirs
    # (a model in both would pair your ImageNet figure with the published shift figures).
    taken: dict[str, Path | None] = dict.fromkeys(BUNDLED_SOURCES)
    tagged = [(p, baseline_source(p)) for p in cfg.baseline_results] + [(p, None) for p in cfg.inputs]
    for path, source in tagged:
        new = _read_input(Path(path), cfg.fmt, source)
        if not new:
            raise ValueError(f"{path}: no accuracies found")
        new = one_row_per_setting(new, path)
        incomplete = list({(r.model, r.setting): r for r in new if r.n_expected and r.n < r.n_expected}.values())
        if incomplete and not cfg.allow_incomplete:
            listed = "; ".join(f"{r.model} on {r.setting}: {r.n} of {r.n_expected} images" for r in incomplete[:3])
            more = f" and {len(incomplete) - 3} more" if len(incomplete) > 3 else ""
            raise ValueError(
                f"{path}: scored on fewer images than the shifts publish ({listed}{more}); such accuracies are not "
                "comparable with the testbed's. Complete the data and rerun, or pass --allow-incomplete to report them"
            )
        new = distinct_source(new, path, taken)
        user |= {source_of(r) for r in new}
        rows += new
    if not rows:
        raise ValueError("nothing to report: no inputs and the bundled testbed is disabled")
    return rows, user


def _inside(path: Path, folder: Path) -> bool:
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def check_outputs(cfg: ReportConfig) -> None:
    """Refuse outputs that cannot be written or would overwrite one another, before any work: a
    folder output, or an output's parent, that is a file (the PDF was written, then the figures
    failed); the PDF and the summary at one path (the summary replaced the PDF); either, or the
    figures folder, inside the PNG folder (replaced whole by the new pages, so they vanished after
    being reported written)."""
    for flag, path, folder in (("--out", cfg.out, False), ("--json", cfg.json, False),
                               ("--png-dir", cfg.png_dir, True), ("--figures-dir", cfg.figures_dir, True)):
        if not path:
            continue
        path = Path(path)
        blocking = next((a for a in ([path] if folder else []) + list(path.parents) if a.exists() and not a.is_dir()), None)
        if blocking is not None:
            raise ValueError(f"{flag} {path}: {blocking} is a file, not a folder; give another path")
    if cfg.out and cfg.json and Path(cfg.out).resolve() == Path(cfg.json).resolve():
        raise ValueError(f"--out and --json are both {cfg.out}; give the PDF and the summary different paths")
    if cfg.png_dir:
        for flag, path in (("--out", cfg.out), ("--json", cfg.json), ("--figures-dir", cfg.figures_dir)):
            if path and _inside(path, cfg.png_dir):
                raise ValueError(f"{flag} {path} is inside --png-dir {cfg.png_dir}, which holds the page images only "
                                 "and is replaced whole; put it elsewhere")


def check_highlight(patterns: Sequence[str], points: Sequence[Point]) -> None:
    """A ``--highlight`` pattern that matches no model of the report would label nothing, and a
    typo would go unnoticed: refused, before the trends are fitted, with the closest names."""
    import difflib

    for pattern in patterns:
        if not highlight_mask(points, [pattern]).any():
            names = sorted({p.model for p in points})
            close = difflib.get_close_matches(pattern, names, n=3)
            hint = f"; close: {', '.join(close)}" if close else ""
            raise ValueError(f"--highlight {pattern}: matches no model of this report (a glob on the model name, the "
                             f"exact name, tag:TAG or source:SOURCE){hint}")


def check_baseline_filters(rule: BaselineRule, points: Sequence[Point]) -> None:
    """A ``--baseline-exclude`` or ``--baseline-source`` that matches no model would leave the
    baseline as it was, and a typo would fit the trend on models meant to be out of it."""
    sources = sorted({p.source for p in points})
    for source in rule.sources:
        if source not in sources:
            raise ValueError(f"--baseline-source {source}: no model of this report comes from it; sources: {', '.join(sources)}")
    for text in rule.exclude:
        if not any(text in p.model for p in points):
            raise ValueError(f"--baseline-exclude {text}: no model name of this report contains it, so it would exclude "
                             "nothing (the match is on a part of the name, case-sensitive)")


def run_report(cfg: ReportConfig) -> dict:
    """Do the whole report; returns the summary object."""
    check_outputs(cfg)
    # An input named twice (``report runs/a runs/a``, a shell glob and an explicit path) is read once.
    firsts: dict[Path, Path] = {}
    for path in cfg.inputs:
        firsts.setdefault(Path(path).resolve(), Path(path))
    cfg = dataclasses.replace(cfg, inputs=list(firsts.values()))
    rows, user_sources = load_rows(cfg)
    settings = {r.setting for r in rows}
    unknown = [k for k in cfg.id_shifts if k not in settings]
    if unknown:
        user = sorted({r.setting for r in rows if source_of(r) in user_sources and not r.id_setting})
        raise ValueError(f"--id-shift names {', '.join(unknown)}, which no input row has; settings of your inputs "
                         f"without an ID setting: {', '.join(user) or '(none)'}")
    rows = with_id_shifts(rows, cfg.id_shifts)
    bsources = tuple(sorted({baseline_source(p) for p in cfg.baseline_results}))
    rule = dataclasses.replace(cfg.baseline, baseline_sources=bsources) if bsources else cfg.baseline
    points, dropped = place(rows, user_sources)
    check_highlight(cfg.highlight, points)
    check_baseline_filters(cfg.baseline, points)
    transforms = ("logit", "probit") if cfg.transform in ("logit", "probit") else (cfg.transform, "logit", "probit")
    groups = analyse(rows, rule, transforms, cfg.transform, cfg.samples, cfg.seed, cfg.split_imagenet_a, points=points)
    shown_sources = user_sources - set(bsources)
    # Patterns are globs: a source named after a folder like ``exp[1]`` is escaped to match itself.
    highlight = list(cfg.highlight) or [*DEFAULT_HIGHLIGHT, *(f"source:{glob.escape(s)}" for s in sorted(shown_sources))]
    highlighted = {p.name for g in groups for p, h in zip(g.points, highlight_mask(g.points, highlight), strict=True) if h}
    counts = Counter(source_of(r) for r in rows)
    sources = {s: counts[s] for s in sorted(counts)}
    summary = build_summary(groups, rule=rule, transform=cfg.transform, samples=cfg.samples, seed=cfg.seed,
                            highlighted=highlighted, sources=sources, version=__version__)
    summary["highlight"] = highlight
    summary["inputs"] = [str(p) for p in cfg.inputs]
    summary["baseline_results"] = [str(p) for p in cfg.baseline_results]
    summary["id_shifts"] = dict(cfg.id_shifts)
    summary["dropped"] = [d.to_dict() for d in dropped]
    summary["dropped_counts"] = dict(Counter(d.reason for d in dropped))
    summary["unpaired"] = [f"{d.source}:{d.model} on {d.setting}" for d in dropped if d.reason == "no-id-pair"]
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
            "baseline": rule.describe(),
            "transform": cfg.transform,
            "clipping": CLIPPING_RULE,
            "samples": cfg.samples,
            "seed": cfg.seed,
            "highlight": highlight,
            "unpaired": summary["unpaired"],
            "dropped": dropped,
        }
        summary["pages"] = write_pdf(cfg.out, groups, meta, highlight, shown_sources, cfg.png_dir, extra)
    if cfg.figures_dir:
        from reports.export import write_figures

        summary["figures"] = write_figures(Path(cfg.figures_dir), groups, highlight, shown_sources, cfg.transform)
    if cfg.json:  # after the PDF, so that the file records its page count
        write_json(summary, cfg.json)
    return summary
