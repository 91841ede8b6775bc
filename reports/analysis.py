"""Pair each OOD accuracy with its ID reference, fit trends per comparable group, score models.

A *group* is (shift, x setting, protocol): points are only ever fitted and tabled with points of
the same group, so ObjectNet through the ImageNet head never meets ObjectNet through a 113-way
name head, and ImageNet-R accuracies paired with ImageNet val on R's 200 classes never meet ones
paired with full ImageNet val.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from harness.api import Result
from harness.pairing import id_candidates
from harness.pairing import pair as pair_settings
from reports.rows import report_tags, source_of
from reports.trend import (
    DEFAULT_SAMPLES,
    DEFAULT_SEED,
    MIN_BASELINE,
    Trend,
    clopper_pearson,
    er_interval,
)
from reports.vocabulary import ID_SETTING, KNOWN_ID_SETTINGS, SHIFTS, protocol_key

#: imagenet-testbed's split point for ImageNet-A (ResNet-50's accuracy on val-on-imagenet-a-classes).
IMAGENET_A_SPLIT = 0.9186

#: Models a shift's images were adversarially selected against: near 0 by construction, so never
#: baseline models for that shift (imagenet-testbed leaves resnet50 out of its ImageNet-A plots).
#: ImageNet-A was filtered with torchvision's ResNet-50 weights (timm's ``resnet50.tv_in1k``,
#: absent from timm's ImageNet-A results).
FILTER_MODELS: dict[str, frozenset[tuple[str, str]]] = {
    "imagenet-a": frozenset({("imagenet-testbed", "resnet50"), ("timm", "resnet50.tv_in1k")}),
}


@dataclass(frozen=True)
class BaselineRule:
    """Which models the trend is fitted on: all of ``tags``, optionally limited by source,
    excluding names containing any of ``exclude``, and with ID accuracy at least ``min_x``."""

    tags: tuple[str, ...] = ("standard",)
    sources: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_x: float | None = None
    #: Sources whose every model is a baseline model (``--baseline-results``: models you ran).
    baseline_sources: tuple[str, ...] = ()

    def selects(self, p: Point) -> bool:
        if p.source in self.baseline_sources:
            return self.min_x is None or p.x >= self.min_x
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
        text = "; ".join(parts)
        if self.baseline_sources:
            text += f"; plus every model of {', '.join(self.baseline_sources)}"
        return text

    def to_dict(self) -> dict:
        return {"tags": list(self.tags), "sources": list(self.sources), "exclude": list(self.exclude), "min_x": self.min_x,
                "baseline_sources": list(self.baseline_sources)}


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
    metric: str = "top1"
    #: "n of N" where a run scored fewer images than the setting publishes (x, then y).
    incomplete: tuple[str, ...] = ()

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
    #: The two parts of the ER interval (:class:`reports.trend.ERInterval`).
    er_sampling_half: np.ndarray | None = None
    er_fit_low: np.ndarray | None = None
    er_fit_high: np.ndarray | None = None
    metric: str = "top1"
    clipped: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        x = np.array([p.x for p in self.points])
        y = np.array([p.y for p in self.points])
        nx = np.array([p.n_x or np.nan for p in self.points], dtype=float)
        ny = np.array([p.n_y or np.nan for p in self.points], dtype=float)
        return x, y, nx, ny

    def title(self) -> str:
        """Display names for a page or figure title: ``ImageNet-R vs ImageNet (R's classes)``;
        the protocol stays in :meth:`label`."""
        metric = "" if self.metric == "top1" else f" ({self.metric})"
        return f"{display_name(self.shift)} vs {display_name(self.x_setting)}{metric}"

    def label(self) -> str:
        proto = ", ".join(f"{k}={v}" for k, v in self.protocol)
        metric = "" if self.metric == "top1" else f" ({self.metric})"
        return f"{self.shift} vs {self.x_setting}{metric}" + (f" [{proto}]" if proto else "")


#: Display names of the known settings (titles only; files and JSON keep the setting names).
DISPLAY_NAMES = {
    "imagenet": "ImageNet", "imagenetv2": "ImageNetV2", "imagenetv2-threshold-0.7": "ImageNetV2 threshold-0.7",
    "imagenetv2-top-images": "ImageNetV2 top-images", "imagenet-sketch": "ImageNet-Sketch", "imagenet-r": "ImageNet-R",
    "imagenet-a": "ImageNet-A", "objectnet": "ObjectNet",
    "objectnet-names": "ObjectNet (names head)", "iwildcam": "iWildCam", "fmow": "FMoW", "camelyon17": "Camelyon17",
}


def display_name(setting: str) -> str:
    """``imagenet@imagenet-r`` -> ``ImageNet (ImageNet-R classes)``; ``iwildcam:id_test`` ->
    ``iWildCam id_test``; unknown names are kept."""
    head, at, tail = setting.partition("@")
    if at:
        return f"{display_name(head)} ({display_name(tail)} classes)"
    base, colon, split = setting.rpartition(":")
    if colon and base in DISPLAY_NAMES:
        return f"{DISPLAY_NAMES[base]} {split}"
    return DISPLAY_NAMES.get(setting, setting)


@dataclass(frozen=True)
class Dropped:
    """An input row the report does not place on any page, and why."""

    source: str
    model: str
    setting: str
    metric: str
    reason: str  # a code: unknown-shift, no-id-pair, no-ood-pair
    detail: str

    def to_dict(self) -> dict:
        return {"source": self.source, "model": self.model, "setting": self.setting, "metric": self.metric,
                "reason": self.reason, "detail": self.detail}


DROP_REASONS = {
    "unknown-shift": "no ID setting to pair with is known for this setting (name one with `shiftbench run --id-shift ID` "
                     "or `report --id-shift SETTING=ID`)",
    "no-id-pair": "the model has no result on the ID setting this one pairs with",
    "no-ood-pair": "an ID result no OOD result of the model pairs with",
    "duplicate": "another row of the same source, model, setting and metric was placed instead (the later one)",
}


def with_id_shifts(rows: Iterable[Result], id_shifts: Mapping[str, str]) -> list[Result]:
    """Rows with the user's ``--id-shift SETTING=ID`` pairings applied (a user ``folder`` or
    ``wds`` shift names the ID setting it is compared with)."""
    if not id_shifts:
        return list(rows)
    return [replace(r, id_setting=id_shifts[r.setting]) if r.setting in id_shifts else r for r in rows]


@dataclass(frozen=True)
class _Value:
    """One figure a fit uses: a row's top-1 or its main metric, under the row's own names."""

    row: Result
    source: str
    metric: str
    value: float
    n: int | None  # test-set size: top-1 only (other metrics get no binomial interval)
    id_setting: str | None

    @property
    def model(self) -> str:
        return self.row.model

    @property
    def setting(self) -> str:
        return self.row.setting

    def protocol_key(self) -> tuple[tuple[str, str], ...]:
        return protocol_key(self.row.setting, self.row.protocol, self.row.shift_version)

    def incomplete(self) -> tuple[str, ...]:
        """``"<setting>: n of N images"`` where the row was scored on fewer images than published."""
        r = self.row
        return (f"{r.setting}: {r.n} of {r.n_expected} images",) if r.n_expected and r.n < r.n_expected else ()


def values(res: Result) -> list[_Value]:
    """The figures of one row the fits use: top-1, and the main metric where it differs (iWildCam
    macro-F1, FMoW worst-region accuracy). Nothing is renamed; a row that names no ID setting
    takes its setting's known pairing (:data:`reports.vocabulary.KNOWN_ID_SETTINGS`)."""
    id_setting = res.id_setting or KNOWN_ID_SETTINGS.get(res.setting)
    return [_Value(res, source_of(res), m, float(res.metrics[m]), (res.n or None) if m == "top1" else None, id_setting)
            for m in dict.fromkeys(("top1", res.main_metric or "top1")) if m in res.metrics]


