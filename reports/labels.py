"""Model-name labels on a scatter that cover no marker, no other label and no legend.

Everything is measured in display pixels once the axes are final: each marker drawn on the axes
as a disc of its own size (scatter collections and marker lines), the curves named (WiSE-FT
sweeps) as their segments, the legend as its box, and each label as its text box with its padding. A label goes to
the free spot nearest its point, inside the axes; one that has no free spot beside its point goes
to the nearest free spot farther away, tied to its point by a leader line. Offsets are stored in
points, so the placement holds at any dpi the figure is saved with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.collections import PathCollection
from matplotlib.lines import Line2D
from matplotlib.transforms import Bbox

FONTSIZE = 6
#: The text box's padding, a fraction of the font size (matplotlib's ``square,pad=``).
PAD = 0.1
#: Free space kept around every marker, in points.
MARGIN = 1.0
#: Free space kept between labels (and around the legend), in points: two names never read as one.
LABEL_GAP = 3.0
#: A label whose box is farther than this from its marker's edge (points) gets a leader line.
NEAR = 4.0
#: Grid step of the candidate positions, in points.
STEP = 2.0
#: Room added to a label's measured size for the text's size at other dpis (a fraction).
TEXT_SLACK = 0.06


def _no_marker(marker) -> bool:
    return marker is None or (isinstance(marker, str) and marker in ("", " ", "None", "none"))


def marker_discs(ax, curves: Sequence[Line2D] = ()) -> np.ndarray:
    """[N, 3] (x, y, radius) in display pixels of every marker on ``ax`` (scatter collections and
    lines with markers), and of points every pixel along the lines ``curves``."""
    px = ax.figure.dpi / 72
    discs = [np.zeros((0, 3))]
    for c in ax.collections:
        if not isinstance(c, PathCollection) or not c.get_visible() or not len(c.get_offsets()):
            continue
        xy = c.get_offset_transform().transform(np.asarray(c.get_offsets(), dtype=float))
        sizes = c.get_sizes() if len(c.get_sizes()) else np.array([36.0])
        edge = c.get_linewidths() if len(c.get_linewidths()) else np.array([0.0])
        r = (np.sqrt(np.resize(sizes, len(xy))) + np.resize(edge, len(xy))) / 2 * px  # s is the marker's area, pt^2
        discs.append(np.column_stack([xy, r]))
    for line in ax.lines:
        if line.get_visible() and not _no_marker(line.get_marker()):
            xy = line.get_transform().transform(np.asarray(line.get_xydata(), dtype=float))
            discs.append(np.column_stack([xy, np.full(len(xy), (line.get_markersize() + line.get_markeredgewidth()) / 2 * px)]))
    for line in curves:
        xy = line.get_transform().transform(np.asarray(line.get_xydata(), dtype=float))
        half = line.get_linewidth() / 2 * px
        for a, b in zip(xy[:-1], xy[1:], strict=True):
            k = int(np.hypot(*(b - a))) + 2
            discs.append(np.column_stack([np.linspace(a, b, k), np.full(k, half)]))
    out = np.concatenate(discs)
    return out[np.isfinite(out).all(axis=1)]


class Occupancy:
    """Which pixels of the axes are taken, as a mask with its summed-area table, so that any
    number of candidate boxes are checked at once, each in constant time. A pixel is taken
    when any part of its square is within the margin of a marker or a label: conservative."""

    def __init__(self, frame: Bbox) -> None:
        self.x0, self.y0 = int(np.floor(frame.x0)), int(np.floor(frame.y0))
        self.mask = np.zeros((int(np.ceil(frame.y1)) - self.y0, int(np.ceil(frame.x1)) - self.x0), dtype=bool)
        self._table: np.ndarray | None = None

    def add_discs(self, discs: np.ndarray, margin: float) -> None:
        height, width = self.mask.shape
        for cx, cy, r in discs:
            r += margin
            i0, i1 = max(int(np.floor(cx - r)) - self.x0, 0), min(int(np.ceil(cx + r)) - self.x0, width)
            j0, j1 = max(int(np.floor(cy - r)) - self.y0, 0), min(int(np.ceil(cy + r)) - self.y0, height)
            if i0 >= i1 or j0 >= j1:
                continue
            left, bottom = np.arange(i0, i1) + self.x0, np.arange(j0, j1) + self.y0
            dx = np.maximum(np.maximum(left - cx, cx - (left + 1)), 0)
            dy = np.maximum(np.maximum(bottom - cy, cy - (bottom + 1)), 0)
            self.mask[j0:j1, i0:i1] |= dy[:, None] ** 2 + dx[None, :] ** 2 < r * r
        self._table = None

    def add_box(self, box: Bbox, margin: float) -> None:
        height, width = self.mask.shape
        i0, i1 = max(int(np.floor(box.x0 - margin)) - self.x0, 0), min(int(np.ceil(box.x1 + margin)) - self.x0, width)
        j0, j1 = max(int(np.floor(box.y0 - margin)) - self.y0, 0), min(int(np.ceil(box.y1 + margin)) - self.y0, height)
        if i0 < i1 and j0 < j1:
            self.mask[j0:j1, i0:i1] = True
        self._table = None

    def counts(self, x0: np.ndarray, y0: np.ndarray, w: float, h: float) -> np.ndarray:
        """[C] taken pixels under each box (x0, y0, w, h)."""
        if self._table is None:
            self._table = np.zeros((self.mask.shape[0] + 1, self.mask.shape[1] + 1), dtype=np.int64)
            self._table[1:, 1:] = self.mask.cumsum(axis=0).cumsum(axis=1)
        height, width = self.mask.shape
        c0 = np.clip(np.floor(x0).astype(int) - self.x0, 0, width)
        c1 = np.clip(np.ceil(x0 + w).astype(int) - self.x0, 0, width)
        r0 = np.clip(np.floor(y0).astype(int) - self.y0, 0, height)
        r1 = np.clip(np.ceil(y0 + h).astype(int) - self.y0, 0, height)
        t = self._table
        return t[r1, c1] - t[r0, c1] - t[r1, c0] + t[r0, c0]


def _label_box(ax, renderer, text: str, xy: tuple[float, float], style: dict) -> Bbox:
    """The box a label at offset 0 may take at any dpi, in this figure's pixels: its text box
    and padding, as wide and tall as the unhinted outline plus a margin (hinted raster text is
    some percent narrower or wider at one dpi than another; the PDF is unhinted)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    px = ax.figure.dpi / 72
    trial = ax.annotate(text, xy, xytext=(0, 0), **style)
    try:
        ext = trial.get_window_extent(renderer)
    finally:
        trial.remove()
    width, height, _ = text_to_path.get_text_width_height_descent(text, FontProperties(size=FONTSIZE), ismath=False)
    pad = PAD * FONTSIZE * px
    w = max(ext.width, width * px) * (1 + TEXT_SLACK) + 2 * pad
    h = max(ext.height, height * px) * (1 + TEXT_SLACK) + 2 * pad
    return Bbox.from_bounds(ext.x0 - pad, ext.y0 - pad, w, h)


