"""Fit math on synthetic data with a known line, clipping, intervals, piecewise fits."""

import numpy as np
import pytest
from scipy.special import expit, logit
from scipy.stats import norm

from reports import scales
from reports.trend import Trend, bootstrap_ols, clopper_pearson, ols

X = np.array([0.55, 0.62, 0.70, 0.74, 0.78, 0.81, 0.85])


@pytest.mark.parametrize(
    "transform,fwd,inv",
    [("logit", logit, expit), ("probit", norm.ppf, norm.cdf), ("linear", lambda p: p, lambda z: z)],
)
def test_fit_recovers_a_known_line(transform, fwd, inv):
    y = inv(0.8 * fwd(X) - 0.5)
    t = Trend(transform, samples=50).fit(X, y)
    assert t.slope == pytest.approx(0.8, abs=1e-9)
    assert t.intercept == pytest.approx(-0.5, abs=1e-9)
    assert t.r2 == pytest.approx(1.0)
    assert t.n == 7
    # every bootstrap resample of exact points lies on the same line
    assert np.allclose(t.segments[0].boot_slopes, 0.8)
    # a model 3 points above the trend has ER +0.03
    x0 = 0.76
    on_trend = float(inv(0.8 * fwd(x0) - 0.5))
    assert t.effective_robustness([x0], [on_trend + 0.03])[0] == pytest.approx(0.03, abs=1e-12)
    lo, hi = t.er_interval(np.array([x0]), np.array([on_trend + 0.03]))
    assert lo[0] == pytest.approx(0.03, abs=1e-9) and hi[0] == pytest.approx(0.03, abs=1e-9)


def test_ols_r2_by_hand():
    # points (0,0), (1,1), (2,1): slope 0.5, intercept 1/6, SSres = 1/6, SStot = 2/3 -> R^2 = 0.75
    slope, intercept, r2 = ols(np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 1.0]))
    assert (slope, intercept, r2) == pytest.approx((0.5, 1 / 6, 0.75))


def test_vectorised_bootstrap_equals_a_per_sample_loop():
    rng = np.random.default_rng(0)
    zx, zy = rng.normal(size=40), rng.normal(size=40)
    slopes, intercepts, dropped = bootstrap_ols(zx, zy, 200, np.random.default_rng(5))
    idx = np.random.default_rng(5).integers(0, 40, size=(200, 40))
    expected = np.array([np.polyfit(zx[i], zy[i], 1) for i in idx])
    assert dropped == 0
    assert np.allclose(slopes, expected[:, 0]) and np.allclose(intercepts, expected[:, 1])


def test_bootstrap_is_seeded():
    y = expit(0.9 * logit(X) - 0.4) + np.array([0.01, -0.01, 0.02, 0, -0.02, 0.01, 0])
    a = Trend("logit", samples=100, seed=3).fit(X, y)
    b = Trend("logit", samples=100, seed=3).fit(X, y)
    c = Trend("logit", samples=100, seed=4).fit(X, y)
    assert np.array_equal(a.segments[0].boot_slopes, b.segments[0].boot_slopes)
    assert not np.array_equal(a.segments[0].boot_slopes, c.segments[0].boot_slopes)


def test_clipping_at_zero_and_one_is_half_an_example():
    clipped, moved = scales.clip(np.array([0.0, 0.5, 1.0]), np.array([7500, 7500, 10000]))
    assert clipped.tolist() == [0.5 / 7500, 0.5, 1 - 0.5 / 10000]
    assert moved.tolist() == [True, False, True]
    clipped, _ = scales.clip(np.array([0.0]), None)
    assert clipped[0] == scales.DEFAULT_EPS
    # a fit with a zero accuracy stays finite
    t = Trend("logit", samples=0).fit(np.array([0.5, 0.6, 0.7, 0.8]), np.array([0.0, 0.1, 0.2, 0.3]), n_y=np.full(4, 7500))
    assert np.isfinite(t.slope)


def test_a_huge_test_set_size_never_makes_a_clipped_accuracy_infinite():
    """With n = 1e17, ``1 - 0.5/n`` is 1.0 in float64: an accuracy of 1.0 got an infinite logit and
    the whole trend was NaN (null slope, null ER for every model), exit 0."""
    clipped, moved = scales.clip(np.array([1.0, 0.0]), np.array([1e17, 1e17]))
    assert clipped[0] < 1.0 and clipped[1] > 0.0 and moved.all()
    x, y = np.array([0.6, 0.7, 0.8, 1.0]), np.array([0.3, 0.4, 0.5, 0.9])
    t = Trend("logit", samples=10).fit(x, y, np.array([5e4, 5e4, 5e4, 1e17]), np.full(4, 1e4))
    assert np.isfinite([t.slope, t.intercept]).all()
    with pytest.raises(ValueError, match="not a number in"):
        Trend("logit", samples=0).fit(np.array([0.5, 0.6, np.nan]), np.array([0.2, 0.3, 0.4]))


def test_clopper_pearson_by_hand():
    lo, hi = clopper_pearson(np.array([0.5, 0.0, 1.0]), np.array([10, 10, 10]))
    # n=10, k=5: the exact 95% interval is [0.18709, 0.81291]; k=0 -> [0, 1-0.025^(1/10)]
    assert lo[0] == pytest.approx(0.187086, abs=1e-6) and hi[0] == pytest.approx(0.812914, abs=1e-6)
    assert lo[1] == 0.0 and hi[1] == pytest.approx(1 - 0.025 ** 0.1)
    assert lo[2] == pytest.approx(0.025 ** 0.1) and hi[2] == 1.0


def test_piecewise_fit_has_two_independent_lines():
    x = np.array([0.80, 0.84, 0.88, 0.90, 0.93, 0.95, 0.97, 0.985])
    z = logit(x)
    y = np.where(x < 0.9186, expit(0.5 * z - 3.0), expit(2.0 * z - 5.0))
    t = Trend("logit", samples=20, split=0.9186).fit(x, y)
    (a, b) = t.segments
    assert (a.slope, a.intercept, a.n) == pytest.approx((0.5, -3.0, 4))
    assert (b.slope, b.intercept, b.n) == pytest.approx((2.0, -5.0, 4))
    assert t.predict(np.array([0.85, 0.96])) == pytest.approx([expit(0.5 * logit(0.85) - 3), expit(2 * logit(0.96) - 5)])


def test_too_few_or_degenerate_baselines_are_clear_errors():
    with pytest.raises(ValueError, match="2 baseline models, at least 3"):
        Trend("logit").fit(np.array([0.5, 0.6]), np.array([0.4, 0.5]))
    with pytest.raises(ValueError, match="same x accuracy"):
        Trend("logit", samples=0).fit(np.array([0.5, 0.5, 0.5]), np.array([0.4, 0.5, 0.45]))
    with pytest.raises(ValueError, match="unknown transform"):
        Trend("log")


def test_percent_ticks_on_transformed_axes():
    from reports.figures import _ticks

    lo, hi = float(logit(0.3)), float(logit(0.97))
    assert _ticks("logit", lo, hi) == [30, 40, 50, 60, 70, 80, 90, 95]
    assert _ticks("linear", 0.0, 1.0) == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
