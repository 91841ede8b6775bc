"""Per-shift scatter plots on logit axes: baseline models, their trend, and the entries."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.files import atomic_file
from reports.leaderboard.ranking import Table
from reports.leaderboard.trend import logit, sigmoid
from reports.plain_text import plain_text

TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


def zlogit(acc, n) -> np.ndarray:
    """Logit of accuracies clipped half an example from 0 and 1, as the trend fit does."""
    from reports.scales import clip

    return logit(
        clip(
            np.asarray(acc, dtype=float),
            np.array([np.nan if v is None else v for v in n], dtype=float),
        )[0]
    )


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
    t = table.trends[shift]
    xs, ys = [], []
    if t.points:
        bx = zlogit([p.x for p in t.points], [p.n_x for p in t.points])
        by = zlogit([p.y for p in t.points], [p.n_y for p in t.points])
        ax.scatter(
            bx,
            by,
            s=10,
            c="0.45",
            alpha=0.6,
            linewidths=0,
            label=f"baseline ({len(t.points)} models)",
            zorder=2,
            rasterized=True,
        )
        xs += list(bx)
        ys += list(by)
    ex = zlogit(
        [e.points[shift].x for e in table.entries], [e.points[shift].n_x for e in table.entries]
    )
    ey = zlogit(
        [e.points[shift].y for e in table.entries], [e.points[shift].n_y for e in table.entries]
    )
    xs += list(ex)
    ys += list(ey)
    lo = min(min(xs), min(ys)) - 0.3
    hi = max(max(xs), max(ys)) + 0.3
    grid = np.linspace(lo, hi, 100)
    ax.plot(grid, grid, ls=":", c="0.4", lw=0.8, label="y = x")
    if t.trend is not None:
        ax.plot(
            grid,
            logit(t.trend.predict(sigmoid(grid))),
            c="tab:blue",
            lw=1.2,
            label="baseline trend",
        )
    for e, x, y in zip(table.entries, ex, ey, strict=True):
        ax.scatter([x], [y], s=30, c="tab:red", edgecolors="k", linewidths=0.5, zorder=3)
        rank = e.rank_er or e.rank_ood
        ax.annotate(str(rank), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ticks = _ticks(lo, hi)
    ax.set_xticks(logit(ticks), [f"{100 * v:g}" for v in ticks])
    ax.set_yticks(logit(ticks), [f"{100 * v:g}" for v in ticks])
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
        "accuracies of 0 or 1 are drawn half an example inside the axis",
        fontsize=6,
        color="0.4",
    )
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.14, top=0.92)
    return fig


def write_scatter(table: Table, shift: str, path: Path) -> Path:
    with atomic_file(path, "wb", fsync=False) as fh, plain_text():
        scatter_figure(table, shift).savefig(fh, format="png")
    return path