def same_weights(a: Result, b: Result) -> bool:
    """Whether two rows may be one model's: the same name is not enough where both rows record
    their weights (``provenance.model.weights_sha256``) and these differ (two runs that each
    call their own checkpoint ``resnet50``)."""
    sha_a, sha_b = (((r.provenance or {}).get("model") or {}).get("weights_sha256") for r in (a, b))
    return not (sha_a and sha_b and sha_a != sha_b)


def place(results: Iterable[Result], user_sources: Iterable[str] = ()) -> tuple[list[Point], list[Dropped]]:
    """Every OOD figure paired with its ID figure (:func:`harness.pairing.pair`), per source,
    model and metric, and every figure that could not be placed with its reason.

    A row from one of ``user_sources`` whose source lacks the ID row borrows it from the one
    other user source that has the same model on that ID setting (a ``folder`` shift run
    apart from the ImageNet run of the same models), and only where the two rows do not record
    different weights (:func:`same_weights`)."""
    rows = [v for res in results for v in values(res)]
    user = set(user_sources)
    by_model: dict[tuple[str, str, str], dict[str, _Value]] = {}
    duplicates: list[_Value] = []
    for r in rows:
        settings = by_model.setdefault((r.source, r.model, r.metric), {})
        if r.setting in settings:
            duplicates.append(settings[r.setting])
        settings[r.setting] = r
    points: list[Point] = []
    used: set[tuple[str, str, str, str]] = set()
    for (source, model, metric), settings in by_model.items():
        pool = dict(settings)
        if source in user:
            for r in settings.values():
                for c in id_candidates(r.id_setting) if r.id_setting else ():
                    if c in pool:
                        break
                    lenders = [o[c] for (s2, m2, k2), o in by_model.items()
                               if s2 != source and s2 in user and m2 == model and k2 == metric and c in o
                               and same_weights(r.row, o[c].row)]
                    if len(lenders) == 1:
                        pool[c] = lenders[0]
                        break
        for y, x, preferred in pair_settings(pool, lambda _s, r, src=source: r.id_setting if r.source == src else None):
            tags = tuple(sorted(set(report_tags(y.row)) | set(report_tags(x.row))))
            proto = tuple(sorted((*y.protocol_key(), *((f"id_{k}", v) for k, v in x.protocol_key()))))
            points.append(Point(source, model, tags, y.setting, x.setting, proto, x.value, y.value, x.n, y.n,
                                preferred, metric, x.incomplete() + y.incomplete()))
            used |= {(y.source, y.model, y.setting, metric), (x.source, x.model, x.setting, metric)}
    named = {r.id_setting for r in rows if r.id_setting} | {ID_SETTING}
    named |= {c for n in list(named) for c in id_candidates(n)}
    dropped = [Dropped(r.source, r.model, r.setting, r.metric, "duplicate", DROP_REASONS["duplicate"]) for r in duplicates]
    placed_rows = {id(r) for settings in by_model.values() for r in settings.values()}
    for r in rows:
        if id(r) not in placed_rows:
            continue  # a duplicate, listed above
        if (r.source, r.model, r.setting, r.metric) in used:
            continue
        if r.id_setting:
            reason, detail = "no-id-pair", f"no {r.metric} result of {r.model} on {' or '.join(id_candidates(r.id_setting))}"
        elif r.setting in named:
            reason, detail = "no-ood-pair", f"no OOD result of {r.model} names {r.setting} as its ID setting"
        else:
            reason, detail = "unknown-shift", f"{r.setting}: {DROP_REASONS['unknown-shift']}"
        dropped.append(Dropped(r.source, r.model, r.setting, r.metric, reason, detail))
    return points, sorted(dropped, key=lambda d: (d.source, d.model, d.setting, d.metric))


