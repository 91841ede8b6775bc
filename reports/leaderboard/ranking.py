"""Accepted submissions placed against the baseline trend and ranked, one table per protocol.

Scores come from the validator's recomputation, never from the submitted numbers. Intervals are
95% normal approximations of the test sets' sampling error: for average OOD accuracy
sum_s p_s(1-p_s)/n_s / k^2; for effective robustness y - f(x) the OOD term plus the ID term
through the trend's slope, f'(x)^2 x(1-x)/n_x. They do not include the trend fit's own
uncertainty, and shifts are treated as independent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.api import Result, ShiftSpec, id_view_setting
from reports.leaderboard.trend import LogitTrend, baseline_trends
from reports.submission_validate import Validation, protocol_key

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


@dataclass
class Table:
    protocol: str
    label: str
    ood_shifts: tuple[str, ...]
    id_shifts: tuple[str, ...]
    trends: dict[str, LogitTrend | None]
    entries: list[Entry] = field(default_factory=list)

    @property
    def has_er(self) -> bool:
        return any(e.avg_er is not None for e in self.entries)


def setting_pairs(required: Sequence[str], specs: Mapping[str, ShiftSpec]) -> dict[str, str]:
    """OOD shift -> the ID setting on its classes (x axis), for required shifts with an ID reference."""
    pairs = {}
    for name in required:
        spec = specs[name]
        if spec.id_reference:
            pairs[name] = (
                id_view_setting(spec.id_reference, name)
                if spec.class_map is not None
                else spec.id_reference
            )
    return pairs


def make_entry(
    entry_id: str, v: Validation, pairs: Mapping[str, str], id_shifts: Sequence[str], protocol: str
) -> Entry:
    points = {}
    for shift, id_setting in pairs.items():
        sx, sy = v.scores[id_setting], v.scores[shift]
        points[shift] = ShiftPoint(shift, id_setting, sx.top1, sx.n, sy.top1, sy.n)
    id_scores = {s: (v.scores[s].top1, v.scores[s].n) for s in id_shifts}
    return Entry(
        entry_id, v.path.name, v.manifest["model"], v.manifest["card"], protocol, id_scores, points
    )


def place(entry: Entry, trends: Mapping[str, LogitTrend | None]) -> None:
    """Fill effective robustness per shift and the averages with their intervals."""
    pts = list(entry.points.values())
    k = len(pts)
    entry.avg_ood = sum(p.y for p in pts) / k
    entry.avg_ood_half = Z95 * math.sqrt(sum(p.y * (1 - p.y) / p.n_y for p in pts)) / k
    placed = []
    for p in pts:
        trend = trends.get(p.shift)
        if trend is None:
            continue
        var = p.y * (1 - p.y) / p.n_y + trend.slope_at(p.x) ** 2 * p.x * (1 - p.x) / p.n_x
        q = ShiftPoint(
            p.shift,
            p.id_setting,
            p.x,
            p.n_x,
            p.y,
            p.n_y,
            trend.effective_robustness(p.x, p.y),
            Z95 * math.sqrt(var),
        )
        entry.points[p.shift] = q
        placed.append((q, var))
    if len(placed) == k:
        entry.avg_er = sum(q.er for q, _ in placed) / k
        entry.avg_er_half = Z95 * math.sqrt(sum(var for _, var in placed)) / k


def competition_ranks(values: Sequence[float]) -> list[int]:
    """1-based ranks, higher is better, equal values share a rank (1, 2, 2, 4)."""
    return [1 + sum(1 for w in values if w > v) for v in values]


def rank(entries: list[Entry]) -> list[Entry]:
    """Sets both ranks and orders by effective robustness (when known), then OOD accuracy."""
    for e, r in zip(entries, competition_ranks([e.avg_ood for e in entries]), strict=True):
        e.rank_ood = r
    with_er = [e for e in entries if e.avg_er is not None]
    for e, r in zip(with_er, competition_ranks([e.avg_er for e in with_er]), strict=True):
        e.rank_er = r
    return sorted(entries, key=lambda e: (e.rank_er or len(entries) + 1, e.rank_ood, e.model, e.id))


def build_tables(
    accepted: Sequence[tuple[str, Validation]],
    required: Sequence[str],
    specs: Mapping[str, ShiftSpec],
    baseline: Sequence[Result],
) -> list[Table]:
    """Group accepted validations by protocol, fit each protocol's trends, place and rank."""
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
        rows = [r for r in baseline if _same_protocol(r, shifts_of[digest])]
        trends = baseline_trends(rows, pairs)
        entries = [make_entry(eid, v, pairs, id_shifts, digest) for eid, v in members]
        for e in entries:
            place(e, trends)
        tables.append(Table(digest, labels[digest], tuple(pairs), id_shifts, trends, rank(entries)))
    return tables


def _same_protocol(row: Result, shifts: Mapping[str, Any]) -> bool:
    entry = shifts.get(row.shift)
    return (
        entry is not None
        and row.shift_version == entry["version"]
        and dict(row.protocol) == dict(entry["protocol"])
    )
