"""The summary table of highlighted models as data: the PDF's table pages, ``summary.csv`` and
``summary.tex`` are all written from it, so the three never disagree.

One row per (source, model); one column per (shift, metric) with the model's preferred
pairing; the average effective robustness is over the top-1 columns with a fitted trend and
states how many shifts it averages.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from reports.analysis import Group, shift_order
from reports.vocabulary import ID_SETTING


@dataclass
class Cell:
    ood: float
    er: float | None = None
    er_low: float | None = None
    er_high: float | None = None
    incomplete: tuple[str, ...] = ()


@dataclass
class TableRow:
    source: str
    model: str
    id_acc: float | None = None
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    published: str = ""  # "reproduces" / "differs": a known release's published-number check

    def published_mark(self) -> str:
        """'= ' before the name when every checked row reproduces its published figure, '! '
        when one does not; '' for a model that is no known release."""
        return {"reproduces": "= ", "differs": "! "}.get(self.published, "")

    def avg_er(self) -> tuple[float | None, int]:
        """(mean ER over fitted top-1 columns, how many)."""
        ers = [c.er for (_, metric), c in self.cells.items() if metric == "top1" and c.er is not None]
        return (float(np.mean(ers)) if ers else None), len(ers)

    @property
    def incomplete(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m for c in self.cells.values() for m in c.incomplete))


@dataclass
class SummaryTable:
    columns: list[tuple[str, str]]
    rows: list[TableRow]


def build_table(groups: Sequence[Group], hl: dict[int, np.ndarray], user_sources: set[str] = frozenset()) -> SummaryTable:
    """Highlighted models' preferred points, your results first, then by average ER."""
    rows: dict[tuple[str, str], TableRow] = {}
    columns: set[tuple[str, str]] = set()
    for gi, g in enumerate(groups):
        for i, p in enumerate(g.points):
            if not (p.preferred and hl[gi][i]):
                continue
            r = rows.setdefault((p.source, p.model), TableRow(p.source, p.model))
            r.published = published_verdict(p.tags, r.published)
            if g.x_setting == ID_SETTING and g.metric == "top1":
                r.id_acc = p.x
            cell = Cell(p.y, incomplete=p.incomplete)
            if g.er is not None:
                cell.er, cell.er_low, cell.er_high = float(g.er[i]), float(g.er_low[i]), float(g.er_high[i])
            r.cells[(g.shift, g.metric)] = cell
            columns.add((g.shift, g.metric))
    order = {s: k for k, s in enumerate(shift_order(s for s, _ in columns))}
    cols = sorted(columns, key=lambda c: (order[c[0]], c[1] != "top1", c[1]))

    def key(r: TableRow):
        avg, _ = r.avg_er()
        return (r.source not in user_sources, -avg if avg is not None else np.inf, r.model, r.source)

    return SummaryTable(cols, sorted(rows.values(), key=key))


def published_verdict(tags, verdict: str) -> str:
    """A model's published-check verdict over its rows: one that differs marks the model."""
    if verdict == "differs" or "differs-from-published" in tags:
        return "differs"
    return "reproduces" if verdict == "reproduces" or "reproduces-published" in tags else ""


def column_name(col: tuple[str, str]) -> str:
    shift, metric = col
    return shift if metric == "top1" else f"{shift} {metric}"


def _pct(v: float | None) -> str:
    return "" if v is None or not np.isfinite(v) else f"{100 * v:.2f}"


def to_csv(t: SummaryTable) -> str:
    """Percent and points, two decimals; empty where there is no value."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = ["model", "source", "id_top1"]
    for c in t.columns:
        n = column_name(c)
        head += [f"{n} ood", f"{n} er", f"{n} er_low", f"{n} er_high"]
    w.writerow([*head, "avg_er", "avg_er_shifts", "images"])
    for r in t.rows:
        line = [r.model, r.source, _pct(r.id_acc)]
        for c in t.columns:
            cell = r.cells.get(c)
            line += [_pct(cell.ood), _pct(cell.er), _pct(cell.er_low), _pct(cell.er_high)] if cell else ["", "", "", ""]
        avg, k = r.avg_er()
        w.writerow([*line, _pct(avg), k, "; ".join(r.incomplete)])
    return buf.getvalue()


def _tex(text: str) -> str:
    out = text
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"), ("_", r"\_"),
                 ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\textasciicircum{}")):
        out = out.replace(a, b) if a != "\\" else out.replace(a, "\x00")
    return out.replace("\x00", r"\textbackslash{}")


def to_latex(t: SummaryTable) -> str:
    """A booktabs table: OOD accuracy and ER per column, average ER with its shift count."""
    spec = "ll r" + " rr" * len(t.columns) + " rr"
    lines = [r"\begin{tabular}{" + spec + "}", r"\toprule"]
    top = ["Model", "Source", "ID"] + [r"\multicolumn{2}{c}{" + _tex(column_name(c)) + "}" for c in t.columns] + [r"\multicolumn{2}{c}{avg ER}"]
    sub = ["", "", "top-1"] + ["OOD", "ER"] * len(t.columns) + ["ER", "shifts"]
    lines += [" & ".join(top) + r" \\", " & ".join(sub) + r" \\", r"\midrule"]
    for r in t.rows:
        cells = [_tex(r.model) + (r"$^\dagger$" if r.incomplete else ""), _tex(r.source), _pct(r.id_acc)]
        for c in t.columns:
            cell = r.cells.get(c)
            cells += [_pct(cell.ood), f"{100 * cell.er:+.2f}" if cell and cell.er is not None else ""] if cell else ["", ""]
        avg, k = r.avg_er()
        cells += [f"{100 * avg:+.2f}" if avg is not None else "", str(k)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", "% Accuracies in %, ER in points; avg ER over the top-1 shifts with a fitted trend",
              "% (their count in the last column); $^\\dagger$ scored on fewer images than published (see summary.csv)."]
    return "\n".join(lines) + "\n"
