"""The per-shift scatter: transformed axes labelled in percent, y = x, trend with its band."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from reports import scales
from reports.analysis import Group, point_intervals
from reports.labels import place_labels

#: Candidate tick positions, percent.
#: Models below this ID accuracy are near chance: left off the axes (they would stretch a logit
#: axis over decades) and listed under the plot instead.
NEAR_CHANCE = 0.05
#: ``<base> alpha=<a>`` (WiSE-FT result files), ``<base>@alpha=<a>`` (a named engine wiseft model)
#: or ``<base>(alpha=<a>)`` (the engine's default name, ``models.wiseft.wiseft_label``).
ALPHA_NAME = re.compile(r"^(?P<base>.*?)(?:[ @]alpha=(?P<alpha>[0-9.]+(?:e-?[0-9]+)?)|\(alpha=(?P<paren>[0-9.]+(?:e-?[0-9]+)?)\))$")
#: Categories drawn first: everything else, so the baseline and your results are never buried.
DRAW_ORDER = ("other", "low-accuracy", "standard", "more-data", "robustness-intervention", "clip-zero-shot", "baseline", "user")

TICKS = (0.01, 0.1, 0.5, 1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99, 99.5, 99.9)
LINEAR_TICKS = tuple(range(0, 101, 10))
MAX_LABELS = 12

#: (legend label, colour, marker size) per category, in legend order.
CATEGORIES = {
    "baseline": ("baseline (fitted)", "#1f77b4", 16),
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
    for t in TICKS if transform != "linear" else LINEAR_TICKS:
        z = float(scales.forward(transform, t / 100)) if transform != "linear" else t / 100
        if lo <= z <= hi and z - last >= (hi - lo) / 12:
            out.append(t)
            last = z
    return out


def _fmt(t: float) -> str:
    return f"{t:g}"


def _error_bars(ax, g: Group, transform: str, sel: np.ndarray) -> None:
    """95% Clopper-Pearson intervals of the selected points, on the transformed axes."""
    if not sel.any():
        return
    xl, xh, yl, yh = (a[sel] for a in point_intervals(g))
    x, y, nx, ny = (a[sel] for a in g.arrays())

    def f(a, n):
        return scales.forward(transform, scales.clip(a, n)[0]) if transform != "linear" else a

    known = np.isfinite(xl) & np.isfinite(yl)
    if not known.any():
        return
    zx, zy = f(x, nx)[known], f(y, ny)[known]
    xerr = np.abs(np.stack([zx - f(xl[known], nx[known]), f(xh[known], nx[known]) - zx]))
    yerr = np.abs(np.stack([zy - f(yl[known], ny[known]), f(yh[known], ny[known]) - zy]))
    ax.errorbar(zx, zy, xerr=xerr, yerr=yerr, fmt="none", ecolor="0.2", elinewidth=0.5, capsize=0, zorder=3)


def near_chance(g: Group) -> np.ndarray:
    """Points whose ID accuracy is below :data:`NEAR_CHANCE`, left off the axes; none when
    every point is (then they are the plot)."""
    out = np.array([p.x < NEAR_CHANCE for p in g.points], dtype=bool)
    return out if not out.all() else np.zeros_like(out)


def wiseft_curves(g: Group, sel: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(base name, point indices ordered by alpha) for every WiSE-FT sweep with 2+ selected points."""
    sweeps: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for i, p in enumerate(g.points):
        m = ALPHA_NAME.match(p.model)
        if m and sel[i]:
            sweeps.setdefault((p.source, m["base"]), []).append((float(m["alpha"] or m["paren"]), i))
    return [(base, np.array([i for _, i in sorted(v)])) for (_, base), v in sorted(sweeps.items()) if len(v) > 1]


