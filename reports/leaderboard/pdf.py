"""The leaderboard as a PDF: one text page per protocol table, the scatter plots, the rejected list."""

from __future__ import annotations

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


def table_lines(t: Table) -> list[str]:
    head = f"{'ER rank':>9} {'OOD rank':>9}  {'model':<28} {'method':<18} {'avg ER (pp)':>15} {'avg OOD (%)':>15}"
    head += "".join(f" {_clip(s, 12):>12}" for s in t.ood_shifts)
    lines = [_clip(t.label, 150), *([_clip(labels_note([t]), 150)] if labels_note([t]) else []), "", head]
    for e in t.entries:
        line = f"{e.rank_text('er'):>9} {e.rank_text('ood'):>9}  {_clip(shown_name(e), 28):<28} {_clip(method_text(e.card), 18):<18}"
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
                pdf.savefig(
                    _text_page(
                        f"shiftbench leaderboard: protocol {t.protocol}",
                        lines[start : start + ROWS_PER_PAGE],
                    )
                )
            for s in t.ood_shifts:
                pdf.savefig(scatter_figure(t, s))
        lines = [
            f"{_clip(src, 60)}: {_clip(r, 140)}" for src, reasons in rejected for r in reasons
        ] or ["None."]
        for start in range(0, len(lines), ROWS_PER_PAGE):
            pdf.savefig(_text_page("Rejected submissions", lines[start : start + ROWS_PER_PAGE]))
    tmp.replace(path)
    return path
