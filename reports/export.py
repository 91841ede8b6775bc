"""Standalone figures and tables for a paper (``--figures-dir``): each trend plot and the
average-over-shifts plot as PDF (vector) and PNG, and the summary table as CSV and LaTeX.

File names are built from setting names and a hash of the protocol, so two groups that differ
only in protocol never overwrite each other."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

from reports.analysis import Group, highlight_mask
from reports.summary_table import build_table, to_csv, to_latex
from reports.vocabulary import AVERAGE_SHIFTS


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9@._=-]", "_", name)


def figure_stem(g: Group) -> str:
    """``imagenet-r__vs__imagenet@imagenet-r__top1__<hash>``: unique per group. The hash covers
    the protocol, and the names too where a character had to be replaced, so ``folder:my pets``
    and ``folder:my_pets`` never write one file."""
    names = (g.shift, g.x_setting, g.metric)
    key = repr(g.protocol) if all(_safe(n) == n for n in names) else repr((names, g.protocol))
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    return _safe(f"{g.shift}__vs__{g.x_setting}__{g.metric}__{digest}")


def _save(fig, folder: Path, stem: str) -> list[str]:
    out = []
    for ext in ("pdf", "png"):
        path = folder / f"{stem}.{ext}"
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format=ext, dpi=200 if ext == "png" else None, bbox_inches="tight")
        tmp.replace(path)
        out.append(str(path))
    return out


#: The names :func:`write_figures` writes: a group's plot (``figure_stem`` plus extension), the
#: average plot and the summary table.
OWN_NAME = re.compile(r"^(?:[A-Za-z0-9@._=-]+__vs__[A-Za-z0-9@._=-]+__[A-Za-z0-9@._=-]+__[0-9a-f]{8}|average-over-shifts)\.(?:pdf|png)$")


def stale_figures(folder: Path, written: Sequence[str]) -> list[Path]:
    """Plots an earlier report wrote into ``folder`` that this one did not (a group that is gone):
    left there, they would pass for this report's. Files of any other name are never touched."""
    keep = {Path(w).name for w in written}
    return sorted(p for p in folder.iterdir() if p.is_file() and OWN_NAME.match(p.name) and p.name not in keep)


def write_figures(folder: Path, groups: Sequence[Group], highlight: Sequence[str], user_sources: set[str], transform: str) -> list[str]:
    """Write every figure and table, then remove the plots of an earlier report this one does not
    have (:func:`stale_figures`); returns the paths written."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from reports.figures import average_points, average_scatter, near_chance, scatter

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    hl = {i: highlight_mask(g.points, highlight) for i, g in enumerate(groups)}
    for i, g in enumerate(groups):
        if not any(p.preferred for p in g.points):
            continue
        fig, ax = plt.subplots(figsize=(5.2, 5.2))
        scatter(ax, g, transform, hl[i], user_sources)
        ax.set_title(g.title(), fontsize=9, wrap=True)
        chance = [p.model for p, c in zip(g.points, near_chance(g), strict=True) if c]
        if chance:
            fig.text(0.01, 0.005, f"Near chance (ID < 5%), not drawn: {', '.join(chance[:6])}" + (" ..." if len(chance) > 6 else ""),
                     fontsize=5, va="bottom")
        written += _save(fig, folder, figure_stem(g))
        plt.close(fig)
    pts = average_points(groups, AVERAGE_SHIFTS)
    if pts:
        from reports.analysis import Point

        marks = highlight_mask([Point(p["source"], p["model"], p["tags"], "", "", (), p["x"], p["y"], None, None) for p in pts], highlight)
        fig, ax = plt.subplots(figsize=(5.2, 5.2))
        caption = average_scatter(ax, pts, AVERAGE_SHIFTS, transform, marks, user_sources)
        ax.set_title("Average over distribution shifts", fontsize=9)
        fig.text(0.01, 0.005, caption, fontsize=5, va="bottom", wrap=True)
        written += _save(fig, folder, "average-over-shifts")
        plt.close(fig)
    table = build_table(groups, hl, user_sources)
    for name, text in (("summary.csv", to_csv(table)), ("summary.tex", to_latex(table))):
        path = folder / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
        written.append(str(path))
    for path in stale_figures(folder, written):
        path.unlink()
    return written
