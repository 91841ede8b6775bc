"""The PDF report: title page with provenance, summary table, one page per comparable group,
methods. Pages are matplotlib figures written with ``PdfPages`` to a temp file, then renamed."""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.files import atomic_file, atomic_folder
from reports.analysis import Group, highlight_mask
from reports.figures import scatter
from reports.plain_text import plain_text
from reports.table import SHIFTS

PORTRAIT = (8.27, 11.69)
LANDSCAPE = (11.69, 8.27)
TABLE_ROWS = 40
SHORT = {"imagenetv2-matched-frequency": "ImageNetV2", "imagenet-sketch": "ImageNet-Sketch",
         "imagenet-r": "ImageNet-R", "imagenet-a": "ImageNet-A", "objectnet": "ObjectNet"}

METHODS = """\
Pairing. Each OOD accuracy is paired with every ID reference its source has: ImageNet val on the
shift's classes (ImageNet-R's or -A's 200 classes, ObjectNet's 113 classes) and full ImageNet val.
A model is scored on the same-class pairing when its source has it (imagenet-testbed's convention),
else on full val; the pairing is part of each group's name.

Protocols. Rows whose evaluation protocol differs form separate groups and never share a fit or a
table: ObjectNet through the ImageNet head (max over each class's ids) vs a 113-way zero-shot head
from its class names; ObjectNet-1.0-beta vs 1.0; 2 px border crop (imagenet-testbed) vs none;
ImageNetV2 in imagenet-testbed's re-encoded 'format-val' copy vs the original files.

Trend. In each group, ordinary least squares of T(OOD accuracy) on T(ID accuracy) over the baseline
models, T = logit, probit or identity; at least 3 baseline models, else no fit (stated). ImageNet-A
was selected against torchvision's ResNet-50, which is left out of ImageNet-A baselines.

Clipping. logit and probit are infinite at 0 and 1, so accuracies are clipped to [eps, 1 - eps]
with eps = half an example of the test set (0.5/n); clipped points are listed on their page.

Effective robustness (ER) of a model = its OOD accuracy minus the trend's prediction at its ID
accuracy, in accuracy points (imagenet-testbed's definition, Taori et al. 2020).

Intervals. Accuracy: Clopper-Pearson (95%) with the test-set size of each setting. Fit band, fit
coefficients and ER: percentile bootstrap (95%) over baseline models resampled with replacement
(seeded; imagenet-testbed's seed by default), all resamples computed at once.

Model tags. timm: from the pretrained tag after the dot (docs/report.md): 'standard' = trained on
ImageNet-1k only; extra-data tokens (in12k, in21k, in22k, laion2b, openai, jft, ig1b, ...) give
'more-data'; adversarial training, AdvProp and AugMix give 'robustness-intervention'.
imagenet-testbed: its own model types (STANDARD -> standard). open_clip: 'clip-zero-shot'.
The default baseline is every 'standard' model of every source.
"""


class Pages:
    """A PdfPages that can also save each page as a PNG (for previews and checks)."""

    def __init__(self, pdf, png_dir: Path | None = None):
        self.pdf, self.png_dir, self.count = pdf, png_dir, 0

    def savefig(self, fig) -> None:
        self.pdf.savefig(fig)
        self.count += 1
        if self.png_dir is not None:
            self.png_dir.mkdir(parents=True, exist_ok=True)
            fig.savefig(self.png_dir / f"page-{self.count:02d}.png", dpi=110)


def _text_page(pdf, title: str, body: str, size=PORTRAIT, fontsize: float = 8.5, family: str = "sans-serif") -> None:
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=size)
    fig.text(0.07, 0.95, title, fontsize=15, weight="bold", va="top")
    fig.text(0.07, 0.91, body, fontsize=fontsize, va="top", family=family, linespacing=1.35)
    pdf.savefig(fig)
    plt.close(fig)


def _wrap(text: str, width: int = 100) -> str:
    return "\n".join(textwrap.fill(line, width, subsequent_indent="    ") if line else "" for line in text.splitlines())


def protocol_notes(groups: Sequence[Group]) -> list[str]:
    """One sentence per shift where sources differ in protocol or in ID pairing."""
    notes = []
    for shift in SHIFTS:
        protos: dict[tuple, set[str]] = {}
        full_val: set[str] = set()
        for g in groups:
            if g.shift != shift:
                continue
            for p in g.points:
                if p.preferred:
                    protos.setdefault(g.protocol, set()).add(p.source)
                    if SHIFTS[shift] and g.x_setting == "imagenet":
                        full_val.add(p.source)
        if len(protos) > 1:
            parts = [f"{', '.join(sorted(s))}: {', '.join(f'{k}={v}' for k, v in pr) or 'default'}" for pr, s in protos.items()]
            notes.append(f"{shift}: sources use different protocols ({'; '.join(parts)}); each is fitted and tabled separately.")
        if full_val:
            notes.append(f"{shift}: {', '.join(sorted(full_val))} give no ImageNet accuracy on the shift's classes; "
                         "their models are paired with full ImageNet val and compared with a trend fitted on that pairing.")
    return notes


