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
from reports.analysis import DROP_REASONS, Group, highlight_mask, shift_order
from reports.figures import average_points, average_scatter, near_chance, scatter
from reports.plain_text import plain_text
from reports.summary_table import build_table, column_name
from reports.vocabulary import SHIFTS

PORTRAIT = (8.27, 11.69)
LANDSCAPE = (11.69, 8.27)
TABLE_ROWS = 40
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

Intervals. Accuracy: Clopper-Pearson (95%) with the test-set size of each setting. Fit band and fit
coefficients: percentile bootstrap (95%) over baseline models resampled with replacement (seeded;
imagenet-testbed's seed by default), all resamples computed at once. ER: both the model's own
sampling error (binomial: z*sqrt(y(1-y)/n_y + f'(x)^2 x(1-x)/n_x), the ID term through the trend's
slope) and the trend's bootstrap interval, added in quadrature on each side; summary.json keeps
both parts. Metrics other than top-1 (macro-F1, worst-region accuracy) have no binomial part.

WILDS. Each WILDS shift is paired with its ID split scored in the same run, as the WILDS paper
compares them (iWildCam and FMoW id_test, Camelyon17 id_val), on top-1 and on its main metric.

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
    for shift in shift_order(g.shift for g in groups):
        protos: dict[tuple, set[str]] = {}
        full_val: set[str] = set()
        for g in groups:
            if g.shift != shift:
                continue
            for p in g.points:
                if p.preferred:
                    protos.setdefault(g.protocol, set()).add(p.source)
                    if SHIFTS.get(shift) and g.x_setting == "imagenet":
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
    dropped = meta.get("dropped") or []
    if dropped:
        lines += ["", f"Input rows not placed on any page: {len(dropped)} (listed with their reasons on the "
                  "'Rows not placed' page and in summary.json)"]
    _text_page(pdf, "Effective robustness report", _wrap("\n".join(lines), 105))


def _dropped_pages(pdf, dropped: Sequence[Any], user_sources: set[str]) -> None:
    """Every row the report does not place: your rows one per line, bundled rows counted."""
    from collections import Counter

    lines = [f"{len(dropped)} input rows are on no page. Reasons:"]
    for code, text in DROP_REASONS.items():
        k = sum(d.reason == code for d in dropped)
        if k:
            lines.append(f"  {code} ({k}): {text}")
    yours = [d for d in dropped if d.source in user_sources or d.source.startswith("baseline:")]
    bundled = Counter((d.source, d.reason) for d in dropped if d not in yours)
    if yours:
        lines += ["", f"Your rows ({len(yours)}):"]
        lines += [f"  [{d.reason}] {d.source}: {d.model} on {d.setting}" + ("" if d.metric == "top1" else f" ({d.metric})")
                  + f" - {d.detail}" for d in yours]
    if bundled:
        lines += ["", "Bundled published rows (counts; each row is in summary.json):"]
        lines += [f"  {src}: {k} {reason}" for (src, reason), k in sorted(bundled.items())]
    per_page = 70
    chunks = [lines[i : i + per_page] for i in range(0, len(lines), per_page)] or [lines]
    for k, chunk in enumerate(chunks, start=1):
        _text_page(pdf, f"Rows not placed ({k}/{len(chunks)})", _wrap("\n".join(chunk), 118), fontsize=7, family="monospace")


def _fmt_pct(v: float | None) -> str:
    return "   -  " if v is None or not np.isfinite(v) else f"{100 * v:6.2f}"


#: Characters a landscape table line may hold at the table's font size.
TABLE_WIDTH = 200
#: The widest the name and source columns get: a longer name continues on the lines below its
#: row, so one long name never shrinks the whole table to an unreadable font.
NAME_MAX = 48
SOURCE_MAX = 28


def _pieces(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken at spaces where there are some."""
    return textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False, drop_whitespace=False) or [""]


def _paginate(blocks: list[list[str]], rows: int) -> list[list[str]]:
    """Lines in pages of at most ``rows`` lines, a row's lines on one page unless they alone
    are more than a page holds."""
    pages: list[list[str]] = [[]]
    for block in blocks:
        if pages[-1] and len(pages[-1]) + len(block) > rows:
            pages.append([])
        for i in range(0, len(block), rows):
            if i:
                pages.append([])
            pages[-1] += block[i : i + rows]
    return pages


def _table_pages(pdf, groups: Sequence[Group], hl: dict[int, np.ndarray], user_sources: set[str] = frozenset()) -> None:
    """Per highlighted model: ID accuracy, each OOD accuracy and ER [interval], average ER with
    the number of shifts it averages. Names are never truncated (a long one continues on the
    lines below its row); columns that do not fit one page width continue on further pages
    (each lists only models with a value in its columns)."""
    table = build_table(groups, hl, user_sources)
    if not table.rows:
        _text_page(pdf, "Summary", "No model matches the highlight patterns.")
        return
    names = {id(r): r.published_mark() + r.model + ("*" if r.incomplete else "") for r in table.rows}
    name_w = min(NAME_MAX, max(12, *(len(n) for n in names.values())))
    src_w = min(SOURCE_MAX, max(6, *(len(r.source) for r in table.rows)))
    col_w = max(24, *(len(column_name(c)) for c in table.columns))
    fixed = name_w + src_w + 6 + 3 + 12
    per = max(1, (TABLE_WIDTH - fixed) // (col_w + 1))
    chunks = [table.columns[i : i + per] for i in range(0, len(table.columns), per)]
    pages: list[tuple[list[str], list[str], str]] = []
    for cols in chunks:
        head = f"{'model':<{name_w}} {'source':<{src_w}} {'ID':>6} " + " ".join(f"{column_name(c):>{col_w}}" for c in cols) + f" {'avg ER (k)':>11}"
        sub = f"{'':<{name_w}} {'':<{src_w}} {'':>6} " + " ".join(f"{'OOD   ER [95% CI]':>{col_w}}" for _ in cols)
        blocks = []
        for r in table.rows:
            if not any(c in r.cells for c in cols):
                continue
            cells = []
            for c in cols:
                cell = r.cells.get(c)
                if cell is None:
                    cells.append(f"{'-':>{col_w}}")
                elif cell.er is None:
                    cells.append(f"{_fmt_pct(cell.ood)}  {'no fit':>16}".rjust(col_w))
                else:
                    cells.append(f"{_fmt_pct(cell.ood)} {100 * cell.er:+5.1f} [{100 * cell.er_low:+.1f},{100 * cell.er_high:+.1f}]".rjust(col_w))
            avg, k = r.avg_er()
            avg_s = f"{100 * avg:+7.2f} ({k})" if avg is not None else f"{'-':>11}"
            name, src = _pieces(names[id(r)], name_w), _pieces(r.source, src_w)
            block = [f"{name[0]:<{name_w}} {src[0]:<{src_w}} {_fmt_pct(r.id_acc)} " + " ".join(cells) + f" {avg_s}"]
            for i in range(1, max(len(name), len(src))):
                block.append(f"{name[i] if i < len(name) else '':<{name_w}} {src[i] if i < len(src) else ''}")
            blocks.append(block)
        for lines in _paginate(blocks, TABLE_ROWS):
            pages.append((lines, [head, sub, "-" * len(head)], head))
    marks = [f"  * {r.model}: " + "; ".join(r.incomplete) for r in table.rows if r.incomplete]
    fontsize = min(5.9, 5.9 * TABLE_WIDTH / max(max(len(h) for _, _, h in pages), 1))
    for k, (chunk, header, _) in enumerate(pages, start=1):
        body = "\n".join([*header, *chunk])
        if k == len(pages):
            body += "\n\n" + _wrap("Accuracies in %, ER in accuracy points; 'no fit': no baseline under that source's protocol "
                                  "(see the title page). ID = full ImageNet val top-1. avg ER (k): mean ER over the k top-1 "
                                  "shifts with a fitted trend. Your results first, then by average ER. '= ' before a name: a "
                                  "known release that reproduces its published figures; '! ': one that does not.", 150)
            if marks:
                body += "\n* scored on fewer images than published (n of N):\n" + "\n".join(marks)
        _text_page(pdf, f"Summary of highlighted models ({k}/{len(pages)})", body, LANDSCAPE, fontsize, "monospace")


def _group_page(pdf, g: Group, transform: str, highlight: np.ndarray, user_sources: set[str], rule: str, notes: Sequence[str]) -> None:
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=PORTRAIT)
    fig.text(0.07, 0.965, textwrap.fill(g.title(), 60), fontsize=13 if len(g.title()) <= 60 else 10, weight="bold", va="top")
    if g.label() != g.title():
        fig.text(0.07, 0.945, textwrap.fill(g.label(), 120), fontsize=7, va="top", family="monospace")
    ax = fig.add_axes((0.11, 0.39, 0.83, 0.54))
    hidden = scatter(ax, g, transform, highlight, user_sources)
    lines = []
    chance = [p.model for p, c in zip(g.points, near_chance(g), strict=True) if c]
    if chance:
        lines.append(f"Near chance (ID below 5%), left off the axes ({len(chance)}): {', '.join(chance[:8])}"
                     + (" ..." if len(chance) > 8 else ""))
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
        lines.append(f"Highlighted models ({len(idx)}), ER in points [95% CI; binomial +-, bootstrap], best first:")
        for i in idx[:10]:
            p = g.points[i]
            samp = g.er_sampling_half[i]
            parts = (f"+-{100 * samp:.2f}" if np.isfinite(samp) else "n/a") + f", [{100 * g.er_fit_low[i]:+.2f}, {100 * g.er_fit_high[i]:+.2f}]"
            mark = f"  images {'; '.join(p.incomplete)}" if p.incomplete else ""
            lines.append(f"   {p.model:<48} {100 * g.er[i]:+6.2f} [{100 * g.er_low[i]:+.2f}, {100 * g.er_high[i]:+.2f}; {parts}]{mark}")
        if len(idx) > 10:
            lines.append(f"   ... {len(idx) - 10} more in the summary table and summary.json")
    fig.text(0.07, 0.32, _wrap("\n".join(lines), 108), fontsize=7, va="top", family="monospace", linespacing=1.3)
    pdf.savefig(fig)
    plt.close(fig)


def _average_page(pdf, groups: Sequence[Group], highlight: Sequence[str], transform: str, user_sources: set[str]) -> None:
    """Mean OOD accuracy over the ImageNet shifts vs ImageNet accuracy (WiSE-FT's Figure 1 axes)."""
    import matplotlib.pyplot as plt

    from reports.analysis import Point
    from reports.vocabulary import AVERAGE_SHIFTS

    pts = average_points(groups, AVERAGE_SHIFTS)
    if not pts:
        return
    marks = highlight_mask([Point(p["source"], p["model"], p["tags"], "", "", (), p["x"], p["y"], None, None) for p in pts], highlight)
    fig = plt.figure(figsize=PORTRAIT)
    fig.text(0.07, 0.965, "Average over distribution shifts", fontsize=13, weight="bold", va="top")
    ax = fig.add_axes((0.11, 0.39, 0.83, 0.54))
    caption = average_scatter(ax, pts, AVERAGE_SHIFTS, transform, marks, user_sources)
    note = ("Each model's mean top-1 over the shifts it has all of, each on its own source's protocol, against full "
            "ImageNet val; the trend is fitted on the means of models that are baseline models on every shift.")
    fig.text(0.07, 0.32, _wrap(caption + "\n" + note, 108), fontsize=7, va="top", family="monospace", linespacing=1.3)
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
            _average_page(pdf, groups, highlight, meta["transform"], user_sources)
            notes = protocol_notes(groups)
            for i in shown:
                _group_page(pdf, groups[i], meta["transform"], hl[i], user_sources, meta["baseline"], notes)
            for page in extra_pages:
                page(pdf)
            if meta.get("dropped"):
                _dropped_pages(pdf, meta["dropped"], user_sources)
            _text_page(pdf, "Methods", METHODS, fontsize=8.5)
            pages = raw.get_pagecount()
    return pages