def place_labels(ax, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str], curves: Sequence[Line2D] = ()) -> list:
    """Label the points (data coordinates) with ``texts``, in order, avoiding every marker, the
    lines ``curves``, the legend and the labels placed before; returns the annotations.

    Call it once the axes' limits, markers and legend are final."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    px = fig.dpi / 72
    frame = ax.get_window_extent(renderer)
    discs = marker_discs(ax, curves)
    margin, gap_px, step = MARGIN * px, LABEL_GAP * px, STEP * px
    markers, labels = Occupancy(frame), Occupancy(frame)
    markers.add_discs(discs, margin)
    legend = ax.get_legend()
    if legend is not None and legend.get_visible():
        labels.add_box(legend.get_window_extent(renderer), gap_px)
    gx = np.arange(frame.x0 + margin, frame.x1, step)
    gy = np.arange(frame.y0 + margin, frame.y1, step)
    style = {"fontsize": FONTSIZE, "ha": "left", "va": "bottom", "textcoords": "offset points", "zorder": 6,
             "bbox": {"boxstyle": f"square,pad={PAD}", "fc": "white", "ec": "none", "alpha": 0.75}}
    out = []
    for x, y, text in zip(xs, ys, texts, strict=True):
        point = ax.transData.transform((x, y))
        if not np.isfinite(point).all():
            continue
        box = _label_box(ax, renderer, text, (x, y), style)
        w, h = box.width, box.height
        x0, y0 = np.meshgrid(gx[gx + w <= frame.x1 - margin], gy[gy + h <= frame.y1 - margin])
        x0, y0 = x0.ravel(), y0.ravel()
        if not len(x0):
            continue  # the axes are smaller than the label
        near = np.hypot(discs[:, 0] - point[0], discs[:, 1] - point[1]) < 0.5 if len(discs) else np.zeros(0, dtype=bool)
        radius = float(discs[near, 2].max()) if near.any() else 0.0
        gap = np.hypot(np.maximum(np.maximum(x0 - point[0], point[0] - (x0 + w)), 0),
                       np.maximum(np.maximum(y0 - point[1], point[1] - (y0 + h)), 0))
        on_labels, on_markers = labels.counts(x0, y0, w, h), markers.counts(x0, y0, w, h)
        # free spots first, the nearest of them; at equal distance right of, then above the point.
        # Nowhere free: the spot covering the fewest labels, then the fewest markers.
        order = np.lexsort((point[1] - (y0 + h / 2), point[0] - (x0 + w / 2), np.round(gap / step), on_markers, on_labels))
        chosen = int(order[0])
        free = on_labels[chosen] == 0 and on_markers[chosen] == 0
        lead = not free or gap[chosen] - radius > NEAR * px
        arrow = {"arrowprops": {"arrowstyle": "-", "lw": 0.4, "color": "0.4", "shrinkA": 0, "shrinkB": radius / px}} if lead else {}
        offset = ((x0[chosen] - box.x0) / px, (y0[chosen] - box.y0) / px)
        out.append(ax.annotate(text, (x, y), xytext=offset, **style, **arrow))
        labels.add_box(Bbox.from_bounds(x0[chosen], y0[chosen], w, h), gap_px)
    return out
