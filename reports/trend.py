"""ID-vs-OOD trend fits and effective robustness (imagenet-testbed's definition).

The trend is ordinary least squares of T(y) on T(x) over an explicit baseline set, T one of
:mod:`reports.scales`. Effective robustness is measured in accuracy:
``ER = y - T^-1(slope * T(x) + intercept)``. Intervals: Clopper-Pearson per accuracy, and a
seeded bootstrap over baseline models (resampled with replacement) for the fit band and for
each model's ER, computed for all samples at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import beta

from reports import scales

#: imagenet-testbed's bootstrap seed (plotting/plotter.py).
DEFAULT_SEED = 720257663
DEFAULT_SAMPLES = 1000
MIN_BASELINE = 3


def clopper_pearson(acc: np.ndarray, n: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact binomial interval of each accuracy with ``k = round(acc * n)`` successes."""
    acc = np.asarray(acc, dtype=float)
    n = np.asarray(n, dtype=float)
    k = np.round(acc * n)
    a = (1.0 - level) / 2.0
    with np.errstate(invalid="ignore"):
        lo = np.where(k > 0, beta.ppf(a, k, n - k + 1), 0.0)
        hi = np.where(k < n, beta.ppf(1 - a, k + 1, n - k), 1.0)
    return lo, hi


