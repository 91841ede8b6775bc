"""``shiftbench ensemble``: the mean of stored logits, scored like any model (views included)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from doubles import TOY_ITEMS, TOY_SUB_ITEMS, engine_flags, registered, write_toy_data

from harness.api import Predictions
from harness.cli import main
from harness.engine.run import rescore
from harness.engine.store import RunDir


@pytest.fixture
def run_dir(tmp_path: Path):
    with registered():
        data = write_toy_data(tmp_path / "data")
        run_dir = tmp_path / "run"
        args = ["run", "--model", "linear:zs", "--model", "linear:ft", "--shifts", "toy-sub"]
        assert main([*args, *engine_flags(data, run_dir)]) == 0
        yield run_dir


def stored_mean(store: RunDir, shift: str) -> np.ndarray:
    a, b = (Predictions.load(store.predictions_path(m, shift)) for m in ("linear:zs", "linear:ft"))
    assert list(a.keys) == list(b.keys)
    return (a.logits.astype(np.float32) + b.logits.astype(np.float32)) / 2


def test_ensemble_scores_the_mean_of_stored_logits_on_every_setting(run_dir):
    assert main(["ensemble", str(run_dir), "--members", "linear:zs,linear:ft", "--label", "ens"]) == 0
    store = RunDir(run_dir)
    rows = {r.setting: r for r in store.read_results() if r.model == "ens"}
    assert sorted(rows) == ["toy", "toy-sub", "toy@toy-sub"]

    # ID: 4-way top-1 of the mean logits over toy's labels.
    toy = stored_mean(store, "toy")
    labels = np.array([label for label, _ in TOY_ITEMS])
    assert rows["toy"].metrics["top1"] == pytest.approx(np.mean(toy.argmax(1) == labels))
    # ID view: toy images of classes 1 and 3 only, logits of those two classes, labels 1->0, 3->1.
    keep = np.isin(labels, [1, 3])
    view = toy[keep][:, [1, 3]]
    assert rows["toy@toy-sub"].n == int(keep.sum()) == 4
    assert rows["toy@toy-sub"].metrics["top1"] == pytest.approx(np.mean(view.argmax(1) == (labels[keep] == 3)))
    # OOD: the 4-way logits projected by max over each class's members (one member each here).
    sub = stored_mean(store, "toy-sub")[:, [1, 3]]
    sub_labels = np.array([label for label, _ in TOY_SUB_ITEMS])
    assert rows["toy-sub"].metrics["top1"] == pytest.approx(np.mean(sub.argmax(1) == sub_labels))
    assert rows["toy"].provenance["model"] == {
        "method": "ensemble", "members": ["linear:zs", "linear:ft"], "members_sha256": rows["toy"].provenance["model"]["members_sha256"]}  # fmt: skip

    # Rescoring the directory reproduces the ensemble's rows from its stored predictions.
    again = {r.setting: r.metrics for r in rescore(store) if r.model == "ens"}
    assert again == {s: r.metrics for s, r in rows.items()}


def test_default_name_and_rerun_replaces_rather_than_duplicates(run_dir):
    for _ in range(2):
        assert main(["ensemble", str(run_dir), "--members", "linear:zs,linear:ft"]) == 0
    names = [r.model for r in RunDir(run_dir).read_results()]
    assert names.count("ensemble(linear:zs+linear:ft)") == 3


@pytest.mark.parametrize(
    ("members", "message"),
    [("linear:zs", "at least two"), ("linear:zs,linear:zs", "at least two"), ("linear:zs,linear:nope", "no results for linear:nope")],
)
def test_bad_members_change_nothing(run_dir, capsys, members, message):
    before = (run_dir / "results.jsonl").read_bytes()
    assert main(["ensemble", str(run_dir), "--members", members]) == 2
    assert message in capsys.readouterr().err
    assert (run_dir / "results.jsonl").read_bytes() == before
