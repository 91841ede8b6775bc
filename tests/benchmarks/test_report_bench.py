"""Speed of the report's bootstrap and of the default analysis (all shifts, logit and probit,
1,000 samples over ~1,300 baseline models), as ratios against a per-sample loop measured in
the same run. Run with ``pytest tests/benchmarks --benchmark-only``."""

import numpy as np
import pytest

from reports import trend
from reports.analysis import analyse
from reports.testbed import load_testbed

MEANS: dict[str, float] = {}


def naive_bootstrap_ols(zx, zy, samples, rng):
    """The obvious implementation: one least-squares fit per resample."""
    m = len(zx)
    slopes, intercepts = [], []
    for _ in range(samples):
        idx = rng.integers(0, m, size=m)
        a, b = np.polyfit(zx[idx], zy[idx], 1)
        slopes.append(a)
        intercepts.append(b)
    return np.array(slopes), np.array(intercepts), 0


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(0)
    zx = rng.normal(1.0, 0.4, size=1000)
    return zx, 0.9 * zx - 0.5 + rng.normal(0, 0.05, size=1000)


def _record(benchmark, key, base_key):
    MEANS[key] = benchmark.stats.stats.mean
    if base_key in MEANS:
        benchmark.extra_info["speedup_vs_loop"] = round(MEANS[base_key] / MEANS[key], 1)


@pytest.mark.benchmark(group="bootstrap-1000x1000")
def test_bootstrap_loop_baseline(benchmark, points):
    benchmark.pedantic(naive_bootstrap_ols, args=(*points, 1000, np.random.default_rng(1)), rounds=3)
    _record(benchmark, "boot-loop", "")


@pytest.mark.benchmark(group="bootstrap-1000x1000")
def test_bootstrap_vectorised(benchmark, points):
    benchmark.pedantic(trend.bootstrap_ols, args=(*points, 1000, np.random.default_rng(1)), rounds=5)
    _record(benchmark, "boot-vec", "boot-loop")


@pytest.fixture(scope="module")
def rows():
    return load_testbed()


@pytest.mark.benchmark(group="default-analysis")
def test_default_analysis_loop_baseline(benchmark, rows, monkeypatch):
    monkeypatch.setattr(trend, "bootstrap_ols", naive_bootstrap_ols)
    benchmark.pedantic(analyse, args=(rows,), rounds=1)
    _record(benchmark, "analysis-loop", "")


@pytest.mark.benchmark(group="default-analysis")
def test_default_analysis_vectorised(benchmark, rows):
    groups = benchmark.pedantic(analyse, args=(rows,), rounds=3)
    assert sum(g.fits["logit"] is not None for g in groups) >= 8
    _record(benchmark, "analysis-vec", "analysis-loop")
