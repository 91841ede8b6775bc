"""Metrics against hand-computed values, including WILDS' conventions."""

from __future__ import annotations

import numpy as np
import pytest

from harness.api import ClassMap, Predictions, ShiftSpec, id_view_setting
from harness.metrics import group_accuracies, id_view, macro_f1, macro_recall, score, topk_accuracy

LOGITS = np.array(
    [
        [0.1, 0.9, 0.5, 0.0],  # ranking 1,2,0,3
        [0.8, 0.1, 0.2, 0.3],  # ranking 0,3,2,1
        [0.2, 0.2, 0.1, 0.0],  # tie: argmax 0, then 1
        [0.0, 0.1, 0.2, 0.3],  # ranking 3,2,1,0
    ],
    dtype=np.float32,
)


def test_topk_accuracy_by_hand():
    labels = np.array([2, 0, 1, 0])
    # ranks of the label: row0 label2 -> 1, row1 label0 -> 0, row2 label1 -> 1 (tie after 0), row3 -> 3
    assert topk_accuracy(LOGITS, labels, 1) == 0.25
    assert topk_accuracy(LOGITS, labels, 2) == 0.75
    assert topk_accuracy(LOGITS, labels, 4) == 1.0


def test_top1_tie_matches_argmax():
    labels = np.array([1, 0, 0, 3])
    assert topk_accuracy(LOGITS, labels, 1) == float(np.mean(LOGITS.argmax(1) == labels)) == 1.0


def test_topk_rejects_bad_input():
    with pytest.raises(ValueError, match="k <= number of classes"):
        topk_accuracy(LOGITS, np.zeros(4, int), 5)
    with pytest.raises(ValueError, match="labels must lie"):
        topk_accuracy(LOGITS, np.array([0, 0, 0, 4]), 1)
    bad = LOGITS.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        topk_accuracy(bad, np.zeros(4, int), 1)


def test_macro_f1_only_over_present_labels():
    labels = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 3])  # class 3 predicted but absent from labels: not averaged
    # class0: tp1 fp0 fn1 -> p1 r.5 f1 2/3 ; class1: tp2 fp1 fn0 -> p2/3 r1 f1 .8 ; class2: 0
    assert macro_f1(pred, labels) == pytest.approx((2 / 3 + 0.8 + 0.0) / 3)
    assert macro_recall(pred, labels) == pytest.approx((0.5 + 1 + 0) / 3)


def test_group_accuracies_excludes_and_skips_empty():
    pred = np.array([0, 1, 1, 0, 1, 1])
    labels = np.array([0, 1, 0, 0, 0, 1])
    groups = np.array(["Asia", "Asia", "Europe", "Europe", "Other", "Other"])
    accs, counts, worst = group_accuracies(pred, labels, groups, exclude=("Other",))
    assert accs == {"Asia": 1.0, "Europe": 0.5, "Other": 0.5}
    assert counts == {"Asia": 2, "Europe": 2, "Other": 2}
    assert worst == 0.5
    _, _, worst_without_exclusion = group_accuracies(
        pred[[0, 1, 4]], labels[[0, 1, 4]], groups[[0, 1, 4]], ()
    )
    assert worst_without_exclusion == 0.0
    # "Africa" has no examples: it is absent, not 0.0
    _, _, w = group_accuracies(pred[:2], labels[:2], groups[:2], exclude=("Other", "Africa"))
    assert w == 1.0
    with pytest.raises(ValueError, match="no group left"):
        group_accuracies(pred[4:], labels[4:], groups[4:], exclude=("Other",))


def _spec(**kw):
    base = dict(name="s", version="1", family="f", label_space="s", num_classes=4, expected_size=4)
    base.update(kw)
    return ShiftSpec(**base)


