"""The static site: index.html (one sortable table per protocol, scatter plots, rejected list)
and one page per entry. Every submitted string is HTML-escaped; only http(s) links are linked."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.files import atomic_write_bytes
from reports.leaderboard.ranking import Entry, Table, labels_note, shown_name

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f4f4f4;cursor:pointer;user-select:none}th[aria-sort=ascending]::after{content:" \\25B2"}
th[aria-sort=descending]::after{content:" \\25BC"}td.t,th.t{text-align:left}.ci{color:#777;font-size:90%}
.plots{display:flex;flex-wrap:wrap;gap:8px}.plots img{width:380px}.protocol-label{color:#555;font-size:90%}
.reasons{color:#a00}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def pct(x: float | None, half: float | None = None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "&ndash;"
    text = f"{100 * x:.2f}"
    if half is not None:
        text += f' <span class="ci">&plusmn;{100 * half:.2f}</span>'
    return text


def num(x: float | None) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else repr(float(x))


def link(url: Any, text: Any) -> str:
    url = str(url)
    if url.startswith(("https://", "http://")):
        return f'<a href="{esc(url)}" rel="nofollow noopener">{esc(text)}</a>'
    return esc(text)


def _published(e: Entry) -> str:
    """The "reproduces published" mark after a model's name ('' for no known release)."""
    mark = e.published_mark()
    return f' <span class="pub {esc(e.published)}">({esc(mark)})</span>' if mark else ""


def method_text(card: dict) -> str:
    m = card.get("method", {})
    kind = m.get("kind", "")
    if kind == "wise-ft":
        return f"WiSE-FT α={m.get('alpha')}"
    if kind == "soup":
        return f"{m.get('recipe')} soup of {m.get('ingredients')}"
    return str(kind)


def page(title: str, body: str, depth: int = 0) -> str:
    up = "../" * depth
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body>\n{body}\n"
        f'<pre id="selftest" hidden></pre>\n<script src="{up}site.js"></script>\n</body></html>\n'
    )


def plot_path(table: Table, shift: str) -> str:
    return f"plots/{table.protocol}/{shift}.png"


