"""One pairing rule (harness.pairing) and the report's placement of rows by it."""

import dataclasses

from report_rows import row

from harness.api import ShiftSpec, id_setting_of
from harness.pairing import id_candidates, pair
from reports.analysis import place


def test_the_spec_names_the_id_setting_and_pair_falls_back_to_the_full_id_set():
    base = dict(version="1", family="x", label_space="imagenet-1k", num_classes=3, expected_size=3)
    assert id_setting_of(ShiftSpec(name="imagenet", **base)) is None
    assert id_setting_of(ShiftSpec(name="v2", id_reference="imagenet", **base)) == "imagenet"
    assert id_setting_of(ShiftSpec(name="iwildcam", id_reference="iwildcam:id_test", **base)) == "iwildcam:id_test"
    assert id_candidates("imagenet@imagenet-r") == ("imagenet@imagenet-r", "imagenet")
    rows = {"imagenet": "ID", "imagenet-r": "OOD"}
    assert list(pair(rows, lambda s, _r: "imagenet@imagenet-r" if s == "imagenet-r" else None)) == [("OOD", "ID", True)]
    assert list(pair(rows, lambda s, _r: "imagenet@imagenet-r" if s == "imagenet-r" else None, fallback=False)) == []


def test_an_id_row_is_borrowed_from_another_input_only_when_exactly_one_has_it():
    ood = row("run:ood", "m", "folder:pets-ood", 0.5, 10, id_setting="folder:pets-id")
    id_a = row("run:a", "m", "folder:pets-id", 0.6, 10)
    id_b = row("run:b", "m", "folder:pets-id", 0.7, 10)
    points, dropped = place([ood, id_a], user_sources={"run:ood", "run:a"})
    assert [(p.shift, p.x_setting, p.x) for p in points] == [("folder:pets-ood", "folder:pets-id", 0.6)] and dropped == []
    # two inputs could lend it: which is meant is unknown, so nothing is borrowed and the row is listed
    points, dropped = place([ood, id_a, id_b], user_sources={"run:ood", "run:a", "run:b"})
    assert points == []
    assert {(d.source, d.reason) for d in dropped} == {("run:ood", "no-id-pair"), ("run:a", "no-ood-pair"), ("run:b", "no-ood-pair")}
    # bundled (non-user) sources never lend
    points, dropped = place([ood, id_a], user_sources={"run:ood"})
    assert points == [] and ("run:ood", "no-id-pair") in {(d.source, d.reason) for d in dropped}


def test_an_id_shift_for_a_setting_no_input_has_is_an_error(tmp_path):
    import pytest

    from reports.report import ReportConfig, run_report
    from reports.table import write_table

    path = tmp_path / "mine.csv.gz"
    write_table([row("me", "m", "folder:pets", 0.5, 10, id_setting=None)], path)
    with pytest.raises(ValueError, match=r"--id-shift names folder:cats, which no input row has; .*folder:pets"):
        run_report(ReportConfig(inputs=[path], testbed=False, id_shifts={"folder:cats": "imagenet"}, out=None, json=None))


def test_a_duplicate_row_is_listed_not_lost():
    rows = [row("a", "m", "imagenet", 0.7, 100), row("a", "m", "imagenet-sketch", 0.3, 100),
            row("a", "m", "imagenet-sketch", 0.4, 100)]
    points, dropped = place(rows)
    assert [(p.y) for p in points] == [0.4]
    assert [(d.setting, d.reason) for d in dropped] == [("imagenet-sketch", "duplicate")]


def test_an_id_row_is_never_borrowed_from_other_weights_of_the_same_name():
    """Two runs that each call their checkpoint ``m``: the OOD row of one borrowed the other's ID
    row by name alone, pairing two different models' accuracies in one point."""
    from reports.rows import with_model_tags

    def weighs(res, sha):
        res = with_model_tags(res, ["fine-tuned"])
        return dataclasses.replace(res, provenance={**res.provenance, "model": {**res.provenance["model"], "weights_sha256": sha}})

    ood = weighs(row("run:ood", "m", "folder:pets-ood", 0.5, 10, id_setting="imagenet"), "aa")
    other = weighs(row("run:a", "m", "imagenet", 0.6, 10), "bb")
    points, dropped = place([ood, other], user_sources={"run:ood", "run:a"})
    assert points == [] and ("run:ood", "no-id-pair") in {(d.source, d.reason) for d in dropped}
    same = weighs(row("run:a", "m", "imagenet", 0.6, 10), "aa")
    points, _ = place([ood, same], user_sources={"run:ood", "run:a"})
    assert [(p.shift, p.x) for p in points] == [("folder:pets-ood", 0.6)]
