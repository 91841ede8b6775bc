"""Paired comparisons: McNemar's exact test by hand, interval coverage in a seeded simulation."""

from __future__ import annotations

import numpy as np
import pytest

from reports.paired import accuracy_difference, er_difference, holm, mcnemar_exact
from reports.trend import Trend


def test_mcnemar_exact_matches_a_hand_computation():
    # 8 images only A gets right, 2 only B: p = 2 * P(X <= 2 | n=10, 1/2) = 2 * 56 / 1024
    a = np.array([1] * 8 + [0] * 2 + [1] * 5 + [0] * 5, dtype=bool)
    b = np.array([0] * 8 + [1] * 2 + [1] * 5 + [0] * 5, dtype=bool)
    test = mcnemar_exact(a, b)
    assert (test.only_a, test.only_b) == (8, 2)
    assert test.p_value == pytest.approx(112 / 1024)
    assert mcnemar_exact(a, a).p_value == 1.0


def _simulate(rng, n, p_a, p_b, rho=0.5):
    """Correlated correctness of two models on n images drawn afresh: true difference p_a - p_b."""
    from scipy.stats import norm

    z = rng.normal(size=n)
    ea = rho * z + np.sqrt(1 - rho**2) * rng.normal(size=n)
    eb = rho * z + np.sqrt(1 - rho**2) * rng.normal(size=n)
    return ea < norm.ppf(p_a), eb < norm.ppf(p_b)


def test_paired_interval_covers_the_true_difference_at_its_stated_rate():
    """400 seeded replications of 500 fresh images: the 95% paired bootstrap interval contains
    the true difference (5 points) in 92-98% of them (binomial sd of the rate is 1.1 points)."""
    rng = np.random.default_rng(20221)
    truth = 0.75 - 0.70
    hits = []
    for rep in range(400):
        a, b = _simulate(rng, 500, 0.75, 0.70)
        d = accuracy_difference(a, b, samples=1000, seed=rep)
        hits.append(d.low <= truth <= d.high)
    rate = float(np.mean(hits))
    assert 0.92 <= rate <= 0.98, rate


def test_mcnemar_rejects_at_most_its_level_when_models_are_equally_good():
    rng = np.random.default_rng(7)
    rejections = [mcnemar_exact(*_simulate(rng, 300, 0.7, 0.7)).p_value < 0.05 for _ in range(400)]
    assert np.mean(rejections) <= 0.065


def test_paired_interval_is_narrower_than_unpaired_ones_when_models_agree():
    rng = np.random.default_rng(3)
    a, b = _simulate(rng, 2000, 0.75, 0.73, rho=0.95)
    d = accuracy_difference(a, b, samples=2000)
    unpaired = 1.96 * np.sqrt(d.acc_a * (1 - d.acc_a) / 2000 + d.acc_b * (1 - d.acc_b) / 2000)
    assert (d.high - d.low) / 2 < 0.7 * unpaired


def test_holm_matches_a_hand_computation():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])


def test_er_difference_is_the_difference_of_residuals_from_the_trend():
    trend = Trend("logit", samples=200, seed=0).fit(np.array([0.6, 0.7, 0.8, 0.9]), np.array([0.3, 0.42, 0.55, 0.71]))
    rng = np.random.default_rng(5)
    xa, xb = _simulate(rng, 4000, 0.80, 0.70)
    ya, yb = _simulate(rng, 3000, 0.60, 0.45)
    er = er_difference(trend, xa, xb, ya, yb, samples=500)
    expect_a = ya.mean() - trend.predict(np.array([xa.mean()]), np.array([4000]))[0]
    expect_b = yb.mean() - trend.predict(np.array([xb.mean()]), np.array([4000]))[0]
    assert er.er_a == pytest.approx(expect_a) and er.er_b == pytest.approx(expect_b)
    assert er.diff == pytest.approx(expect_a - expect_b)
    assert er.low < er.diff < er.high


def test_er_difference_interval_covers_the_true_difference_at_its_stated_rate():
    """A fixed trend (no baseline resampling): 300 seeded replications of fresh ID and OOD images;
    the 95% interval of ER_A - ER_B contains its true value in 92-98% of them."""
    trend = Trend("logit", samples=0).fit(np.array([0.6, 0.7, 0.8, 0.9]), np.array([0.3, 0.42, 0.55, 0.71]))
    f_b, f_a = trend.predict(np.array([0.70, 0.80]))
    truth = (0.62 - 0.50) - (f_a - f_b)
    rng = np.random.default_rng(11)
    hits = []
    for rep in range(300):
        xa, xb = _simulate(rng, 800, 0.80, 0.70)
        ya, yb = _simulate(rng, 600, 0.62, 0.50)
        er = er_difference(trend, xa, xb, ya, yb, samples=1000, seed=rep)
        hits.append(er.low <= truth <= er.high)
    assert 0.92 <= float(np.mean(hits)) <= 0.98, np.mean(hits)


def test_multinomial_resampling_matches_resampling_image_indices():
    """Both draw the same distribution of (acc_A, acc_B): their 2.5/97.5 percentiles of the
    difference agree to Monte Carlo error over 4,000 resamples of 1,000 images."""
    from reports.paired import outcome_counts, resample_accuracies

    rng = np.random.default_rng(8)
    a, b = _simulate(rng, 1000, 0.7, 0.65)
    ra, rb = resample_accuracies(outcome_counts(a, b), 4000, np.random.default_rng(0))
    idx = np.random.default_rng(1).integers(0, 1000, size=(4000, 1000))
    ia, ib = a[idx].mean(axis=1), b[idx].mean(axis=1)
    np.testing.assert_allclose(np.percentile(ra - rb, [2.5, 50, 97.5]), np.percentile(ia - ib, [2.5, 50, 97.5]), atol=0.003)
    assert np.std(ra - rb) == pytest.approx(np.std(ia - ib), rel=0.05)
