"""Paired comparisons of two models on the same images.

Two models scored on one shift saw the same images, so their accuracies are paired: the
uncertainty of the difference comes from the images on which they disagree, which is far less
than two independent intervals suggest. Over the image keys both models share:

- McNemar's exact test (McNemar 1947): with ``b`` images only A gets right and ``c`` only B
  gets right, the two-sided binomial test of ``b`` out of ``b + c`` at 1/2.
- A paired percentile bootstrap (Efron & Tibshirani 1993) of the accuracy difference: images
  are resampled with replacement, both models' outcomes kept together. Each image is one of
  four outcomes (both right, only A, only B, both wrong), so a resample is a multinomial draw
  of those counts: exactly the index resampling, in memory independent of the image count.
- The difference in effective robustness (Taori et al. 2020), ``ER_A - ER_B = (y_A - y_B) -
  (f(x_A) - f(x_B))``, with ``f`` the baseline trend: its interval resamples the OOD images,
  the ID images and the trend's baseline models together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

DEFAULT_SAMPLES = 2000
DEFAULT_SEED = 0
LEVEL = 0.95


@dataclass(frozen=True)
class Mcnemar:
    only_a: int  # images A gets right and B wrong
    only_b: int
    p_value: float


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> Mcnemar:
    """Two-sided exact McNemar test on paired correctness vectors."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes differ in length: {a.shape} vs {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    p = 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return Mcnemar(only_a, only_b, p)


def outcome_counts(correct_a: np.ndarray, correct_b: np.ndarray) -> np.ndarray:
    """[both right, only A, only B, both wrong] image counts."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    return np.array([(a & b).sum(), (a & ~b).sum(), (~a & b).sum(), (~a & ~b).sum()], dtype=np.int64)


def resample_accuracies(counts: np.ndarray, samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """[samples] accuracies of A and of B over images resampled with replacement."""
    n = int(counts.sum())
    if n == 0:
        raise ValueError("no shared images to compare on")
    draws = rng.multinomial(n, counts / n, size=samples)
    return (draws[:, 0] + draws[:, 1]) / n, (draws[:, 0] + draws[:, 2]) / n


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    q = 100 * (1 - level) / 2
    lo, hi = np.percentile(values, [q, 100 - q])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Difference:
    """Accuracy of A minus accuracy of B on their shared images, with its paired interval."""

    n: int
    acc_a: float
    acc_b: float
    diff: float
    low: float
    high: float
    mcnemar: Mcnemar

    def to_dict(self) -> dict:
        return {"n": self.n, "acc_a": self.acc_a, "acc_b": self.acc_b, "diff": self.diff, "low": self.low,
                "high": self.high, "only_a": self.mcnemar.only_a, "only_b": self.mcnemar.only_b,
                "p_value": self.mcnemar.p_value}


def accuracy_difference(correct_a: np.ndarray, correct_b: np.ndarray, samples: int = DEFAULT_SAMPLES,
                        seed: int = DEFAULT_SEED, level: float = LEVEL) -> Difference:
    """Paired bootstrap interval and McNemar's exact test for ``acc(A) - acc(B)``."""
    counts = outcome_counts(correct_a, correct_b)
    n = int(counts.sum())
    if n == 0:
        raise ValueError("no shared images to compare on")
    acc_a, acc_b = (counts[0] + counts[1]) / n, (counts[0] + counts[2]) / n
    ra, rb = resample_accuracies(counts, samples, np.random.default_rng(seed))
    lo, hi = _interval(ra - rb, level)
    return Difference(n, float(acc_a), float(acc_b), float(acc_a - acc_b), lo, hi, mcnemar_exact(correct_a, correct_b))


@dataclass(frozen=True)
class ERDifference:
    er_a: float
    er_b: float
    diff: float
    low: float
    high: float

    def to_dict(self) -> dict:
        return {"er_a": self.er_a, "er_b": self.er_b, "diff": self.diff, "low": self.low, "high": self.high}


def er_difference(trend, id_a: np.ndarray, id_b: np.ndarray, ood_a: np.ndarray, ood_b: np.ndarray,
                  samples: int = DEFAULT_SAMPLES, seed: int = DEFAULT_SEED, level: float = LEVEL) -> ERDifference:
    """``ER_A - ER_B`` under ``trend`` (a fitted :class:`reports.trend.Trend`) from paired ID and
    OOD correctness; the interval resamples ID images, OOD images and (when the trend has
    bootstrap lines) the trend's baseline models, one of each per replicate."""
    from reports import scales

    id_counts, ood_counts = outcome_counts(id_a, id_b), outcome_counts(ood_a, ood_b)
    n_id, n_ood = int(id_counts.sum()), int(ood_counts.sum())
    if n_id == 0 or n_ood == 0:
        raise ValueError("no shared images to compare on")
    xa, xb = (id_counts[0] + id_counts[1]) / n_id, (id_counts[0] + id_counts[2]) / n_id
    ya, yb = (ood_counts[0] + ood_counts[1]) / n_ood, (ood_counts[0] + ood_counts[2]) / n_ood
    pred = trend.predict(np.array([xa, xb]), np.array([n_id, n_id]))
    er_a, er_b = ya - pred[0], yb - pred[1]
    rng = np.random.default_rng(seed)
    rxa, rxb = resample_accuracies(id_counts, samples, rng)
    rya, ryb = resample_accuracies(ood_counts, samples, rng)
    zxa, zxb = trend.z(rxa, n_id), trend.z(rxb, n_id)
    seg = trend.segments[0] if len(trend.segments) == 1 else None
    if seg is not None and len(seg.boot_slopes):
        k = np.arange(samples) % len(seg.boot_slopes)
        slope, intercept = seg.boot_slopes[k], seg.boot_intercepts[k]
        fa = scales.inverse(trend.transform, slope * zxa + intercept)
        fb = scales.inverse(trend.transform, slope * zxb + intercept)
    else:  # a piecewise trend or one without bootstrap lines: image resampling only
        fa, fb = trend.predict(rxa, n_id), trend.predict(rxb, n_id)
    lo, hi = _interval((rya - fa) - (ryb - fb), level)
    return ERDifference(float(er_a), float(er_b), float(er_a - er_b), lo, hi)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment (Holm 1979): family-wise error control over one family."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted
