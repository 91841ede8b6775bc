"""Speed of the paired bootstrap over 50,000 images (ImageNet val's size), 2,000 resamples: the
multinomial draw of outcome counts against resampling image indices, measured in the same run.
Run with ``pytest tests/benchmarks --benchmark-only``."""

import numpy as np
import pytest

from reports.paired import outcome_counts, resample_accuracies

MEANS: dict[str, float] = {}
N, SAMPLES = 50_000, 2_000


def index_resampling(a, b, samples, rng):
    """The obvious implementation: draw image indices, average both models' outcomes."""
    out = np.empty((samples, 2))
    for k in range(samples):
        idx = rng.integers(0, len(a), size=len(a))
        out[k] = a[idx].mean(), b[idx].mean()
    return out


@pytest.fixture(scope="module")
def outcomes():
    rng = np.random.default_rng(0)
    return rng.random(N) < 0.8, rng.random(N) < 0.78


def _record(benchmark, key, base_key):
    MEANS[key] = benchmark.stats.stats.mean
    if base_key in MEANS:
        benchmark.extra_info["speedup_vs_indices"] = round(MEANS[base_key] / MEANS[key], 1)


@pytest.mark.benchmark(group="paired-bootstrap-50000x2000")
def test_paired_bootstrap_index_baseline(benchmark, outcomes):
    benchmark.pedantic(index_resampling, args=(*outcomes, SAMPLES, np.random.default_rng(1)), rounds=1)
    _record(benchmark, "indices", "")


@pytest.mark.benchmark(group="paired-bootstrap-50000x2000")
def test_paired_bootstrap_multinomial(benchmark, outcomes):
    counts = outcome_counts(*outcomes)
    benchmark.pedantic(resample_accuracies, args=(counts, SAMPLES, np.random.default_rng(1)), rounds=5)
    _record(benchmark, "multinomial", "indices")