def scatter(ax, g: Group, transform: str, highlight: np.ndarray, user_sources: set[str]) -> int:
    """Draw group ``g`` on ``ax`` under ``transform``; label up to MAX_LABELS highlighted points.

    The axes span the baseline, highlighted and user points, near-chance models (ID below 5%)
    left out; returns how many points fall outside and are not drawn."""
    x, y, nx, ny = g.arrays()
    zx = scales.forward(transform, scales.clip(x, nx)[0]) if transform != "linear" else x
    zy = scales.forward(transform, scales.clip(y, ny)[0]) if transform != "linear" else y
    cats = [category(p.tags, p.source, b, user_sources) for p, b in zip(g.points, g.baseline, strict=True)]
    chance = near_chance(g)
    focus = (g.baseline | highlight | np.array([c == "user" for c in cats])) & ~chance
    if not focus.any():
        focus = ~chance if (~chance).any() else np.ones(len(cats), dtype=bool)
    lo = min(zx[focus].min(), zy[focus].min())
    hi = max(zx[focus].max(), zy[focus].max())
    pad = 0.05 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad
    visible = (zx >= lo) & (zx <= hi) & (zy >= lo) & (zy <= hi) & ~chance
    soup = np.array(["soup" in p.tags for p in g.points], dtype=bool)
    for z, cat in enumerate(DRAW_ORDER):
        label, colour, size = CATEGORIES[cat]
        sel = np.array([c == cat for c in cats]) & visible
        if not sel.any():
            continue
        plain = sel & ~highlight & ~soup
        ax.scatter(zx[plain], zy[plain], s=size, c=colour, alpha=0.9 if cat in ("baseline", "user") else 0.45, lw=0,
                   label=f"{label} ({int(sel.sum())})", rasterized=True, zorder=2 + 0.1 * z)
        if (sel & highlight & ~soup).any():
            hs = sel & highlight & ~soup
            ax.scatter(zx[hs], zy[hs], s=size * 2.2, c=colour, edgecolors="black", linewidths=0.5, zorder=4)
    ingredient = np.array(["fine-tuned" in p.tags and p.source.startswith("soups:") for p in g.points], dtype=bool) & ~soup
    if (ingredient & visible).any():
        ax.scatter(zx[ingredient & visible], zy[ingredient & visible], s=22, marker="x", c="#e377c2", linewidths=0.8, zorder=5,
                   label=f"soup ingredients ({int((ingredient & visible).sum())})")
    if (soup & visible).any():
        ax.scatter(zx[soup & visible], zy[soup & visible], s=60, marker="*", c="#e377c2", edgecolors="black", linewidths=0.5,
                   zorder=5, label=f"model soups ({int((soup & visible).sum())})")
    curves = []
    for k, (_base, idx) in enumerate(wiseft_curves(g, visible)):
        curves += ax.plot(zx[idx], zy[idx], "-", lw=0.9, c="#8c564b", alpha=0.8, zorder=3,
                          label="WiSE-FT, alpha 0 (zero-shot) to 1 (fine-tuned)" if k == 0 else None)
        ax.annotate("", xy=(zx[idx[-1]], zy[idx[-1]]), xytext=(zx[idx[-2]], zy[idx[-2]]),
                    arrowprops={"arrowstyle": "->", "color": "#8c564b", "lw": 0.9}, zorder=3)
    _error_bars(ax, g, transform, highlight & visible)
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
    ticks = _ticks(transform, lo, hi)
    pos = [float(scales.forward(transform, t / 100)) for t in ticks]
    ax.set_xticks(pos, [_fmt(t) for t in ticks], fontsize=7)
    ax.set_yticks(pos, [_fmt(t) for t in ticks], fontsize=7)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.grid(True, lw=0.3, alpha=0.5)
    metric = "top-1 accuracy" if g.metric == "top1" else g.metric
    ax.set_xlabel(f"{g.x_setting} {metric} (%, {transform} scale)", fontsize=8)
    ax.set_ylabel(f"{g.shift} {metric} (%, {transform} scale)", fontsize=8)
    ax.legend(fontsize=6, loc="upper left", framealpha=0.9)
    idx = np.flatnonzero(highlight & visible)
    if len(idx) > MAX_LABELS:
        score = np.abs(g.er[idx]) if g.er is not None else zy[idx]
        idx = idx[np.argsort(-score)[:MAX_LABELS]]
    idx = idx[np.argsort(-zy[idx])]
    place_labels(ax, zx[idx], zy[idx], [g.points[i].model for i in idx], curves)
    return int((~visible & ~chance).sum())


