"""Accepted submissions placed against the baseline trend and ranked, one table per protocol.

Scores come from the validator's recomputation, never from the submitted numbers. Intervals are
95% normal approximations of the test sets' sampling error for average OOD accuracy,
sum_s p_s(1-p_s)/n_s / k^2. Effective robustness and its interval come from
:func:`reports.trend.er_interval`, the report's own: the entry's sampling error (the OOD term
plus the ID term through the trend's slope) and the trend's bootstrap spread. Shifts are treated
as independent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.api import Result, ShiftSpec, id_setting_of
from harness.pairing import pair
from reports.leaderboard.trend import ShiftTrend, baseline_trends
from reports.submission_validate import Validation, protocol_key
from reports.trend import er_interval

Z95 = 1.959963984540054


@dataclass(frozen=True)
class ShiftPoint:
    shift: str
    id_setting: str
    x: float  # ID top-1 on the shift's classes
    n_x: int
    y: float  # OOD top-1
    n_y: int
    er: float | None = None
    er_half: float | None = None


@dataclass
class Entry:
    id: str  # file-name-safe, unique: names the entry's page
    source: str  # the bundle's file name
    model: str
    card: Mapping[str, Any]
    protocol: str
    id_scores: dict[str, tuple[float, int]]  # ID shift -> (top-1, n)
    points: dict[str, ShiftPoint]
    avg_ood: float = math.nan
    avg_ood_half: float = math.nan
    avg_er: float | None = None
    avg_er_half: float | None = None
    rank_er: int | None = None
    rank_ood: int = 0
    rank_er_range: tuple[int, int] | None = None  # ranks the 95% intervals allow
    rank_ood_range: tuple[int, int] = (0, 0)
    published: str | None = None  # "reproduces" / "differs": the release's published figures
    labels_checked: bool = True  # False: listed with --trust-labels, labels never checked against the data

    def published_mark(self) -> str:
        """'reproduces published' when every recomputed score is within tolerance of the
        published figures of the release the submission is; '' when it is no known release."""
        return {"reproduces": "reproduces published", "differs": "differs from published"}.get(self.published or "", "")

    def rank_text(self, which: str) -> str:
        """'2 (1-3)': the rank and the range of ranks its interval allows; '–' when unranked."""
        rank, span = (
            (self.rank_er, self.rank_er_range)
            if which == "er"
            else (self.rank_ood, self.rank_ood_range)
        )
        if rank is None or span is None:
            return "–"
        return str(rank) if span[0] == span[1] else f"{rank} ({span[0]}–{span[1]})"


UNVERIFIED_MARK = " [labels unverified]"


def shown_name(e: Entry) -> str:
    """The card's name as the tables show it: marked when its labels were never checked."""
    return str(e.card["name"]) + ("" if e.labels_checked else UNVERIFIED_MARK)


def labels_note(tables: Sequence[Table]) -> str:
    """Which entries' keys and labels were checked against the dataset (said on every output)."""
    entries = [e for t in tables for e in t.entries]
    unchecked = [str(e.card["name"]) for e in entries if not e.labels_checked]
    if not entries:
        return ""
    if not unchecked:
        return "Labels: every entry's keys and labels were checked against the dataset."
    checked = [str(e.card["name"]) for e in entries if e.labels_checked]
    return (
        "Labels NOT checked against the dataset (listed with --trust-labels; their accuracies rest on the "
        f"submitters' own labels): {', '.join(unchecked)}. Checked: {', '.join(checked) or 'none'}."
    )


@dataclass
class Table:
    protocol: str
    label: str
    ood_shifts: tuple[str, ...]
    id_shifts: tuple[str, ...]
    trends: dict[str, ShiftTrend]
    entries: list[Entry] = field(default_factory=list)

    @property
    def er_shifts(self) -> tuple[str, ...]:
        """The shifts with a fitted trend: the average effective robustness is over these."""
        return tuple(s for s in self.ood_shifts if self.trends[s].trend is not None)

    def trend_note(self) -> str:
        """Plain-text warning about shifts without a trend ('' when every shift has one)."""
        missing = [
            f"{s} ({self.trends[s].reason})"
            for s in self.ood_shifts
            if self.trends[s].trend is None
        ]
        if not missing:
            return ""
        if self.er_shifts:
            return f"No baseline trend for {', '.join(missing)}: average effective robustness is over {', '.join(self.er_shifts)} only."
        return f"No baseline trend for {', '.join(missing)}: effective robustness is not computed and entries are ranked by average OOD top-1."


def setting_pairs(required: Sequence[str], specs: Mapping[str, ShiftSpec]) -> dict[str, str]:
    """OOD shift -> the ID setting on its classes (x axis), for required shifts with an ID reference."""
    pairs = {}
    for name in required:
        ref = id_setting_of(specs[name])
        if ref:
            pairs[name] = ref
    return pairs