def pair(rows: Iterable[Result], shifts: Sequence[str] | None = None) -> list[Point]:
    """Points per (source, model, shift, metric): y the shift, x each ID setting the source has
    for the model (the one the row names, then the full ID set). ``preferred`` marks the one a
    model is scored by. ``shifts`` limits the OOD settings (None: all)."""
    points = place(rows)[0]
    return points if shifts is None else [p for p in points if p.shift in set(shifts)]


def unpaired(rows: Iterable[Result], shifts: Sequence[str] | None = None) -> list[str]:
    """``source:model on shift`` for OOD results with no ID result to pair with (not plotted)."""
    return [f"{d.source}:{d.model} on {d.setting}" for d in place(rows)[1]
            if d.reason == "no-id-pair" and (shifts is None or d.setting in shifts)]


WILDS_SHIFTS = ("iwildcam", "fmow", "camelyon17")


def shift_order(shifts: Iterable[str]) -> list[str]:
    """Page order by family: the published ImageNet shifts, other ImageNet shifts (ImageNetV2
    variants, plugins), WILDS, then user shifts, each by name."""
    known = list(SHIFTS)

    def key(s: str) -> tuple:
        if s in known:
            return (0, known.index(s), s)
        if s.startswith("imagenet"):
            return (1, 0, s)
        if s in WILDS_SHIFTS:
            return (2, WILDS_SHIFTS.index(s), s)
        return (3, 0, s)

    return sorted(set(shifts), key=key)


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
    rows: Iterable[Result],
    rule: BaselineRule = BaselineRule(),
    transforms: Sequence[str] = ("logit", "probit"),
    primary: str = "logit",
    samples: int = DEFAULT_SAMPLES,
    seed: int = DEFAULT_SEED,
    split_imagenet_a: bool = False,
    shifts: Sequence[str] | None = None,
    level: float = 0.95,
    points: Sequence[Point] | None = None,
) -> list[Group]:
    """Fit every group under every transform; effective robustness under ``primary``.

    A group with fewer than ``MIN_BASELINE`` baseline models is kept unfitted with its reason
    (its models are reported with accuracies and no effective robustness)."""
    if primary not in transforms:
        transforms = (primary, *transforms)
    buckets: dict[tuple, list[Point]] = {}
    for p in (pair(rows, shifts) if points is None else points):
        buckets.setdefault((p.shift, p.x_setting, p.protocol, p.metric), []).append(p)
    order = {s: i for i, s in enumerate(shift_order(k[0] for k in buckets))}
    groups = []
    for key in sorted(buckets, key=lambda k: (order[k[0]], k[3] != "top1", k[3], k[1] == ID_SETTING, k[1], k[2])):
        pts = sorted(buckets[key], key=lambda p: (p.source, p.model))
        filtered = FILTER_MODELS.get(key[0], frozenset())
        base = np.array([rule.selects(p) and (p.source, p.model) not in filtered for p in pts], dtype=bool)
        g = Group(key[0], key[1], key[2], pts, base, metric=key[3])
        g.excluded = [p.name for p in pts if (p.source, p.model) in filtered and rule.selects(p)]
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
            iv = er_interval(trend, x, y, nx, ny, level)
            g.er, g.er_low, g.er_high = iv.er, iv.low, iv.high
            g.er_sampling_half, g.er_fit_low, g.er_fit_high = iv.sampling_half, iv.fit_low, iv.fit_high
            g.clipped = _clipped(trend, g, x, y, nx, ny)
        groups.append(g)
    return groups


