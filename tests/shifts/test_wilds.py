"""WILDS shifts: official splits, labels, group metadata and metrics, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from harness.api import Predictions
from harness.metrics import score
from shifts import fixtures
from shifts.wilds import Camelyon17, FMoW, IWildCam


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("wilds")
    fixtures.write_iwildcam(r)
    fixtures.write_fmow(r)
    fixtures.write_camelyon17(r)
    return r


def _preds(shift, root, split, pred, width):
    exs = list(shift.examples(root, split=split))
    logits = np.eye(width, dtype=np.float16)[pred]
    meta = {f: np.array([e.meta[f] for e in exs]) for f in shift.spec.group_by}
    return Predictions(
        "m",
        shift.spec.name,
        np.array([e.key for e in exs]),
        np.array([e.label for e in exs]),
        logits,
        meta,
    )


def test_iwildcam_splits_by_name(root):
    shift = IWildCam()
    test = shift.keys_and_labels(root)
    # rows 4..8 of the fixture table are the OOD test split
    assert [y for _, y in test] == [0, 3, 3, 24, 181]
    assert [k for k, _ in test] == [f"train/{8000 + i:04x}a1b2-{i}.jpg" for i in range(4, 9)]
    assert [y for _, y in shift.keys_and_labels(root, "id_test")] == [24]
    assert len(shift.keys_and_labels(root, "val")) == 2
    with pytest.raises(ValueError, match="splits"):
        shift.keys_and_labels(root, "ood_test")


def test_iwildcam_macro_f1_over_present_classes(root):
    shift = IWildCam()
    # labels 0, 3, 3, 24, 181; predict 0, 3, 24, 24, 5 (5 is absent from the labels)
    p = _preds(shift, root, "test", [0, 3, 24, 24, 5], 182)
    m, counts = score(p, shift.spec)
    # f1: class0 1; class3 p1 r.5 -> 2/3; class24 p.5 r1 -> 2/3; class181 0 -> mean over 4 classes
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3 + 0) / 4)
    assert m["macro_recall"] == pytest.approx((1 + 0.5 + 1 + 0) / 4)
    assert m["top1"] == pytest.approx(3 / 5)
    assert shift.classnames(root)[181] == "species 181"


def test_fmow_time_split_and_sequestered_rows(root):
    test = FMoW().keys_and_labels(root)
    # rows 6, 7, 9, 10, 11: test from 2016 on; rows 1 and 8 are seq but still count for the file number
    assert [k for k, _ in test] == [f"images/rgb_img_{i}.png" for i in (6, 7, 9, 10, 11)]
    # airport 0, zoo 61, dam 12, zoo 61, barn 6
    assert [y for _, y in test] == [0, 61, 12, 61, 6]
    assert FMoW().keys_and_labels(root, "val") == [("images/rgb_img_4.png", 6)]
    assert FMoW().keys_and_labels(root, "id_val") == [("images/rgb_img_3.png", 6)]
    assert FMoW().keys_and_labels(root, "id_test") == [("images/rgb_img_12.png", 0)]
    assert FMoW().keys_and_labels(root, "train") == [("images/rgb_img_0.png", 0)]


def test_fmow_worst_region_leaves_out_other(root):
    shift = FMoW()
    exs = list(shift.examples(root))
    assert [e.meta["region"] for e in exs] == ["Americas", "Americas", "Europe", "Other", "Oceania"]
    assert [e.meta["year"] for e in exs] == [14, 14, 15, 14, 15]
    # right on rows 6, 9, 11; wrong on 7 (Americas) and 10 (Other)
    p = _preds(shift, root, "test", [0, 0, 12, 0, 6], 62)
    m, counts = score(p, shift.spec)
    assert m["acc:region=Americas"] == 0.5 and m["acc:region=Other"] == 0.0
    assert m["worst_acc:region!Other"] == 0.5  # Other (0.0) excluded; Africa/Asia empty, not 0
    assert m["worst_acc:year"] == pytest.approx(1 / 3)  # 2016: rows 6, 7, 10 -> 1 of 3
    assert counts["region=Americas"] == 2 and "region=Asia" not in counts
    assert shift.spec.main_metric == "worst_acc:region!Other"


def test_camelyon_hospital_overrides_split_code_and_padded_patients(root):
    test = Camelyon17().keys_and_labels(root)
    assert sorted(test) == [
        ("patches/patient_021_node_3/patch_patient_021_node_3_x_128_y_192.png", 0),
        ("patches/patient_021_node_3/patch_patient_021_node_3_x_96_y_192.png", 1),
        ("patches/patient_039_node_1/patch_patient_039_node_1_x_64_y_64.png", 1),
    ]
    assert Camelyon17().keys_and_labels(root, "val") == [
        ("patches/patient_010_node_0/patch_patient_010_node_0_x_1000_y_2000.png", 0)
    ]
    assert len(Camelyon17().keys_and_labels(root, "train")) == 2
    assert len(Camelyon17().keys_and_labels(root, "id_val")) == 1


def test_missing_image_listed_in_metadata_is_named(tmp_path):
    fixtures.write_camelyon17(tmp_path)
    victim = (
        tmp_path
        / "camelyon17_v1.0/patches/patient_039_node_1/patch_patient_039_node_1_x_64_y_64.png"
    )
    victim.unlink()
    with pytest.raises(
        ValueError,
        match="patch_patient_039_node_1_x_64_y_64.png: image listed in the metadata is missing",
    ):
        Camelyon17().keys_and_labels(tmp_path)


def test_wilds_1000_way_model_without_map_is_refused(root):
    p = _preds(IWildCam(), root, "test", [0, 0, 0, 0, 0], 1000)
    with pytest.raises(ValueError, match="1000 classes but the shift has 182"):
        score(p, IWildCam.spec)
