"""The baseline trend an entry is placed against: one seam, ``baseline_trends``.

A logit-linear least-squares fit of OOD on ID accuracy over baseline models (the imagenet-testbed
convention), from Result rows given by the maintainer. Fractions are clipped to
[CLIP, 1 - CLIP] before the logit, because logit(0) and logit(1) are infinite (a ResNet-50 scores
0.0 on ImageNet-A); the site says so under each plot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.api import Result

CLIP = 1e-4


def logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), CLIP, 1 - CLIP)
    return np.log(p / (1 - p))


def sigmoid(z: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


@dataclass(frozen=True)
class LogitTrend:
    """OOD = sigmoid(slope * logit(ID) + intercept), fitted on ``points`` (fractions)."""

    slope: float
    intercept: float
    points: tuple[tuple[str, float, float], ...]  # (model, id, ood)

    def predict(self, x: np.ndarray | float) -> np.ndarray:
        return sigmoid(self.slope * logit(x) + self.intercept)

    def slope_at(self, x: float) -> float:
        """d predict / d x, for propagating the ID accuracy's sampling error."""
        xc = float(np.clip(x, CLIP, 1 - CLIP))
        g = float(self.predict(xc))
        return self.slope * g * (1 - g) / (xc * (1 - xc))

    def effective_robustness(self, x: float, y: float) -> float:
        return float(y - self.predict(x))


def fit_logit_trend(points: Iterable[tuple[str, float, float]]) -> LogitTrend | None:
    """Least squares in logit space; None with fewer than two distinct ID accuracies."""
    pts = tuple(points)
    if len({round(x, 12) for _, x, _ in pts}) < 2:
        return None
    x = logit([p[1] for p in pts])
    y = logit([p[2] for p in pts])
    slope, intercept = np.polyfit(x, y, 1)
    return LogitTrend(float(slope), float(intercept), pts)


def baseline_points(
    rows: Iterable[Result], ood: str, id_setting: str
) -> list[tuple[str, float, float]]:
    """(model, ID top-1, OOD top-1) for every baseline model with both settings."""
    by_model: dict[str, dict[str, float]] = {}
    for r in rows:
        by_model.setdefault(r.model, {})[r.setting] = float(r.metrics["top1"])
    return [
        (m, s[id_setting], s[ood])
        for m, s in sorted(by_model.items())
        if id_setting in s and ood in s
    ]


def read_baseline(paths: Iterable[Path]) -> list[Result]:
    from reports.submission import read_results

    rows: list[Result] = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: baseline results not found; pass a results.jsonl written by `shiftbench run`"
            )
        rows += read_results(path)
    return rows


def baseline_trends(
    rows: Iterable[Result], pairs: Mapping[str, str]
) -> dict[str, LogitTrend | None]:
    """For each OOD setting -> its ID setting in ``pairs``, the trend fitted on the baseline rows."""
    rows = list(rows)
    return {
        ood: fit_logit_trend(baseline_points(rows, ood, id_setting))
        for ood, id_setting in pairs.items()
    }