def make_entry(
    entry_id: str, v: Validation, pairs: Mapping[str, str], id_shifts: Sequence[str], protocol: str
) -> Entry:
    points = {}
    scores = {s: (s, v.scores[s]) for s in (*pairs, *pairs.values()) if s in v.scores}
    for (shift, sy), (id_setting, sx), _ in pair(scores, lambda s, _r: pairs.get(s), fallback=False):
        points[shift] = ShiftPoint(shift, id_setting, sx.top1, sx.n, sy.top1, sy.n)
    id_scores = {s: (v.scores[s].top1, v.scores[s].n) for s in id_shifts}
    verdicts = {c["verdict"] for c in v.published.values()}
    published = ("differs" if "differs" in verdicts else "reproduces") if verdicts else None
    card = dict(v.manifest["card"])
    if v.manifest.get("incomplete"):  # accepted only with --allow-incomplete: say so wherever it is named
        card["name"] = f"{card.get('name', v.manifest['model'])} [trial: incomplete data]"
    return Entry(
        entry_id, v.path.name, v.manifest["model"], card, protocol, id_scores, points,
        published=published, labels_checked=v.labels_checked,
    )


def place(entry: Entry, trends: Mapping[str, ShiftTrend]) -> None:
    """Fill effective robustness per shift and the averages with their intervals.

    Average OOD accuracy is over every OOD shift; average effective robustness over the shifts
    with a fitted trend. An ER interval adds, in quadrature, the sampling error of the entry's
    OOD and ID accuracies (the latter through the trend's slope) and the trend fit's bootstrap
    spread; shifts are treated as independent."""
    pts = list(entry.points.values())
    k = len(pts)
    entry.avg_ood = sum(p.y for p in pts) / k
    entry.avg_ood_half = Z95 * math.sqrt(sum(p.y * (1 - p.y) / p.n_y for p in pts)) / k
    placed = []
    for p in pts:
        t = trends[p.shift]
        if t.trend is None:
            continue
        iv = er_interval(t.trend, np.array([p.x]), np.array([p.y]), np.array([p.n_x]), np.array([p.n_y]))
        er, half = float(iv.er[0]), float(iv.high[0] - iv.low[0]) / 2
        entry.points[p.shift] = ShiftPoint(p.shift, p.id_setting, p.x, p.n_x, p.y, p.n_y, er, half)
        placed.append((er, (half / Z95) ** 2))
    if placed:
        entry.avg_er = sum(er for er, _ in placed) / len(placed)
        entry.avg_er_half = Z95 * math.sqrt(sum(var for _, var in placed)) / len(placed)


def competition_ranks(values: Sequence[float]) -> list[int]:
    """1-based ranks, higher is better, equal values share a rank (1, 2, 2, 4)."""
    return [1 + sum(1 for w in values if w > v) for v in values]


def rank_ranges(values: Sequence[float], halves: Sequence[float]) -> list[tuple[int, int]]:
    """For each value with interval [v - h, v + h]: (best, worst) rank it could have, i.e. one
    plus the entries whose interval lies wholly above its own, and the entries whose interval
    reaches its lower end (itself included)."""
    lo = [v - h for v, h in zip(values, halves, strict=True)]
    hi = [v + h for v, h in zip(values, halves, strict=True)]
    return [
        (1 + sum(1 for lj in lo if lj > hi[i]), sum(1 for hj in hi if hj >= lo[i]))
        for i in range(len(values))
    ]


def _ranked(values: Sequence[float], halves: Sequence[float]) -> list[tuple[int, tuple[int, int]]]:
    return list(zip(competition_ranks(values), rank_ranges(values, halves), strict=True))


def rank(entries: list[Entry]) -> list[Entry]:
    """Sets both ranks with their ranges and orders by effective robustness (when known), then
    OOD accuracy."""
    for e, (r, span) in zip(
        entries,
        _ranked([e.avg_ood for e in entries], [e.avg_ood_half for e in entries]),
        strict=True,
    ):
        e.rank_ood, e.rank_ood_range = r, span
    with_er = [e for e in entries if e.avg_er is not None]
    for e, (r, span) in zip(
        with_er, _ranked([e.avg_er for e in with_er], [e.avg_er_half for e in with_er]), strict=True
    ):
        e.rank_er, e.rank_er_range = r, span
    return sorted(entries, key=lambda e: (e.rank_er or len(entries) + 1, e.rank_ood, e.model, e.id))


def build_tables(
    accepted: Sequence[tuple[str, Validation]],
    required: Sequence[str],
    specs: Mapping[str, ShiftSpec],
    baseline: list[Result] | None,
) -> list[Table]:
    """Group accepted validations by protocol, fit each protocol's trends, place and rank.
    ``baseline`` None places entries against the bundled testbed."""
    pairs = setting_pairs(required, specs)
    id_shifts = tuple(s for s in required if not specs[s].id_reference)
    groups: dict[str, list[tuple[str, Validation]]] = {}
    labels: dict[str, str] = {}
    shifts_of: dict[str, Mapping[str, Any]] = {}
    for entry_id, v in accepted:
        digest, label = protocol_key(v.manifest, required)
        groups.setdefault(digest, []).append((entry_id, v))
        labels[digest] = label
        shifts_of[digest] = v.manifest["shifts"]
    tables = []
    for digest, members in sorted(groups.items(), key=lambda kv: labels[kv[0]]):
        trends = baseline_trends(pairs, shifts_of[digest], baseline)
        entries = [make_entry(eid, v, pairs, id_shifts, digest) for eid, v in members]
        for e in entries:
            place(e, trends)
        tables.append(Table(digest, labels[digest], tuple(pairs), id_shifts, trends, rank(entries)))
    return tables
