"""Per-shift scatter plots on logit axes: baseline models, their trend, and the entries."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reports.leaderboard.ranking import Table
from reports.leaderboard.trend import CLIP, logit

TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


def _ticks(lo: float, hi: float) -> list[float]:
    inside = [t for t in TICKS if lo <= logit(t) <= hi]
    return inside or [0.5]


def scatter_figure(table: Table, shift: str):
    """A matplotlib Figure (Agg canvas, no pyplot state) of ``shift`` in ``table``; entries are
    labelled with their rank, so entry pages share these plots."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    trend = table.trends.get(shift)
    xs, ys = [], []
    if trend is not None:
        bx = logit([p[1] for p in trend.points])
        by = logit([p[2] for p in trend.points])
        ax.scatter(bx, by, s=14, c="0.6", label=f"baseline ({len(trend.points)} models)", zorder=2)
        xs += list(bx)
        ys += list(by)
    ex = logit([e.points[shift].x for e in table.entries])
    ey = logit([e.points[shift].y for e in table.entries])
    xs += list(ex)
    ys += list(ey)
    lo = min(min(xs), min(ys)) - 0.3
    hi = max(max(xs), max(ys)) + 0.3
    grid = np.linspace(lo, hi, 100)
    ax.plot(grid, grid, ls=":", c="0.4", lw=0.8, label="y = x")
    if trend is not None:
        ax.plot(
            grid, trend.slope * grid + trend.intercept, c="tab:blue", lw=1.2, label="baseline trend"
        )
    for e, x, y in zip(table.entries, ex, ey, strict=True):
        ax.scatter([x], [y], s=30, c="tab:red", edgecolors="k", linewidths=0.5, zorder=3)
        rank = e.rank_er or e.rank_ood
        ax.annotate(str(rank), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ticks = _ticks(lo, hi)
    ax.set_xticks(logit(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_yticks(logit(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    id_setting = table.entries[0].points[shift].id_setting if table.entries else "ID"
    ax.set_xlabel(f"{id_setting} top-1 (%, logit scale)")
    ax.set_ylabel(f"{shift} top-1 (%, logit scale)")
    ax.set_title(f"{shift}: numbers are ranks", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.text(
        0.01,
        0.01,
        f"accuracies clipped to [{CLIP:g}, {1 - CLIP:g}] before the logit",
        fontsize=6,
        color="0.4",
    )
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.14, top=0.92)
    return fig


def write_scatter(table: Table, shift: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    scatter_figure(table, shift).savefig(tmp, format="png")
    tmp.replace(path)
    return path
