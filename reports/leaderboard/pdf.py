"""The leaderboard as a PDF: one text page per protocol table, the scatter plots, the rejected list."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

from harness.files import temp_path
from reports.leaderboard.html import method_text
from reports.leaderboard.markdown import pct
from reports.leaderboard.plots import scatter_figure
from reports.leaderboard.ranking import Table, labels_note, shown_name
from reports.plain_text import plain_text

ROWS_PER_PAGE = 40


def _text_page(title: str, lines: Sequence[str]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.69, 8.27))
    FigureCanvasAgg(fig)
    fig.text(0.04, 0.95, title, fontsize=14, weight="bold", va="top")
    fig.text(0.04, 0.90, "\n".join(lines), fontsize=7.5, family="monospace", va="top")
    return fig


def _clip(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


NAME_WIDTH = 28
WRAP = 150


def _wrapped(text: str, indent: int = 0) -> list[str]:
    return textwrap.wrap(" ".join(str(text).split()), WRAP, initial_indent=" " * indent, subsequent_indent=" " * (indent + 2))


def table_head(t: Table) -> str:
    head = f"{'ER rank':>9} {'OOD rank':>9}  {'model':<{NAME_WIDTH}} {'method':<18} {'avg ER (pp)':>15} {'avg OOD (%)':>15}"
    return head + "".join(f" {_clip(s, 12):>12}" for s in t.ood_shifts)


def table_lines(t: Table) -> list[str]:
    """The table's notes (never clipped: which shifts the average ER leaves out, whose labels were
    not checked) and one line per entry; a name too long for its column is written whole on a
    line of its own above its figures, so two long names are never shown alike."""
    lines = [*_wrapped(t.label), *_wrapped(labels_note([t])), *_wrapped(t.trend_note()), "", table_head(t)]
    for e in t.entries:
        name = " ".join(shown_name(e).split()) + (f" ({e.published_mark()})" if e.published else "")
        if len(name) > NAME_WIDTH:
            lines += _wrapped(name, 21)
            name = "(named above)"
        line = f"{e.rank_text('er'):>9} {e.rank_text('ood'):>9}  {name:<{NAME_WIDTH}} {_clip(method_text(e.card), 18):<18}"
        line += f" {pct(e.avg_er, e.avg_er_half):>15} {pct(e.avg_ood, e.avg_ood_half):>15}"
        line += "".join(f" {pct(e.points[s].y):>12}" for s in t.ood_shifts)
        lines.append(line)
    return lines


def write_pdf(
    path: Path, tables: Sequence[Table], rejected: Sequence[tuple[str, list[str]]]
) -> Path:
    from matplotlib.backends.backend_pdf import PdfPages

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    with plain_text(), PdfPages(
        tmp, metadata={"Title": "shiftbench leaderboard", "Creator": "shiftbench"}
    ) as pdf:
        for t in tables:
            lines = table_lines(t)
            for start in range(0, max(len(lines), 1), ROWS_PER_PAGE):
                page = lines[start : start + ROWS_PER_PAGE]
                if start:  # a continued table repeats its column heads
                    page = [f"(continued) {_clip(t.label, WRAP - 12)}", "", table_head(t), *page]
                pdf.savefig(_text_page(f"shiftbench leaderboard: protocol {t.protocol}", page))
            for s in t.ood_shifts:
                pdf.savefig(scatter_figure(t, s))
        lines = [
            f"{_clip(src, 60)}: {_clip(r, 140)}" for src, reasons in rejected for r in reasons
        ] or ["None."]
        for start in range(0, len(lines), ROWS_PER_PAGE):
            pdf.savefig(_text_page("Rejected submissions", lines[start : start + ROWS_PER_PAGE]))
    tmp.replace(path)
    return path