def highlight_mask(points: Sequence[Point], patterns: Sequence[str]) -> np.ndarray:
    """Which points match any pattern: ``tag:NAME``, ``source:NAME`` or a glob on the model name
    (case-insensitive). A pattern equal to a name matches it even where the name reads as a glob
    (the engine's ``wiseft:ARCH[zs ..,ft ..](alpha=0.5)``: ``[...]`` is a character class)."""
    out = np.zeros(len(points), dtype=bool)
    for pat in patterns:
        if pat.startswith("tag:"):
            out |= np.array([pat[4:] in p.tags for p in points], dtype=bool)
        elif pat.startswith("source:"):
            out |= np.array([p.source == pat[7:] or fnmatch.fnmatch(p.source, pat[7:]) for p in points], dtype=bool)
        else:
            low = pat.lower()
            out |= np.array([p.model.lower() == low or fnmatch.fnmatch(p.model.lower(), low) for p in points], dtype=bool)
    return out


def point_intervals(g: Group, level: float = 0.95) -> tuple[np.ndarray, ...]:
    """Clopper-Pearson (x_lo, x_hi, y_lo, y_hi); NaN where the test-set size is unknown."""
    x, y, nx, ny = g.arrays()
    xl, xh = clopper_pearson(x, np.nan_to_num(nx, nan=1.0), level)
    yl, yh = clopper_pearson(y, np.nan_to_num(ny, nan=1.0), level)
    unknown_x, unknown_y = np.isnan(nx), np.isnan(ny)
    return (np.where(unknown_x, np.nan, xl), np.where(unknown_x, np.nan, xh),
            np.where(unknown_y, np.nan, yl), np.where(unknown_y, np.nan, yh))
