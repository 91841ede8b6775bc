"""The baseline each protocol table's entries are placed against, and its trend.

The fit itself is the report layer's (:class:`reports.trend.Trend`, logit-linear least squares
with a seeded bootstrap over baseline models). This module only chooses the baseline points:

- given ``--baseline`` results.jsonl files: every model in them, rows of the table's protocol;
- otherwise the bundled testbed's ``standard`` models (ImageNet-trained, no extra data) at the
  published protocol; the testbed's rows are ``Result`` rows under the engine's setting names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.api import Result

TRANSFORM = "logit"
#: Plot-only clipping of accuracies before the logit (fits clip as reports.scales does).
CLIP = 1e-4


def logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), CLIP, 1 - CLIP)
    return np.log(p / (1 - p))


def sigmoid(z) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


@dataclass(frozen=True)
class BaselinePoint:
    model: str
    x: float
    y: float
    n_x: int | None
    n_y: int | None


@dataclass
class ShiftTrend:
    """A fitted trend and the points it was fitted on (``trend`` None: see ``reason``)."""

    points: list[BaselinePoint]
    trend: Any = None  # reports.trend.Trend
    reason: str = ""

    def predict(self, x: float) -> float:
        return float(self.trend.predict(np.array([x]))[0])

    def slope_at(self, x: float, h: float = 1e-5) -> float:
        """d predict / d x, for propagating the ID accuracy's sampling error."""
        lo, hi = max(x - h, 1e-9), min(x + h, 1 - 1e-9)
        return (self.predict(hi) - self.predict(lo)) / (hi - lo)

    def fit_half_width(self, x: float, y: float, level: float = 0.95) -> float:
        """Half the bootstrap interval of the effective robustness at (x, y): the fit's share."""
        lo, hi = self.trend.er_interval(np.array([x]), np.array([y]), level=level)
        return float(hi[0] - lo[0]) / 2


def fit(points: list[BaselinePoint]) -> ShiftTrend:
    from reports.trend import Trend

    if not points:
        return ShiftTrend(points, None, "no baseline models")
    try:
        x = np.array([p.x for p in points])
        y = np.array([p.y for p in points])
        nx = np.array([p.n_x or np.nan for p in points], dtype=float)
        ny = np.array([p.n_y or np.nan for p in points], dtype=float)
        return ShiftTrend(points, Trend(TRANSFORM).fit(x, y, nx, ny))
    except ValueError as exc:
        return ShiftTrend(points, None, str(exc))


def read_baseline(paths: Iterable[Path]) -> list[Result]:
    """The rows of every ``--baseline`` file, checked as the report checks its inputs (types,
    fractions, one row per model and setting), each file its own source: a model of one file
    is never paired with a model of the same name in another."""
    from reports.importers import read_results_jsonl
    from reports.rows import with_source

    rows: list[Result] = []
    for i, path in enumerate(paths):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: baseline results not found; pass a results.jsonl written by `shiftbench run`"
            )
        rows += [with_source(r, f"baseline {i + 1}: {path}") for r in read_results_jsonl(path)]
    return rows


def _same_protocol(row: Result, shifts: Mapping[str, Any]) -> bool:
    """A row belongs to a table when its shift version and the protocol it was scored under
    (an ID view's is its OOD shift's) are the table's."""
    entry = shifts.get(row.shift)
    scored = shifts.get(row.setting.split("@")[-1])
    return (
        entry is not None
        and scored is not None
        and row.shift_version == entry["version"]
        and dict(row.protocol) == dict(scored["protocol"])
    )


def points_from_results(
    rows: Iterable[Result], shifts: Mapping[str, Any], ood: str, id_setting: str
) -> list[BaselinePoint]:
    """(ID, OOD) of every model with both settings among rows of the table's protocol."""
    from harness.pairing import pair
    from reports.rows import source_of

    by_model: dict[tuple[str, str], dict[str, Result]] = {}
    for r in rows:
        if _same_protocol(r, shifts) and r.setting in (ood, id_setting):
            by_model.setdefault((source_of(r), r.model), {})[r.setting] = r
    out = []
    for (_, model), s in sorted(by_model.items()):
        for y, x, _ in pair(s, lambda setting, _r: id_setting if setting == ood else None, fallback=False):
            out.append(
                BaselinePoint(model, float(x.metrics["top1"]), float(y.metrics["top1"]), x.n, y.n)
            )
    return out


def points_from_testbed(ood: str, id_setting: str) -> list[BaselinePoint]:
    """The bundled testbed's standard models at the published protocol of each setting, less the
    models the shift's images were selected against (the report's ``FILTER_MODELS``: ResNet-50
    scores ~0 on ImageNet-A by construction), so the board's trend is the report's."""
    from reports.analysis import FILTER_MODELS
    from reports.rows import model_tags, source_of
    from reports.testbed import load_testbed
    from reports.vocabulary import PROTOCOL_KEYS, protocol_key

    filtered = FILTER_MODELS.get(ood, frozenset())
    by_model: dict[tuple[str, str], dict[str, Result]] = {}
    for r in load_testbed():
        if (source_of(r), r.model) in filtered:
            continue
        if r.setting in (id_setting, ood) and "standard" in model_tags(r) and "top1" in r.metrics:
            canonical = tuple(sorted(PROTOCOL_KEYS.get(r.setting, {}).items()))
            if protocol_key(r.setting, r.protocol, r.shift_version) == canonical:
                by_model.setdefault((source_of(r), r.model), {})[r.setting] = r
    out = []
    for (source, model), s in sorted(by_model.items()):
        if id_setting in s and ood in s:
            x, y = s[id_setting], s[ood]
            out.append(BaselinePoint(f"{source}:{model}", x.metrics["top1"], y.metrics["top1"], x.n or None, y.n or None))
    return out


def baseline_trends(
    pairs: Mapping[str, str], shifts: Mapping[str, Any], rows: list[Result] | None
) -> dict[str, ShiftTrend]:
    """For each OOD shift -> its ID setting, the trend of the chosen baseline."""
    out = {}
    for ood, id_setting in pairs.items():
        points = (
            points_from_results(rows, shifts, ood, id_setting)
            if rows is not None
            else points_from_testbed(ood, id_setting)
        )
        out[ood] = fit(points)
    return out
