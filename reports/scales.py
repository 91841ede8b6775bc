"""Axis transforms for ID-vs-OOD trends, with explicit clipping away from 0 and 1.

logit and probit are infinite at 0 and 1 (ResNet-50 scores 0.0 on ImageNet-A). Accuracies are
clipped to ``[eps, 1 - eps]`` before transforming, with ``eps`` half an example (``0.5 / n``)
when the test-set size is known and :data:`DEFAULT_EPS` otherwise; callers record which points
were clipped.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, logit
from scipy.stats import norm

TRANSFORMS = ("logit", "probit", "linear")
DEFAULT_EPS = 1e-4


def check_transform(name: str) -> str:
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}; choose one of {', '.join(TRANSFORMS)}")
    return name


#: The smallest margin: ``1 - MIN_EPS`` is still below 1 in float64, so no count, however large,
#: makes a clipped accuracy 1.0 again (and its logit infinite).
MIN_EPS = 1e-15


def clip_eps(n: np.ndarray | float | None) -> np.ndarray:
    """Clipping margin per point: half an example of its test set."""
    n = np.asarray(np.nan if n is None else n, dtype=float)
    return np.where(np.isfinite(n) & (n > 0), np.maximum(0.5 / np.where(n > 0, n, 1.0), MIN_EPS), DEFAULT_EPS)


def clip(acc: np.ndarray, n: np.ndarray | float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(clipped accuracies, mask of points that were moved)."""
    acc = np.asarray(acc, dtype=float)
    eps = clip_eps(n)
    out = np.clip(acc, eps, 1.0 - eps)
    return out, out != acc


def forward(name: str, p: np.ndarray) -> np.ndarray:
    """Transform fractions (already clipped for logit/probit)."""
    p = np.asarray(p, dtype=float)
    if name == "logit":
        return logit(p)
    if name == "probit":
        return norm.ppf(p)
    check_transform(name)
    return p


def inverse(name: str, z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=float)
    if name == "logit":
        return expit(z)
    if name == "probit":
        return norm.cdf(z)
    check_transform(name)
    return z
