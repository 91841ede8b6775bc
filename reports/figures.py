"""The per-shift scatter: transformed axes labelled in percent, y = x, trend with its band."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reports import scales
from reports.analysis import Group

#: Candidate tick positions, percent.
TICKS = (0.01, 0.1, 0.5, 1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99, 99.5, 99.9)
MAX_LABELS = 12

#: (legend label, colour, marker size) per category, in legend order.
CATEGORIES = {
    "baseline": ("baseline (fitted)", "#1f77b4", 9),
    "standard": ("ImageNet-1k only, not in fit", "#9ecae1", 9),
    "more-data": ("more data", "#2ca02c", 9),
    "robustness-intervention": ("robustness intervention", "#ff7f0e", 9),
    "clip-zero-shot": ("CLIP zero-shot", "#d62728", 16),
    "low-accuracy": ("low-accuracy models", "#bdbdbd", 9),
    "user": ("your results", "#9467bd", 28),
    "other": ("other", "#7f7f7f", 9),
}


def category(tags: Sequence[str], source: str, in_baseline: bool, user_sources: set[str]) -> str:
    if source in user_sources:
        return "user"
    if in_baseline:
        return "baseline"
    for c in ("clip-zero-shot", "robustness-intervention", "more-data", "standard", "low-accuracy"):
        if c in tags:
            return c
    return "other"


def _ticks(transform: str, lo: float, hi: float) -> list[float]:
    """Percent ticks inside the transformed range [lo, hi], at least 1/12 of the range apart."""
    out: list[float] = []
    last = -np.inf
    for t in TICKS:
        z = float(scales.forward(transform, t / 100)) if transform != "linear" else t / 100
        if lo <= z <= hi and z - last >= (hi - lo) / 12:
            out.append(t)
            last = z
    return out


def _fmt(t: float) -> str:
    return f"{t:g}"


def _place_labels(ax, xs, ys, texts) -> None:
    """Label points, trying offsets until a label overlaps no earlier label."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    taken = []
    offsets = [(6, 4), (6, -10), (-6, 4), (-6, -10), (6, 14), (6, -20), (-6, 14), (-6, -20), (10, 26), (10, -32)]
    for x, y, text in zip(xs, ys, texts, strict=True):
        for dx, dy in offsets:
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=6,
                              ha="left" if dx > 0 else "right",
                              arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.4"})
            box = ann.get_window_extent(renderer)
            frame = ax.get_window_extent(renderer)
            inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            if inside and not any(box.overlaps(b) for b in taken):
                taken.append(box)
                break
            ann.remove()


def scatter(ax, g: Group, transform: str, highlight: np.ndarray, user_sources: set[str]) -> int:
    """Draw group ``g`` on ``ax`` under ``transform``; label up to MAX_LABELS highlighted points.

    The axes span the baseline, highlighted and user points; returns how many others fall
    outside and are not drawn."""
    x, y, nx, ny = g.arrays()
    zx = scales.forward(transform, scales.clip(x, nx)[0]) if transform != "linear" else x
    zy = scales.forward(transform, scales.clip(y, ny)[0]) if transform != "linear" else y
    cats = [category(p.tags, p.source, b, user_sources) for p, b in zip(g.points, g.baseline, strict=True)]
    focus = g.baseline | highlight | np.array([c == "user" for c in cats])
    if not focus.any():
        focus = np.ones(len(cats), dtype=bool)
    lo = min(zx[focus].min(), zy[focus].min())
    hi = max(zx[focus].max(), zy[focus].max())
    pad = 0.05 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad
    visible = (zx >= lo) & (zx <= hi) & (zy >= lo) & (zy <= hi)
    for cat, (label, colour, size) in CATEGORIES.items():
        sel = np.array([c == cat for c in cats]) & visible
        if not sel.any():
            continue
        ax.scatter(zx[sel & ~highlight], zy[sel & ~highlight], s=size, c=colour, alpha=0.55, lw=0, label=f"{label} ({int(sel.sum())})")
        if (sel & highlight).any():
            ax.scatter(zx[sel & highlight], zy[sel & highlight], s=size * 2.2, c=colour, edgecolors="black", linewidths=0.5, zorder=4)
    ax.plot([lo, hi], [lo, hi], ls=":", c="0.3", lw=0.8, label="y = x")
    trend = g.fits.get(transform)
    if trend is not None:
        bx = x[g.baseline]
        grid = np.linspace(bx.min(), bx.max(), 200)
        pred = trend.predict(grid)
        band_lo, band_hi = trend.band(grid) if len(trend.segments[0].boot_slopes) else (pred, pred)
        zg = scales.forward(transform, scales.clip(grid)[0]) if transform != "linear" else grid
        f = (lambda a: scales.forward(transform, scales.clip(a)[0])) if transform != "linear" else (lambda a: a)
        ax.fill_between(zg, f(band_lo), f(band_hi), color="#1f77b4", alpha=0.25, lw=0, label="95% bootstrap band")
        ax.plot(zg, f(pred), c="#08306b", lw=1.2, label="trend fit")
    ticks = _ticks(transform, lo, hi) if transform != "linear" else [t for t in TICKS if lo <= t / 100 <= hi]
    pos = [float(scales.forward(transform, t / 100)) for t in ticks]
    ax.set_xticks(pos, [_fmt(t) for t in ticks], fontsize=7)
    ax.set_yticks(pos, [_fmt(t) for t in ticks], fontsize=7)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.grid(True, lw=0.3, alpha=0.5)
    ax.set_xlabel(f"{g.x_setting} top-1 accuracy (%, {transform} scale)", fontsize=8)
    ax.set_ylabel(f"{g.shift} top-1 accuracy (%, {transform} scale)", fontsize=8)
    ax.legend(fontsize=6, loc="upper left", framealpha=0.9)
    idx = np.flatnonzero(highlight)
    if len(idx) > MAX_LABELS:
        score = np.abs(g.er[idx]) if g.er is not None else zy[idx]
        idx = idx[np.argsort(-score)[:MAX_LABELS]]
    idx = idx[np.argsort(-zy[idx])]
    _place_labels(ax, zx[idx], zy[idx], [g.points[i].model for i in idx])
    return int((~visible).sum())
