"""Pair each OOD accuracy with its ID reference, fit trends per comparable group, score models.

A *group* is (shift, x setting, protocol): points are only ever fitted and tabled with points of
the same group, so ObjectNet through the ImageNet head never meets ObjectNet through a 113-way
name head, and ImageNet-R accuracies paired with ImageNet val on R's 200 classes never meet ones
paired with full ImageNet val.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from reports.table import ID_SETTING, SHIFTS, Row
from reports.trend import DEFAULT_SAMPLES, DEFAULT_SEED, MIN_BASELINE, Trend, clopper_pearson

#: imagenet-testbed's split point for ImageNet-A (ResNet-50's accuracy on val-on-imagenet-a-classes).
IMAGENET_A_SPLIT = 0.9186


@dataclass(frozen=True)
class BaselineRule:
    """Which models the trend is fitted on: all of ``tags``, optionally limited by source,
    excluding names containing any of ``exclude``, and with ID accuracy at least ``min_x``."""

    tags: tuple[str, ...] = ("standard",)
    sources: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_x: float | None = None

    def selects(self, p: Point) -> bool:
        return (
            all(t in p.tags for t in self.tags)
            and (not self.sources or p.source in self.sources)
            and not any(s in p.model for s in self.exclude)
            and (self.min_x is None or p.x >= self.min_x)
        )

    def describe(self) -> str:
        parts = [f"tags {' & '.join(self.tags)}" if self.tags else "all models"]
        if self.sources:
            parts.append(f"sources {', '.join(self.sources)}")
        if self.exclude:
            parts.append(f"names without {', '.join(self.exclude)}")
        if self.min_x is not None:
            parts.append(f"ID accuracy >= {100 * self.min_x:g}%")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {"tags": list(self.tags), "sources": list(self.sources), "exclude": list(self.exclude), "min_x": self.min_x}


@dataclass(frozen=True)
class Point:
    source: str
    model: str
    tags: tuple[str, ...]
    shift: str
    x_setting: str
    protocol: tuple[tuple[str, str], ...]
    x: float
    y: float
    n_x: int | None
    n_y: int | None
    preferred: bool = True

    @property
    def name(self) -> str:
        """Unique across sources: ``source:model``."""
        return f"{self.source}:{self.model}"


@dataclass
class Group:
    """One comparable set of points with its fits (None where it could not be fitted)."""

    shift: str
    x_setting: str
    protocol: tuple[tuple[str, str], ...]
    points: list[Point]
    baseline: np.ndarray
    fits: dict[str, Trend | None] = field(default_factory=dict)
    reason: str | None = None
    er: np.ndarray | None = None
    er_low: np.ndarray | None = None
    er_high: np.ndarray | None = None
    clipped: list[str] = field(default_factory=list)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        x = np.array([p.x for p in self.points])
        y = np.array([p.y for p in self.points])
        nx = np.array([p.n_x or np.nan for p in self.points], dtype=float)
        ny = np.array([p.n_y or np.nan for p in self.points], dtype=float)
        return x, y, nx, ny

    def label(self) -> str:
        proto = ", ".join(f"{k}={v}" for k, v in self.protocol)
        return f"{self.shift} vs {self.x_setting}" + (f" [{proto}]" if proto else "")


def pair(rows: Iterable[Row], shifts: Sequence[str] = tuple(SHIFTS)) -> list[Point]:
    """Points per (source, model, shift): y the shift, x each ID reference the source has for the
    model: the same-class ID view and full ImageNet val. ``preferred`` marks the one a model is
    scored by: the same-class view when present, else full val."""
    by_model: dict[tuple[str, str], dict[str, Row]] = {}
    for r in rows:
        by_model.setdefault((r.source, r.model), {})[r.setting] = r
    points = []
    for (source, model), settings in by_model.items():
        for shift in shifts:
            y = settings.get(shift)
            if y is None:
                continue
            view = SHIFTS.get(shift)
            refs = [settings[s] for s in (view, ID_SETTING) if s in settings]
            for i, x in enumerate(refs):
                tags = tuple(sorted(set(y.tags) | set(x.tags)))
                proto = tuple(sorted(set(y.protocol_key()) | set(x.protocol_key())))
                points.append(Point(source, model, tags, shift, x.setting, proto, x.accuracy, y.accuracy, x.n, y.n, i == 0))
    return points


def _clipped(trend: Trend, g: Group, x: np.ndarray, y: np.ndarray, nx: np.ndarray, ny: np.ndarray) -> list[str]:
    from reports.scales import clip

    if trend.transform == "linear":
        return []
    cx, cy = clip(x, nx)[1], clip(y, ny)[1]
    return [
        f"{p.name} ({'x' if a else ''}{'y' if b else ''}={p.x if a else p.y:.4g})"
        for p, a, b in zip(g.points, cx, cy, strict=True)
        if a or b
    ]


def analyse(
    rows: Iterable[Row],
    rule: BaselineRule = BaselineRule(),
    transforms: Sequence[str] = ("logit", "probit"),
    primary: str = "logit",
    samples: int = DEFAULT_SAMPLES,
    seed: int = DEFAULT_SEED,
    split_imagenet_a: bool = False,
    shifts: Sequence[str] = tuple(SHIFTS),
    level: float = 0.95,
) -> list[Group]:
    """Fit every group under every transform; effective robustness under ``primary``.

    A group with fewer than ``MIN_BASELINE`` baseline models is kept unfitted with its reason
    (its models are reported with accuracies and no effective robustness)."""
    if primary not in transforms:
        transforms = (primary, *transforms)
    buckets: dict[tuple, list[Point]] = {}
    for p in pair(rows, shifts):
        buckets.setdefault((p.shift, p.x_setting, p.protocol), []).append(p)
    order = {s: i for i, s in enumerate(shifts)}
    groups = []
    for key in sorted(buckets, key=lambda k: (order[k[0]], k[1] == ID_SETTING, k[1], k[2])):
        pts = sorted(buckets[key], key=lambda p: (p.source, p.model))
        base = np.array([rule.selects(p) for p in pts])
        g = Group(key[0], key[1], key[2], pts, base)
        x, y, nx, ny = g.arrays()
        nb = int(base.sum())
        split = IMAGENET_A_SPLIT if split_imagenet_a and g.shift == "imagenet-a" and g.x_setting != ID_SETTING else None
        if nb < MIN_BASELINE:
            g.reason = f"{nb} baseline models ({rule.describe()}) under this protocol; at least {MIN_BASELINE} needed"
            g.fits = {t: None for t in transforms}
        else:
            try:
                for t in transforms:
                    g.fits[t] = Trend(t, samples, seed, split).fit(x[base], y[base], nx[base], ny[base])
            except ValueError as exc:
                g.reason = str(exc)
                g.fits = {t: None for t in transforms}
        trend = g.fits.get(primary)
        if trend is not None:
            g.er = trend.effective_robustness(x, y, nx)
            g.er_low, g.er_high = trend.er_interval(x, y, nx, level) if samples else (g.er, g.er)
            g.clipped = _clipped(trend, g, x, y, nx, ny)
        groups.append(g)
    return groups


def highlight_mask(points: Sequence[Point], patterns: Sequence[str]) -> np.ndarray:
    """Which points match any pattern: ``tag:NAME``, ``source:NAME`` or a glob on the model name
    (case-insensitive)."""
    out = np.zeros(len(points), dtype=bool)
    for pat in patterns:
        if pat.startswith("tag:"):
            out |= np.array([pat[4:] in p.tags for p in points], dtype=bool)
        elif pat.startswith("source:"):
            out |= np.array([fnmatch.fnmatch(p.source, pat[7:]) for p in points], dtype=bool)
        else:
            out |= np.array([fnmatch.fnmatch(p.model.lower(), pat.lower()) for p in points], dtype=bool)
    return out


def point_intervals(g: Group, level: float = 0.95) -> tuple[np.ndarray, ...]:
    """Clopper-Pearson (x_lo, x_hi, y_lo, y_hi); NaN where the test-set size is unknown."""
    x, y, nx, ny = g.arrays()
    xl, xh = clopper_pearson(x, np.nan_to_num(nx, nan=1.0), level)
    yl, yh = clopper_pearson(y, np.nan_to_num(ny, nan=1.0), level)
    unknown_x, unknown_y = np.isnan(nx), np.isnan(ny)
    return (np.where(unknown_x, np.nan, xl), np.where(unknown_x, np.nan, xh),
            np.where(unknown_y, np.nan, yl), np.where(unknown_y, np.nan, yh))
