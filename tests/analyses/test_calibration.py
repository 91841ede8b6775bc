"""ECE and NLL by hand; temperature scaling recovers a known temperature."""

from __future__ import annotations

import numpy as np
import pytest

from harness.api import Predictions, ShiftSpec
from harness.metrics import expected_calibration_error, negative_log_likelihood, score
from reports.calibration import fit_temperature


def _two_class(p_first: list[float]) -> np.ndarray:
    p = np.array(p_first)
    return np.log(np.stack([p, 1 - p], axis=1))


def test_ece_equals_a_hand_computation():
    """Confidences 0.9 (right), 0.9 (wrong), 0.58 (right), 0.55 (right) on class 0.
    15 bins: both 0.9 fall in (13/15, 14/15]: accuracy 1/2, confidence 0.9, gap 0.4;
    0.58 and 0.55 fall in (8/15, 9/15]: accuracy 1, confidence 0.565, gap 0.435.
    ECE = 2/4 * 0.4 + 2/4 * 0.435 = 0.4175."""
    logits = _two_class([0.9, 0.9, 0.58, 0.55])
    labels = np.array([0, 1, 0, 0])
    assert expected_calibration_error(logits, labels) == pytest.approx(0.4175, abs=1e-7)  # float32 logits
    # with one bin it is |accuracy - mean confidence| = |0.75 - 0.7325|
    assert expected_calibration_error(logits, labels, bins=1) == pytest.approx(0.0175, abs=1e-7)


def test_nll_equals_a_hand_computation():
    logits = _two_class([0.9, 0.9, 0.58, 0.55])
    labels = np.array([0, 1, 0, 0])
    expect = -(np.log(0.9) + np.log(0.1) + np.log(0.58) + np.log(0.55)) / 4
    assert negative_log_likelihood(logits, labels) == pytest.approx(expect, rel=1e-7)
    # temperature 2 halves the logits before the softmax
    assert negative_log_likelihood(logits, labels, temperature=2.0) == pytest.approx(
        negative_log_likelihood(logits / 2, labels), rel=1e-12)


def test_every_labelled_row_gets_ece_and_nll():
    spec = ShiftSpec("toy", "1", "toy", "toy", 2, 4, metrics=("top1",))
    logits = _two_class([0.9, 0.9, 0.58, 0.55]).astype(np.float16)
    preds = Predictions("m", "toy", np.array(["a", "b", "c", "d"]), np.array([0, 1, 0, 0]), logits)
    metrics, _ = score(preds, spec)
    assert set(metrics) == {"top1", "ece", "nll"}
    assert metrics["top1"] == 0.75
    assert metrics["ece"] == pytest.approx(0.4175, abs=2e-3)  # float16 logits


def test_temperature_scaling_recovers_a_known_temperature():
    """Labels drawn from softmax(z); the model reports 3 z. The fitted T is 3 and ECE drops."""
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.0, size=(20_000, 10))
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    labels = (p.cumsum(axis=1) > rng.random((len(z), 1))).argmax(axis=1)
    t = fit_temperature(3 * z, labels)
    assert t == pytest.approx(3.0, rel=0.05)
    assert expected_calibration_error(3 * z, labels, temperature=t) < 0.3 * expected_calibration_error(3 * z, labels)
