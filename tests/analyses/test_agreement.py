"""Agreement-on-the-line on predictions whose accuracies and agreements are known exactly."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_predictions import nested_predictions, on_the_line

from reports.agreement import (
    aline,
    estimate_from_predictions,
    pairwise_agreement,
    shared_backbone_warnings,
)

ID_ACC = np.linspace(0.55, 0.9, 8)
SLOPE, INTERCEPT = 1.2, -0.8


def test_pairwise_agreement_counts_equal_predictions():
    preds = np.array([[0, 1, 2, 3], [0, 1, 9, 9], [5, 1, 2, 9]])
    agr = pairwise_agreement(preds)
    assert agr[0, 1] == agr[1, 0] == 0.5
    assert agr[0, 2] == 0.5 and agr[1, 2] == 0.5
    assert np.all(np.diag(agr) == 1.0)


def test_both_estimators_are_exact_when_agreements_lie_on_the_accuracy_line():
    """Agreement = min(accuracy) in both domains, OOD accuracy exactly on the probit line:
    ALine-S and ALine-D must return the OOD accuracies (no rounding anywhere)."""
    ood = on_the_line(ID_ACC, SLOPE, INTERCEPT)
    est = aline([f"m{i}" for i in range(len(ID_ACC))], ID_ACC, np.minimum.outer(ID_ACC, ID_ACC),
                np.minimum.outer(ood, ood), n_id=10**9, n_ood=10**9)
    assert est.agreement_line.slope == pytest.approx(SLOPE, abs=1e-6)
    assert est.agreement_line.intercept == pytest.approx(INTERCEPT, abs=1e-6)
    np.testing.assert_allclose(est.aline_s, ood, atol=1e-6)
    np.testing.assert_allclose(est.aline_d, ood, atol=1e-6)


def test_aline_recovers_accuracy_from_predictions_within_rounding():
    """From real top-1 predictions (accuracies rounded to whole images of 20,000): both
    estimators within 0.1 points of the truth, and the hidden-label check says so."""
    rng = np.random.default_rng(0)
    n = 20_000
    ood = on_the_line(ID_ACC, SLOPE, INTERCEPT)
    id_labels, id_pred = nested_predictions(ID_ACC, n, 1000, rng)
    ood_labels, ood_pred = nested_predictions(ood, n, 1000, rng)
    est = estimate_from_predictions([f"m{i}" for i in range(len(ID_ACC))], id_pred, id_labels, ood_pred, ood_labels)
    np.testing.assert_allclose(est.ood_accuracy, ood, atol=0.5 / n)
    assert np.abs(est.aline_s - est.ood_accuracy).max() < 1e-3
    assert np.abs(est.aline_d - est.ood_accuracy).max() < 1e-3
    assert est.mae()["aline_s"] < 1e-3 and est.mae()["aline_d"] < 1e-3
    holds, why = est.verdict()
    assert holds and "holds" in why
    assert est.agreement_line.r2 > 0.999 and est.accuracy_line.r2 > 0.999


def test_the_estimators_never_read_ood_labels():
    rng = np.random.default_rng(1)
    ood = on_the_line(ID_ACC, SLOPE, INTERCEPT)
    id_labels, id_pred = nested_predictions(ID_ACC, 5000, 1000, rng)
    ood_labels, ood_pred = nested_predictions(ood, 5000, 1000, rng)
    models = [f"m{i}" for i in range(len(ID_ACC))]
    with_labels = estimate_from_predictions(models, id_pred, id_labels, ood_pred, ood_labels)
    without = estimate_from_predictions(models, id_pred, id_labels, ood_pred, None)
    np.testing.assert_array_equal(with_labels.aline_s, without.aline_s)
    np.testing.assert_array_equal(with_labels.aline_d, without.aline_d)
    assert without.mae() is None and without.accuracy_line is None
    assert "cannot be checked" in without.verdict()[1]


def test_a_shift_where_agreement_is_off_the_line_is_called_out():
    """Every model makes the same mistake OOD: they agree where all are wrong, so OOD agreement
    no longer follows accuracy; the verdict says so and the hidden-label error is large."""
    rng = np.random.default_rng(2)
    ood = on_the_line(ID_ACC, SLOPE, INTERCEPT)
    id_labels, id_pred = nested_predictions(ID_ACC, 20_000, 1000, rng)
    ood_labels, ood_pred = nested_predictions(ood, 20_000, 1000, rng, shared_mistakes=True)
    est = estimate_from_predictions([f"m{i}" for i in range(len(ID_ACC))], id_pred, id_labels, ood_pred, ood_labels)
    holds, why = est.verdict()
    assert not holds
    assert "not on a line" in why or "different lines" in why
    assert est.mae()["aline_s"] > 0.05


def test_aline_needs_three_models():
    with pytest.raises(ValueError, match="at least 3 models"):
        aline(["a", "b"], np.array([0.6, 0.7]), np.ones((2, 2)), np.ones((2, 2)), 100, 100)


def test_models_sharing_a_backbone_are_warned_about():
    sweep = {"method": "wiseft", "alpha": 0.5, "zeroshot": "clip:ViT-B-32", "finetuned": "finetuned:ft.pt", "tags": ["wise-ft"]}
    infos = {f"wiseft(alpha={a})": {**sweep, "alpha": a} for a in (0.2, 0.5, 0.8)}
    infos["resnet"] = {"tags": ["standard"], "arch": "resnet50"}
    (warning,) = shared_backbone_warnings(infos)
    assert "3 of 4 models" in warning and "WiSE-FT" in warning and "wiseft(alpha=0.5)" in warning
    soups = {"soup": {"tags": ["clip", "fine-tuned", "soup"], "arch": "ViT-B-32"},
             "ingredient(a)": {"tags": ["clip"], "ingredient": "a.pt", "arch": "ViT-B-32"}}
    (warning,) = shared_backbone_warnings(soups)
    assert warning.startswith("all models")
    assert shared_backbone_warnings({"a": {"arch": "x"}, "b": {"arch": "y"}}) == []


def test_a_narrow_range_of_id_agreement_is_warned_about():
    acc = np.array([0.80, 0.81, 0.82])
    agr = np.array([[1, 0.97, 0.96], [0.97, 1, 0.98], [0.96, 0.98, 1]])
    est = aline(["a", "b", "c"], acc, agr, agr - 0.1 + 0.1 * np.eye(3), 10_000, 10_000)
    assert any("span only" in w for w in est.warnings)