def test_score_projects_with_class_map():
    logits = np.zeros((3, 1000), np.float16)
    logits[0, 7] = 5  # target 1 via member 7
    logits[1, 3] = 4  # target 0 via its second member
    logits[1, 7] = 3
    logits[2, 500] = 9  # outside the map: ignored, falls to argmax over targets
    logits[2, 9] = 1
    cm = ClassMap("cm", "imagenet-1k", ("a", "b", "c"), ((2, 3), (7,), (9,)))
    spec = _spec(
        label_space="imagenet-1k", num_classes=3, class_map=cm, metrics=("top1", "top2", "top3")
    )
    preds = Predictions("m", "s", np.array(["k0", "k1", "k2"]), np.array([1, 0, 1]), logits)
    metrics, counts = score(preds, spec)
    # row 2 projects to (0, 0, 1): label 1 ranks behind target 2 and the tied lower index 0
    # softmax over the projected logits (0, 5, 0), (4, 3, 0), (0, 0, 1): confidences land in three
    # different bins, so ece averages |correct - confidence| per row
    c = [np.exp(5) / (np.exp(5) + 2), np.exp(4) / (np.exp(4) + np.exp(3) + 1), np.e / (np.e + 2)]
    nll = -(np.log(c[0]) + np.log(c[1]) + np.log(1 / (np.e + 2))) / 3
    assert metrics == {"top1": pytest.approx(2 / 3), "top2": pytest.approx(2 / 3), "top3": 1.0,
                       "ece": pytest.approx((1 - c[0] + 1 - c[1] + c[2]) / 3), "nll": pytest.approx(nll)}
    assert counts == {}


def test_score_refuses_wrong_width():
    preds = Predictions(
        "m", "iwildcam", np.array(["a"]), np.array([0]), np.zeros((1, 1000), np.float16)
    )
    with pytest.raises(ValueError, match="182"):
        score(preds, _spec(name="iwildcam", num_classes=182, metrics=("top1",)))
    cm = ClassMap.identity("r", "imagenet-1k", tuple("ab"))
    small = Predictions("m", "r", np.array(["a"]), np.array([0]), np.zeros((1, 2), np.float16))
    with pytest.raises(ValueError, match="imagenet-1k head"):
        score(small, _spec(label_space="imagenet-1k", num_classes=2, class_map=cm))


def test_score_wilds_style_metrics_with_groups():
    logits = np.eye(3, dtype=np.float16)[[0, 1, 1, 2, 0]]
    preds = Predictions(
        "m",
        "fmow",
        np.array(list("abcde")),
        np.array([0, 1, 0, 2, 1]),
        logits,
        meta={"region": np.array(["Asia", "Asia", "Europe", "Other", "Other"])},
    )
    spec = _spec(
        num_classes=3, metrics=("top1", "macro_f1", "acc:region", "worst_acc:region!Other")
    )
    metrics, counts = score(preds, spec)
    assert metrics["top1"] == pytest.approx(3 / 5)
    # class0: tp1 fp0 fn1 -> f1 2/3; class1: tp1 fp1 fn1 -> .5; class2: tp1 -> 1
    assert metrics["macro_f1"] == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert metrics["acc:region=Asia"] == 1.0 and metrics["acc:region=Europe"] == 0.0
    assert metrics["acc:region=Other"] == 0.5
    assert metrics["worst_acc:region!Other"] == 0.0
    assert counts == {"region=Asia": 2, "region=Europe": 1, "region=Other": 2}
    no_meta = Predictions("m", "fmow", preds.keys, preds.labels, preds.logits)
    with pytest.raises(ValueError, match="metadata column 'region'"):
        score(no_meta, spec)


def test_id_view_restricts_and_relabels():
    cm = ClassMap("r", "imagenet-1k", ("n1", "n5"), ((1,), (5,)))
    logits = np.arange(4 * 1000, dtype=np.float16).reshape(4, 1000)
    preds = Predictions(
        "m",
        "imagenet",
        np.array(["w0", "w1", "w5", "w9"]),
        np.array([0, 1, 5, 9]),
        logits,
        meta={"x": np.array([10, 11, 12, 13])},
    )
    view = id_view(preds, cm, id_view_setting("imagenet", "imagenet-r"))
    assert view.shift == "imagenet@imagenet-r"
    assert list(view.keys) == ["w1", "w5"]
    assert list(view.labels) == [0, 1]
    assert view.logits.shape == (2, 1000)
    assert list(view.meta["x"]) == [11, 12]