def _header(key: str, label: str, type_: str, first: str = "descending", cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<th{c} data-key="{key}" data-type="{type_}" data-first="{first}">{esc(label)}</th>'


def table_html(table: Table) -> str:
    heads = [
        _header("rank_er", "ER rank (range)", "num", "ascending"),
        _header("rank_ood", "OOD rank (range)", "num", "ascending"),
        _header("model", "Model", "text", "ascending", "t"),
        _header("method", "Method", "text", "ascending", "t"),
        _header("extra_data", "Extra data", "text", "ascending", "t"),
        _header("avg_er", "Avg eff. robustness (pp, 95% CI)", "num"),
        _header("avg_ood", "Avg OOD top-1 (%, 95% CI)", "num"),
    ]
    heads += [_header(f"id:{s}", f"{s} top-1", "num") for s in table.id_shifts]
    heads += [_header(f"ood:{s}", f"{s} top-1", "num") for s in table.ood_shifts]
    rows = []
    for e in table.entries:
        cells = [
            f'<td data-v="{num(e.rank_er)}">{esc(e.rank_text("er"))}</td>',
            f'<td data-v="{e.rank_ood}">{esc(e.rank_text("ood"))}</td>',
            f'<td class="t" data-v="{esc(e.card["name"])}"><a href="entries/{e.id}.html">{esc(shown_name(e))}</a>{_published(e)}</td>',
            f'<td class="t">{esc(method_text(e.card))}</td>',
            f'<td class="t">{"yes" if e.card.get("extra_data") else "no"}</td>',
            f'<td data-v="{num(e.avg_er)}">{pct(e.avg_er, e.avg_er_half)}</td>',
            f'<td data-v="{num(e.avg_ood)}">{pct(e.avg_ood, e.avg_ood_half)}</td>',
        ]
        cells += [
            f'<td data-v="{num(e.id_scores[s][0])}">{pct(e.id_scores[s][0])}</td>'
            for s in table.id_shifts
        ]
        cells += [
            f'<td data-v="{num(e.points[s].y)}">{pct(e.points[s].y)}</td>' for s in table.ood_shifts
        ]
        rows.append(f'<tr data-entry="{e.id}">' + "".join(cells) + "</tr>")
    return (
        f'<table class="board" data-protocol="{table.protocol}"><thead><tr>{"".join(heads)}</tr></thead>\n'
        f"<tbody>\n" + "\n".join(rows) + "\n</tbody></table>"
    )


def _plots(table: Table, prefix: str) -> str:
    figs = []
    for s in table.ood_shifts:
        src = prefix + plot_path(table, s)
        figs.append(
            f'<figure><img src="{esc(src)}" alt="{esc(s)} ID vs OOD top-1"><figcaption>{esc(s)}</figcaption></figure>'
        )
    return '<div class="plots">' + "".join(figs) + "</div>"


def _trend_note(table: Table) -> str:
    note = table.trend_note()
    return f"<p><b>{esc(note)}</b></p>" if note else ""


def index_html(tables: Sequence[Table], rejected: Sequence[tuple[str, list[str]]]) -> str:
    n_acc = sum(len(t.entries) for t in tables)
    parts = [
        "<h1>shiftbench leaderboard</h1>",
        f"<p>{n_acc} accepted submission(s) in {len(tables)} protocol table(s); {len(rejected)} rejected. "
        "Scores are recomputed from each submission's predictions. Effective robustness is OOD top-1 minus the "
        "baseline trend's prediction from the ID top-1 on the shift's classes, in percentage points; intervals are "
        "95% and combine the test sets' sampling error with the trend fit's bootstrap spread; a rank's range is the ranks "
        "its interval allows. Click a column header to sort.</p>",
        '<p>Downloads: <a href="leaderboard.md">Markdown</a> &middot; <a href="leaderboard.pdf">PDF</a></p>',
        f'<p class="labels">{esc(labels_note(tables))}</p>' if labels_note(tables) else "",
    ]
    for t in tables:
        parts.append(
            f'<section class="protocol" id="p-{t.protocol}"><h2>Protocol {t.protocol}</h2>'
            f'<p class="protocol-label">{esc(t.label)}</p>{_trend_note(t)}{table_html(t)}{_plots(t, "")}</section>'
        )
    parts.append('<section id="rejected"><h2>Rejected submissions</h2>')
    if rejected:
        items = []
        for source, reasons in rejected:
            lines = "".join(f"<li>{esc(r)}</li>" for r in reasons)
            items.append(f'<li><b>{esc(source)}</b><ul class="reasons">{lines}</ul></li>')
        parts.append("<ul>" + "".join(items) + "</ul>")
    else:
        parts.append("<p>None.</p>")
    parts.append("</section>")
    return page("shiftbench leaderboard", "\n".join(parts))


CARD_FIELDS = (
    ("architecture", "Architecture"),
    ("parameters", "Parameters"),
    ("pretraining_data", "Pretraining data"),
    ("finetuning_data", "Fine-tuning data"),
    ("extra_data", "Extra data"),
    ("licence", "Licence"),
)


def card_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def entry_html(table: Table, e: Entry) -> str:
    card = e.card
    rows = [f'<tr><th class="t">Model in results</th><td class="t">{esc(e.model)}</td></tr>']
    rows += [
        f'<tr><th class="t">{label}</th><td class="t">{esc(card_value(card.get(key, "")))}</td></tr>'
        for key, label in CARD_FIELDS
    ]
    rows.append(f'<tr><th class="t">Method</th><td class="t">{esc(method_text(card))}</td></tr>')
    rows.append(
        f'<tr><th class="t">Authors</th><td class="t">{esc(", ".join(card.get("authors", [])))}</td></tr>'
    )
    if card.get("paper"):
        rows.append(
            f'<tr><th class="t">Paper</th><td class="t">{link(card["paper"], card["paper"])}</td></tr>'
        )
    rows.append(f'<tr><th class="t">Submission file</th><td class="t">{esc(e.source)}</td></tr>')
    checked = "yes" if e.labels_checked else "no: listed with --trust-labels, accuracies rest on the submitted labels"
    rows.append(f'<tr><th class="t">Labels checked against the dataset</th><td class="t">{checked}</td></tr>')
    shift_rows = []
    for s in table.ood_shifts:
        p = e.points[s]
        shift_rows.append(
            f'<tr><td class="t">{esc(s)}</td><td class="t">{esc(p.id_setting)}</td><td>{pct(p.x)}</td><td>{p.n_x:,}</td>'
            f"<td>{pct(p.y)}</td><td>{p.n_y:,}</td><td>{pct(p.er, p.er_half)}</td></tr>"
        )
    body = (
        f'<p><a href="../index.html#p-{table.protocol}">&larr; leaderboard</a></p>'
        f"<h1>{esc(shown_name(e))}</h1>"
        f"<p>ER rank {esc(e.rank_text('er'))} &middot; OOD rank {esc(e.rank_text('ood'))} &middot; "
        f"avg effective robustness {pct(e.avg_er, e.avg_er_half)} pp &middot; avg OOD top-1 {pct(e.avg_ood, e.avg_ood_half)}%</p>"
        f"<table>{''.join(rows)}</table>"
        '<h2>Per shift</h2><table><thead><tr><th class="t">Shift</th><th class="t">ID setting</th><th>ID top-1</th>'
        "<th>n</th><th>OOD top-1</th><th>n</th><th>Eff. robustness (pp, 95% CI)</th></tr></thead><tbody>"
        + "".join(shift_rows)
        + "</tbody></table>"
        + _plots(table, "../")
        + f'<p class="protocol-label">Protocol {table.protocol}: {esc(table.label)}</p>'
    )
    return page(f"{card['name']} - shiftbench leaderboard", body, depth=1)


def write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


SITE_JS = Path(__file__).with_name("site.js")