def _title_page(pdf, meta: dict[str, Any], groups: Sequence[Group]) -> None:
    lines = [
        f"shiftbench {meta['version']}   created {meta['created']}",
        "",
        "Sources",
    ]
    for src, info in meta["sources"].items():
        lines.append(f"  {src}: {info}")
    lines += [
        "",
        f"Baseline rule: {meta['baseline']}",
        f"Transform: {meta['transform']} (fits under logit and probit are in summary.json)",
        f"Clipping: {meta['clipping']}",
        f"Bootstrap: {meta['samples']} samples over baseline models, seed {meta['seed']}, 95% percentile intervals",
        f"Highlighted: {', '.join(meta['highlight'])}",
        "",
        "Fits (group: baseline models, R^2)",
    ]
    for g in groups:
        t = g.fits.get(meta["transform"])
        lines.append(f"  {g.label()}: " + (f"n = {t.n}, R^2 = {t.r2:.3f}" if t else f"not fitted - {g.reason}"))
    notes = protocol_notes(groups)
    if notes:
        lines += ["", "Protocol notes"] + [f"  - {n}" for n in notes]
    missing = meta.get("unpaired") or []
    if missing:
        lines += ["", f"Not plotted, no ImageNet accuracy to pair with ({len(missing)}): "
                  + ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")]
    _text_page(pdf, "Effective robustness report", _wrap("\n".join(lines), 105))


def _fmt_pct(v: float | None) -> str:
    return "   -  " if v is None or not np.isfinite(v) else f"{100 * v:6.2f}"


def _table_pages(pdf, groups: Sequence[Group], hl: dict[int, np.ndarray], user_sources: set[str] = frozenset()) -> None:
    """Per highlighted model: ID accuracy, each OOD accuracy and ER [interval], average ER."""
    shifts = [s for s in SHIFTS if any(g.shift == s for g in groups)]
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for gi, g in enumerate(groups):
        for i, p in enumerate(g.points):
            if not (p.preferred and hl[gi][i]):
                continue
            r = rows.setdefault((p.source, p.model), {})
            if g.x_setting == "imagenet":
                r["id"] = p.x
            er = None if g.er is None else (g.er[i], g.er_low[i], g.er_high[i])
            r[g.shift] = (p.y, er)
    if not rows:
        _text_page(pdf, "Summary", "No model matches the highlight patterns.")
        return
    head = f"{'model':<42} {'source':<12} {'ID':>6} " + " ".join(f"{SHORT.get(s, s)[:22]:>24}" for s in shifts) + f" {'avg ER':>7}"
    sub = f"{'':<42} {'':<12} {'':>6} " + " ".join(f"{'OOD   ER [95% CI]':>24}" for _ in shifts)
    lines = []
    def order(kv):
        (src, _), r = kv
        ers = [v[1][0] for k, v in r.items() if k != "id" and v[1]]
        return (src not in user_sources, -np.mean(ers) if ers else np.inf)

    for (src, model), r in sorted(rows.items(), key=order):
        cells, ers = [], []
        for s in shifts:
            if s not in r:
                cells.append(f"{'-':>24}")
                continue
            y, er = r[s]
            if er is None:
                cells.append(f"{_fmt_pct(y)}  {'no fit':>16}")
            else:
                ers.append(er[0])
                cells.append(f"{_fmt_pct(y)} {100 * er[0]:+5.1f} [{100 * er[1]:+.1f},{100 * er[2]:+.1f}]".rjust(24))
        avg = f"{100 * np.mean(ers):+7.2f}" if ers else f"{'-':>7}"
        lines.append(f"{model[:42]:<42} {src[:12]:<12} {_fmt_pct(r.get('id'))} " + " ".join(cells) + f" {avg}")
    per_page = -(-len(lines) // -(-len(lines) // TABLE_ROWS))  # balanced: no near-empty last page
    pages = [lines[i : i + per_page] for i in range(0, len(lines), per_page)]
    for k, chunk in enumerate(pages, start=1):
        body = "\n".join([head, sub, "-" * len(head), *chunk])
        if k == len(pages):
            body += ("\n\nAccuracies in %, ER in accuracy points; 'no fit': no baseline under that source's protocol "
                     "(see the title page). ID = full ImageNet val. Your results first, then by average ER.")
        _text_page(pdf, f"Summary of highlighted models ({k}/{len(pages)})", body, LANDSCAPE, 5.9, "monospace")


def _group_page(pdf, g: Group, transform: str, highlight: np.ndarray, user_sources: set[str], rule: str, notes: Sequence[str]) -> None:
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=PORTRAIT)
    fig.text(0.07, 0.965, g.label(), fontsize=13, weight="bold", va="top")
    ax = fig.add_axes((0.11, 0.39, 0.83, 0.54))
    hidden = scatter(ax, g, transform, highlight, user_sources)
    lines = []
    if hidden:
        lines.append(f"{hidden} models lie outside the plotted range (set by the baseline and highlighted models) and are not drawn.")
    if g.reason:
        lines.append(f"No trend fitted: {g.reason}. Models are shown with their accuracies only.")
    for t, trend in g.fits.items():
        if trend is None:
            continue
        for s in trend.segments:
            rng = "" if len(trend.segments) == 1 else f" (x in [{100 * max(s.lo, 0):.2f}%, {100 * min(s.hi, 1):.2f}%))"
            ci = ""
            if len(s.boot_slopes):
                sl, sh = np.percentile(s.boot_slopes, [2.5, 97.5])
                il, ih = np.percentile(s.boot_intercepts, [2.5, 97.5])
                ci = f"  slope CI [{sl:.3f}, {sh:.3f}], intercept CI [{il:.3f}, {ih:.3f}]"
            lines.append(f"{t:>6}{rng}: slope {s.slope:.3f}, intercept {s.intercept:.3f}, R^2 {s.r2:.3f}, n {s.n}{ci}")
    lines.append(f"Baseline: {rule}; {int(g.baseline.sum())} of {len(g.points)} models.")
    if g.excluded:
        lines.append(f"Left out of the baseline: {', '.join(g.excluded)} (the shift's images were selected against it).")
    lines += [f"Note - {n}" for n in notes if n.startswith(f"{g.shift}:")]
    if g.clipped:
        lines.append(f"Clipped before transforming: {', '.join(g.clipped[:6])}" + (" ..." if len(g.clipped) > 6 else ""))
    if g.er is not None and highlight.any():
        idx = np.flatnonzero(highlight)
        idx = idx[np.argsort(-g.er[idx])]
        lines.append(f"Highlighted models ({len(idx)}), ER in points [95% CI], best first:")
        for i in idx[:10]:
            lines.append(f"   {g.points[i].model[:60]:<60} {100 * g.er[i]:+6.2f} [{100 * g.er_low[i]:+.2f}, {100 * g.er_high[i]:+.2f}]")
        if len(idx) > 10:
            lines.append(f"   ... {len(idx) - 10} more in the summary table and summary.json")
    fig.text(0.07, 0.32, _wrap("\n".join(lines), 108), fontsize=7, va="top", family="monospace", linespacing=1.3)
    pdf.savefig(fig)
    plt.close(fig)


def write_pdf(path: Path, groups: Sequence[Group], meta: dict[str, Any], highlight: Sequence[str], user_sources: set[str],
              png_dir: Path | None = None, extra_pages: Sequence[Callable[[Any], None]] = ()) -> int:
    """Write the report; ``extra_pages`` (each drawing on the open PDF) go before the methods.
    Returns the page count."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.backends.backend_pdf import PdfPages

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--out {path} is a folder; give a PDF file path such as {path / 'report.pdf'}")
    hl = {i: highlight_mask(g.points, highlight) for i, g in enumerate(groups)}
    shown = [i for i, g in enumerate(groups) if any(p.preferred for p in g.points)]
    pngs = atomic_folder(png_dir, lambda name: name.startswith("page-") and name.endswith(".png"), "--png-dir") if png_dir else contextlib.nullcontext(None)
    # The PDF (and the PNG folder) appear only complete: temp names, renamed when done.
    with pngs as png_tmp, atomic_file(path, "wb", fsync=False) as fh, plain_text():
        with PdfPages(fh, metadata={"Title": "shiftbench effective robustness report", "Creator": f"shiftbench {meta['version']}"}) as raw:
            pdf = Pages(raw, png_tmp)
            _title_page(pdf, meta, groups)
            _table_pages(pdf, groups, hl, user_sources)
            notes = protocol_notes(groups)
            for i in shown:
                _group_page(pdf, groups[i], meta["transform"], hl[i], user_sources, meta["baseline"], notes)
            for page in extra_pages:
                page(pdf)
            _text_page(pdf, "Methods", METHODS, fontsize=8.5)
            pages = raw.get_pagecount()
    return pages
