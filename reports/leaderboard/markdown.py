"""The leaderboard as Markdown tables (one per protocol) plus the rejected list."""

from __future__ import annotations

import math
from collections.abc import Sequence

from reports.leaderboard.html import method_text
from reports.leaderboard.ranking import Table, labels_note, shown_name


def cell(value: object) -> str:
    """Submitted text made inert in a Markdown table: no pipes, newlines, raw HTML, links or
    images (``[text](javascript:...)``, ``![](https://tracker)``: the ``]`` before ``(`` is
    escaped, so no link text ever closes)."""
    text = " ".join(str(value).split())
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("](", "\\](")


def pct(x: float | None, half: float | None = None) -> str:
    if x is None or math.isnan(x):
        return "–"
    return f"{100 * x:.2f}" + (f" ± {100 * half:.2f}" if half is not None else "")


def table_md(t: Table) -> str:
    head = [
        "ER rank (range)",
        "OOD rank (range)",
        "Model",
        "Method",
        "Extra data",
        "Avg ER (pp, 95% CI)",
        "Avg OOD top-1 (%, 95% CI)",
    ]
    head += [f"{s}" for s in (*t.id_shifts, *t.ood_shifts)]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---:", "---:", ":---", ":---", ":---"] + ["---:"] * (len(head) - 5)) + "|",
    ]
    for e in t.entries:
        row = [
            e.rank_text("er"),
            e.rank_text("ood"),
            cell(shown_name(e)) + (f" ({e.published_mark()})" if e.published else ""),
            cell(method_text(e.card)),
            "yes" if e.card.get("extra_data") else "no",
            pct(e.avg_er, e.avg_er_half),
            pct(e.avg_ood, e.avg_ood_half),
        ]
        row += [pct(e.id_scores[s][0]) for s in t.id_shifts]
        row += [pct(e.points[s].y) for s in t.ood_shifts]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def leaderboard_md(tables: Sequence[Table], rejected: Sequence[tuple[str, list[str]]]) -> str:
    out = ["# shiftbench leaderboard", ""]
    out.append(
        "Scores are recomputed from each submission's predictions; top-1 in %, effective robustness (ER) in percentage points; intervals are 95%."
    )
    if labels_note(tables):
        out += ["", cell(labels_note(tables))]
    for t in tables:
        out += ["", f"## Protocol {t.protocol}", "", cell(t.label), ""]
        if t.trend_note():
            out += [cell(t.trend_note()), ""]
        out.append(table_md(t))
    out += ["", "## Rejected submissions", ""]
    if not rejected:
        out.append("None.")
    for source, reasons in rejected:
        out.append(f"- `{cell(source)}`")
        out += [f"  - {cell(r)}" for r in reasons]
    return "\n".join(out) + "\n"