def average_points(groups: Sequence[Group], shifts: Sequence[str]) -> list[dict]:
    """Per (source, model) with a preferred top-1 point on every one of ``shifts``: full ImageNet
    top-1 (x) and the mean OOD top-1 over the shifts (y), with its tags and whether it is a
    baseline model on all of them. A setting of :data:`reports.vocabulary.STANDS_FOR` counts for
    its shift where the model has no figure of its own there (open_clip's names-head ObjectNet)."""
    from reports.vocabulary import STANDS_FOR

    per: dict[tuple[str, str], dict] = {}
    for g in groups:
        shift = g.shift if g.shift in shifts else STANDS_FOR.get(g.shift)
        if g.metric != "top1" or shift not in shifts:
            continue
        own = g.shift == shift
        for i, p in enumerate(g.points):
            if not p.preferred and g.x_setting != "imagenet":
                continue
            d = per.setdefault((p.source, p.model), {"ys": {}, "x": None, "tags": set(p.tags), "baseline": {}})
            if g.x_setting == "imagenet":
                d["x"] = p.x
            if p.preferred and (own or shift not in d["ys"]):
                d["ys"][shift] = p.y
                d["baseline"][shift] = bool(g.baseline[i])
    out = []
    for (source, model), d in sorted(per.items()):
        if d["x"] is not None and set(d["ys"]) == set(shifts):
            out.append({"source": source, "model": model, "x": d["x"], "y": float(np.mean([d["ys"][s] for s in shifts])),
                        "tags": tuple(sorted(d["tags"])), "baseline": all(d["baseline"].values())})
    return out


def average_scatter(ax, pts: list[dict], shifts: Sequence[str], transform: str, highlight: Sequence[bool], user_sources: set[str]) -> str:
    """Mean OOD top-1 over ``shifts`` vs ImageNet top-1, as the WiSE-FT and model-soups papers
    plot it, with a trend fitted on the baseline models' means; returns a caption line."""
    from reports.trend import MIN_BASELINE, Trend

    x = np.array([p["x"] for p in pts])
    y = np.array([p["y"] for p in pts])
    base = np.array([p["baseline"] for p in pts], dtype=bool)
    hl = np.asarray(highlight, dtype=bool)
    f = (lambda a: scales.forward(transform, scales.clip(a)[0])) if transform != "linear" else (lambda a: np.asarray(a, dtype=float))
    keep = x >= NEAR_CHANCE
    focus = (base | hl) & keep
    if not focus.any():
        focus = keep
    zx, zy = f(x), f(y)
    lo, hi = min(zx[focus].min(), zy[focus].min()), max(zx[focus].max(), zy[focus].max())
    pad = 0.05 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad
    vis = keep & (zx >= lo) & (zx <= hi) & (zy >= lo) & (zy <= hi)
    cats = [category(p["tags"], p["source"], b, user_sources) for p, b in zip(pts, base, strict=True)]
    for z, cat in enumerate(DRAW_ORDER):
        label, colour, size = CATEGORIES[cat]
        sel = np.array([c == cat for c in cats], dtype=bool) & vis
        if sel.any():
            ax.scatter(zx[sel], zy[sel], s=size * (2.2 if cat == "user" else 1), c=colour, lw=0, alpha=0.8,
                       label=f"{label} ({int(sel.sum())})", zorder=2 + 0.1 * z)
    ax.plot([lo, hi], [lo, hi], ls=":", c="0.3", lw=0.8, label="y = x")
    caption = f"mean top-1 over {len(shifts)} shifts ({', '.join(shifts)}); models with all of them: {len(pts)}"
    if base.sum() >= MIN_BASELINE:
        t = Trend(transform if transform != "linear" else "linear", samples=0).fit(x[base], y[base])
        grid = np.linspace(x[base].min(), x[base].max(), 100)
        ax.plot(f(grid), f(t.predict(grid)), c="#08306b", lw=1.2, label="trend of baseline means")
        caption += f"; trend slope {t.slope:.3f}, intercept {t.intercept:.3f} on {int(base.sum())} baseline models"
    else:
        caption += f"; no trend: {int(base.sum())} baseline models have all the shifts, {MIN_BASELINE} needed"
    idx = np.flatnonzero(hl & vis)[:MAX_LABELS]
    ticks = _ticks(transform, lo, hi)
    pos = [float(scales.forward(transform, t / 100)) if transform != "linear" else t / 100 for t in ticks]
    ax.set_xticks(pos, [_fmt(t) for t in ticks], fontsize=7)
    ax.set_yticks(pos, [_fmt(t) for t in ticks], fontsize=7)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.grid(True, lw=0.3, alpha=0.5)
    ax.set_xlabel(f"ImageNet top-1 accuracy (%, {transform} scale)", fontsize=8)
    ax.set_ylabel(f"average OOD top-1 over {len(shifts)} shifts (%, {transform} scale)", fontsize=8)
    ax.legend(fontsize=6, loc="upper left", framealpha=0.9)
    place_labels(ax, zx[idx], zy[idx], [pts[i]["model"] for i in idx])
    return caption