def ols(zx: np.ndarray, zy: np.ndarray) -> tuple[float, float, float]:
    """(slope, intercept, R^2) of zy on zx."""
    mx, my = zx.mean(), zy.mean()
    sxx = float(((zx - mx) ** 2).sum())
    if sxx == 0.0:
        raise ValueError("cannot fit a trend: every baseline model has the same x accuracy")
    slope = float(((zx - mx) * (zy - my)).sum()) / sxx
    intercept = float(my - slope * mx)
    resid = zy - (slope * zx + intercept)
    syy = float(((zy - my) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / syy if syy > 0 else 1.0
    return slope, intercept, r2


def bootstrap_ols(zx: np.ndarray, zy: np.ndarray, samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """(slopes, intercepts, dropped) over ``samples`` resamples of the points, all at once.

    Resamples in which every x is equal have no slope and are dropped (their count returned)."""
    m = len(zx)
    idx = rng.integers(0, m, size=(samples, m))
    X, Y = zx[idx], zy[idx]
    mx, my = X.mean(axis=1, keepdims=True), Y.mean(axis=1, keepdims=True)
    dx = X - mx
    sxx = np.einsum("ij,ij->i", dx, dx)
    sxy = np.einsum("ij,ij->i", dx, Y - my)
    ok = sxx > 1e-12 * max(1.0, float(np.abs(zx).max()) ** 2)
    slopes = sxy[ok] / sxx[ok]
    intercepts = my[ok, 0] - slopes * mx[ok, 0]
    return slopes, intercepts, int((~ok).sum())


@dataclass
class Segment:
    """One straight piece of a trend, valid for x (accuracy) in ``[lo, hi)``."""

    lo: float
    hi: float
    slope: float
    intercept: float
    r2: float
    n: int
    boot_slopes: np.ndarray = field(default_factory=lambda: np.empty(0))
    boot_intercepts: np.ndarray = field(default_factory=lambda: np.empty(0))
    boot_dropped: int = 0


class Trend:
    """``Trend(transform).fit(x, y, n_x, n_y)`` then ``predict``, ``effective_robustness``, intervals.

    ``split`` (an x accuracy) fits two independent lines below and above it, as
    imagenet-testbed does for ImageNet-A.
    """

    def __init__(self, transform: str = "logit", samples: int = DEFAULT_SAMPLES, seed: int = DEFAULT_SEED, split: float | None = None):
        self.transform = scales.check_transform(transform)
        self.samples = int(samples)
        self.seed = int(seed)
        self.split = split
        self.segments: list[Segment] = []

    # -- transforms ---------------------------------------------------------------------------
    def z(self, acc: np.ndarray, n: np.ndarray | None = None) -> np.ndarray:
        if self.transform == "linear":
            return np.asarray(acc, dtype=float)
        return scales.forward(self.transform, scales.clip(acc, n)[0])

    # -- fit ------------------------------------------------------------------------------------
    def fit(self, x: np.ndarray, y: np.ndarray, n_x: np.ndarray | None = None, n_y: np.ndarray | None = None) -> Trend:
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        zx, zy = self.z(x, n_x), self.z(y, n_y)
        if not (np.isfinite(zx).all() and np.isfinite(zy).all()):
            raise ValueError("cannot fit a trend: a baseline accuracy is not a number in [0, 1]")
        bounds = [-np.inf, np.inf] if self.split is None else [-np.inf, float(self.split), np.inf]
        rng = np.random.default_rng(self.seed)
        self.segments = []
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            mask = (x >= lo) & (x < hi)
            m = int(mask.sum())
            where = "" if self.split is None else f" with x in [{lo:.4g}, {hi:.4g})"
            if m < MIN_BASELINE:
                raise ValueError(f"cannot fit a trend{where}: {m} baseline models, at least {MIN_BASELINE} needed")
            slope, intercept, r2 = ols(zx[mask], zy[mask])
            seg = Segment(lo, hi, slope, intercept, r2, m)
            if self.samples:
                seg.boot_slopes, seg.boot_intercepts, seg.boot_dropped = bootstrap_ols(zx[mask], zy[mask], self.samples, rng)
            self.segments.append(seg)
        return self

    @property
    def slope(self) -> float:
        return self.segments[0].slope

    @property
    def intercept(self) -> float:
        return self.segments[0].intercept

    @property
    def r2(self) -> float:
        return self.segments[0].r2

    @property
    def n(self) -> int:
        return sum(s.n for s in self.segments)

    def _segment_index(self, x: np.ndarray) -> np.ndarray:
        if len(self.segments) == 1:
            return np.zeros(np.shape(x), dtype=int)
        return (np.asarray(x) >= self.split).astype(int)

    # -- prediction and effective robustness -----------------------------------------------------
    def predict(self, x: np.ndarray, n_x: np.ndarray | None = None) -> np.ndarray:
        """Trend accuracy at ID accuracy ``x`` (fractions)."""
        if not self.segments:
            raise ValueError("trend is not fitted")
        x = np.asarray(x, dtype=float)
        zx = self.z(x, n_x)
        seg = self._segment_index(x)
        slope = np.array([s.slope for s in self.segments])[seg]
        intercept = np.array([s.intercept for s in self.segments])[seg]
        return scales.inverse(self.transform, slope * zx + intercept)

    def effective_robustness(self, x: np.ndarray, y: np.ndarray, n_x: np.ndarray | None = None) -> np.ndarray:
        """``y - predict(x)``, in accuracy (fractions)."""
        return np.asarray(y, dtype=float) - self.predict(x, n_x)

    def _boot_predict(self, x: np.ndarray, n_x: np.ndarray | None = None) -> np.ndarray:
        """[samples, len(x)] trend accuracies under every bootstrap line."""
        x = np.asarray(x, dtype=float)
        zx = self.z(x, n_x)
        seg = self._segment_index(x)
        out = np.empty((self.samples, len(x)))
        for k, s in enumerate(self.segments):
            cols = seg == k
            if not cols.any():
                continue
            if len(s.boot_slopes) == 0:
                raise ValueError("trend was fitted without bootstrap samples")
            z = s.boot_slopes[:, None] * zx[cols][None, :] + s.boot_intercepts[:, None]
            pred = scales.inverse(self.transform, z)
            # Pad dropped (degenerate) resamples by reusing kept ones so every column has `samples` rows.
            out[:, cols] = pred[np.arange(self.samples) % len(pred)]
        return out

    def er_interval(self, x: np.ndarray, y: np.ndarray, n_x: np.ndarray | None = None, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Percentile bootstrap interval of each model's effective robustness."""
        er = np.asarray(y, dtype=float)[None, :] - self._boot_predict(x, n_x)
        q = 100 * (1 - level) / 2
        lo, hi = np.percentile(er, [q, 100 - q], axis=0)
        return lo, hi

    def band(self, grid: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise percentile band of the trend accuracy on ``grid``."""
        pred = self._boot_predict(grid)
        q = 100 * (1 - level) / 2
        lo, hi = np.percentile(pred, [q, 100 - q], axis=0)
        return lo, hi


Z95 = 1.959963984540054


@dataclass
class ERInterval:
    """Each model's effective robustness with its interval and both of the interval's parts.

    ``sampling_half``: half-width of the model's own binomial sampling error, the OOD term plus
    the ID term through the trend's slope, ``z * sqrt(y(1-y)/n_y + f'(x)^2 x(1-x)/n_x)`` (NaN
    where a test-set size is unknown: then the interval is the fit's part alone).
    ``fit_low``/``fit_high``: the percentile bootstrap interval over baseline resamples.
    ``low``/``high``: both combined in quadrature on each side of ``er``."""

    er: np.ndarray
    low: np.ndarray
    high: np.ndarray
    sampling_half: np.ndarray
    fit_low: np.ndarray
    fit_high: np.ndarray


def slope_at(trend: Trend, x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """d predict / d x in accuracy units, for propagating the ID accuracy's sampling error."""
    x = np.asarray(x, dtype=float)
    lo, hi = np.clip(x - h, 1e-9, 1 - 1e-9), np.clip(x + h, 1e-9, 1 - 1e-9)
    return (trend.predict(hi) - trend.predict(lo)) / (hi - lo)


def er_interval(
    trend: Trend,
    x: np.ndarray,
    y: np.ndarray,
    n_x: np.ndarray | None = None,
    n_y: np.ndarray | None = None,
    level: float = 0.95,
) -> ERInterval:
    """Effective robustness with an interval covering the model's sampling error and the
    trend's: the one definition the report and the leaderboard use."""
    from scipy.stats import norm

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    nx = np.full(x.shape, np.nan) if n_x is None else np.asarray(n_x, dtype=float)
    ny = np.full(y.shape, np.nan) if n_y is None else np.asarray(n_y, dtype=float)
    z = float(norm.ppf(0.5 + level / 2))
    er = trend.effective_robustness(x, y, nx)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = y * (1 - y) / ny + slope_at(trend, x) ** 2 * x * (1 - x) / nx
    sampling = z * np.sqrt(var)
    if trend.samples and all(len(s.boot_slopes) for s in trend.segments):
        fit_low, fit_high = trend.er_interval(x, y, nx, level)
    else:
        fit_low, fit_high = er.copy(), er.copy()
    s = np.nan_to_num(sampling, nan=0.0)
    low = er - np.sqrt(s**2 + (er - fit_low) ** 2)
    high = er + np.sqrt(s**2 + (fit_high - er) ** 2)
    return ERInterval(er, low, high, sampling, fit_low, fit_high)
