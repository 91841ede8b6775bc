"""The engine end to end on the toy fixtures: plan, predict once, verify, score, resume."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from doubles import ColourNet, get_shift, snapshot, toy_config, write_toy_data

from harness.api import Predictions
from harness.config import RunConfig
from harness.engine.identity import cell_hash
from harness.engine.run import Engine, ModelSource, ScoreTask, plan_tasks, rescore
from harness.engine.store import RunDir


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_toy_data(tmp_path / "data")


def make_config(tmp_path: Path, data: Path, **kw) -> RunConfig:
    return toy_config(data, **{"run_dir": str(tmp_path / "run"), **kw})


def source(net: ColourNet, builds: list | None = None) -> ModelSource:
    def build():
        if builds is not None:
            builds.append(1)
        return net

    return ModelSource(name=net.name, identity=net.name, build=build)


def run(config: RunConfig, *sources: ModelSource) -> list[dict]:
    return Engine(config, get_shift=get_shift).run(list(sources))


def rows_by_setting(run_dir: Path) -> dict:
    return {r.setting: r for r in RunDir(run_dir).read_results()}


def test_plan_adds_the_id_reference_and_its_view_once():
    tasks = plan_tasks(["toy-sub", "toy"], lambda name: get_shift(name).spec)
    assert tasks == [ScoreTask("toy", "toy"), ScoreTask("toy@toy-sub", "toy", view_of="toy-sub"), ScoreTask("toy-sub", "toy-sub")]


def test_run_predicts_each_shift_once_and_scores_exact_numbers(tmp_path, data):
    net = ColourNet()
    summary = run(make_config(tmp_path, data), source(net))
    rows = rows_by_setting(tmp_path / "run")
    # ColourNet's logits are tens apart: top-1 confidences are 1 to float precision, so ece is the
    # error rate and nll the mean logit gap between the top class and the true one.
    # toy: correct at items 0, 2, 3, 4, 6 -> 5/8.
    # top2: item 1 (red 70) ties classes 0 and 2, the lower index ranks first -> in; items 5, 7 out.
    assert rows["toy"].metrics == {"top1": 5 / 8, "top2": 6 / 8, "ece": 3 / 8, "nll": 45.0}
    assert (rows["toy"].n, rows["toy"].n_expected) == (8, 8)
    # toy on toy-sub's classes: items 2, 3 (class 1), 6, 7 (class 3); item 7 (red 10) picks class 1 -> 3/4.
    assert rows["toy@toy-sub"].metrics == {"top1": 3 / 4, "ece": 1 / 4, "nll": 30.0}
    assert rows["toy@toy-sub"].n == 4
    assert rows["toy@toy-sub"].shift == "toy"
    # toy-sub: item 1 (label b) predicts toy class 3 = d, item 3 (label d) predicts class 1 = b -> 2/4.
    assert rows["toy-sub"].metrics == {"top1": 2 / 4, "ece": 2 / 4, "nll": 60.0}
    assert rows["toy-sub"].class_map == get_shift("toy-sub").spec.class_map.digest()
    assert rows["toy"].class_map is None
    # The ID shift was predicted once (8 images) although scored twice; batches of 3.
    assert sum(net.calls) == 8 + 4
    assert max(net.calls) == 3
    assert [s["status"] for s in summary] == ["new"] * 3

    preds = Predictions.load(RunDir(tmp_path / "run").predictions_path("colour-net", "toy"))
    assert preds.keys.tolist() == ["0/img00.png", "0/img01.png", "1/img02.png", "1/img03.png", "2/img04.png", "2/img05.png", "3/img06.png", "3/img07.png"]
    assert preds.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert preds.logits.dtype == np.float16 and preds.logits.shape == (8, 4)
    np.testing.assert_array_equal(preds.logits[0], [0, -60, -120, -180])
    np.testing.assert_array_equal(preds.logits[1], [-60, 0, -60, -120])
    assert preds.meta["colour_g"].tolist() == list(range(8))
    prov = rows["toy"].provenance
    assert rows["toy"].predictions_sha256 == preds.sha256() == rows["toy@toy-sub"].predictions_sha256
    assert prov["config_hash"] == cell_hash(prov["cell"])
    assert prov["cell"]["manifest"] and prov["cell"]["data_root"] == str(data.resolve())
    assert prov["precision"] == "fp32" and prov["batch_size"] == 3 and prov["source"] == "decode"
    # the engine, not the model, records where and how the forward ran
    assert prov["model"] == {"name": "colour-net", "label_space": "toy-4", "bias": 0.0, "precision": "fp32", "device": "cpu"}
    assert (prov["numerics"], prov["memory_format"], prov["fp16_top1_changed"]) == ("fp32", "contiguous", 0)


def test_rerun_skips_done_cells_without_loading_the_model(tmp_path, data):
    config = make_config(tmp_path, data)
    run(config, source(ColourNet()))
    before = (tmp_path / "run" / "results.jsonl").read_text()
    builds: list = []
    summary = run(config, source(ColourNet(), builds))
    assert builds == []
    assert [s["status"] for s in summary] == ["skipped"] * 3
    assert (tmp_path / "run" / "results.jsonl").read_text() == before


def test_adding_a_model_runs_only_its_cells(tmp_path, data):
    config = make_config(tmp_path, data)
    run(config, source(ColourNet()))
    other = ColourNet(name="shifted", bias=1.0)
    summary = run(config, source(ColourNet()), source(other))
    assert [s["status"] for s in summary] == ["skipped"] * 3 + ["new"] * 3
    assert len(RunDir(tmp_path / "run").read_results()) == 6


def test_predicted_but_unscored_cells_are_scored_from_disk(tmp_path, data):
    config = make_config(tmp_path, data)
    run(config, source(ColourNet()))
    results = tmp_path / "run" / "results.jsonl"
    expected = rows_by_setting(tmp_path / "run")
    results.unlink()
    builds: list = []
    run(config, source(ColourNet(), builds))
    assert builds == []
    assert {k: v.metrics for k, v in rows_by_setting(tmp_path / "run").items()} == {k: v.metrics for k, v in expected.items()}


def test_a_run_dir_from_another_configuration_is_refused(tmp_path, data):
    run(make_config(tmp_path, data), source(ColourNet()))
    before = snapshot(tmp_path / "run")
    builds: list = []
    with pytest.raises(ValueError, match=r"another configuration \(precision: 'fp32' -> 'bf16'\)"):
        run(make_config(tmp_path, data, precision="bf16"), source(ColourNet(name="other"), builds))
    assert builds == []
    assert snapshot(tmp_path / "run") == before


def test_incomplete_data_fails_before_the_model_is_loaded(tmp_path):
    data = write_toy_data(tmp_path / "data")
    run(make_config(tmp_path, data), source(ColourNet(name="earlier")))
    before = snapshot(tmp_path / "run")
    (data / "toy" / "3" / "img07.png").unlink()
    builds: list = []
    with pytest.raises(ValueError, match=r"shift 'toy' under .*: 7 examples in split 'test', expected 8"):
        run(make_config(tmp_path, data), source(ColourNet(), builds))
    assert builds == []
    assert snapshot(tmp_path / "run") == before
    assert not (tmp_path / "run" / "predictions" / "colour-net").exists()
    run(make_config(tmp_path, data, allow_incomplete=True), source(ColourNet()))
    rows = rows_by_setting(tmp_path / "run")
    assert (rows["toy"].n, rows["toy"].n_expected) == (7, 8)
    assert rows["toy"].metrics == {"top1": 5 / 7, "top2": 6 / 7, "ece": 2 / 7, "nll": pytest.approx(180 / 7)}  # item 7 (a miss) is the one absent


def test_a_model_with_another_label_space_is_refused_before_predicting(tmp_path, data):
    run(make_config(tmp_path, data), source(ColourNet()))
    before = snapshot(tmp_path / "run")
    net = ColourNet(name="imagenet-model", label_space="imagenet-1k")
    with pytest.raises(ValueError, match="outputs label space 'imagenet-1k' but shift 'toy' needs 'toy-4'"):
        run(make_config(tmp_path, data), source(net))
    assert net.calls == []
    narrow = ColourNet(name="narrow", num_classes=3)  # toy needs 4 outputs
    with pytest.raises(ValueError, match="model 'narrow' has 3 outputs but shift 'toy' needs at least 4"):
        run(make_config(tmp_path, data), source(narrow))
    assert narrow.calls == []
    assert snapshot(tmp_path / "run") == before


class NaNNet(ColourNet):
    def logits(self, images):
        out = super().logits(images)
        out[0, 2] = float("nan")
        return out


def test_nan_logits_fail_the_cell_and_keep_finished_cells(tmp_path, data):
    config = make_config(tmp_path, data, shifts=("toy",))
    run(config, source(ColourNet()))
    before = (tmp_path / "run" / "results.jsonl").read_text()
    files = snapshot(tmp_path / "run")
    with pytest.raises(ValueError, match=r"non-finite logit .* for example '0/img00.png'"):
        run(config, source(NaNNet(name="nan-net")))
    assert (tmp_path / "run" / "results.jsonl").read_text() == before
    assert snapshot(tmp_path / "run") == files


def test_full_disk_is_a_clear_error_that_loses_nothing(tmp_path, data, monkeypatch):
    config = make_config(tmp_path, data, shifts=("toy",))
    run(config, source(ColourNet()))
    before = (tmp_path / "run" / "results.jsonl").read_text()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    files = snapshot(tmp_path / "run")
    monkeypatch.setattr(np, "savez", no_space)
    with pytest.raises(ValueError, match="disk full while writing .*toy.npz; free space and rerun"):
        run(config, source(ColourNet(name="second")))
    assert (tmp_path / "run" / "results.jsonl").read_text() == before
    assert snapshot(tmp_path / "run") == files
    assert not list((tmp_path / "run").rglob("*.tmp"))


def test_rescore_rederives_rows_and_refuses_changed_predictions(tmp_path, data):
    config = make_config(tmp_path, data)
    run(config, source(ColourNet()))
    run_dir = RunDir(tmp_path / "run")
    good = run_dir.results_path.read_text()
    run_dir.results_path.write_text(good.replace('"top1": 0.625', '"top1": 0.9'))
    rows = rescore(run_dir, spec_of=lambda name: get_shift(name).spec)
    assert {r.setting: r.metrics["top1"] for r in rows} == {"toy": 5 / 8, "toy@toy-sub": 3 / 4, "toy-sub": 2 / 4}
    assert run_dir.results_path.read_text() == good

    path = run_dir.predictions_path("colour-net", "toy-sub")
    p = Predictions.load(path)
    p.logits[0, 0] = 5
    p.save(path)
    with pytest.raises(ValueError, match="changed since it was scored"):
        rescore(run_dir, spec_of=lambda name: get_shift(name).spec)


def test_two_decode_workers_decode_and_predict_each_example_exactly_once(tmp_path, data, monkeypatch):
    decodes = tmp_path / "decodes.log"
    monkeypatch.setenv("TOY_DECODE_LOG", str(decodes))
    one = ColourNet()
    run(make_config(tmp_path, data, shifts=("toy",)), source(one))
    two = ColourNet()
    run(make_config(tmp_path, data, shifts=("toy",), run_dir=str(tmp_path / "run2"), workers=2), source(two))
    a = Predictions.load(RunDir(tmp_path / "run").predictions_path("colour-net", "toy"))
    b = Predictions.load(RunDir(tmp_path / "run2").predictions_path("colour-net", "toy"))
    assert a.sha256() == b.sha256()
    assert sum(two.calls) == 8
    # Two runs, each decoding the 8 images once: no worker decoded another's share.
    assert sorted(decodes.read_text().split()) == sorted([f"img{i:02d}.png" for i in range(8)] * 2)


def test_readers_without_lazy_decoding_give_the_same_predictions(tmp_path, data):
    from doubles import EagerFolderShift

    def eager(name):
        shift = get_shift(name)
        return EagerFolderShift(shift.spec, shift.int_labels, shift.folder)

    config = make_config(tmp_path, data, workers=2)
    Engine(config, get_shift=eager).run([source(ColourNet())])
    run(make_config(tmp_path, data, run_dir=str(tmp_path / "lazy")), source(ColourNet()))
    for shift in ("toy", "toy-sub"):
        a = Predictions.load(RunDir(tmp_path / "run").predictions_path("colour-net", shift))
        b = Predictions.load(RunDir(tmp_path / "lazy").predictions_path("colour-net", shift))
        assert a.sha256() == b.sha256()


class AutocastSensitiveNet(ColourNet):
    """Predicts class 0 for everything under autocast: a model bf16 breaks."""

    def logits(self, images):
        out = super().logits(images)
        if torch.is_autocast_enabled("cpu"):
            out = torch.zeros_like(out)
            out[:, 0] = 1
        return out


def test_reduced_precision_is_checked_against_fp32_on_a_sample(tmp_path, data):
    run(make_config(tmp_path, data, shifts=("toy",), precision="bf16", agreement_sample=5), source(ColourNet()))
    prov = rows_by_setting(tmp_path / "run")["toy"].provenance
    assert prov["precision"] == "bf16"
    assert (prov["fp32_agreement"], prov["fp32_agreement_n"]) == (1.0, 5)

    config = make_config(tmp_path, data, shifts=("toy",), precision="bf16", run_dir=str(tmp_path / "r2"))
    # fp32 predicts items 0..4 as 0, 1, 1, 1, 2; autocast says 0 for all: 1 of 5 agree.
    with pytest.raises(ValueError, match="bf16 top-1 agrees with fp32 on only 1/5 sampled images"):
        run(dataclasses_replace(config, agreement_sample=5), source(AutocastSensitiveNet(name="fragile")))
    assert not (tmp_path / "r2" / "results.jsonl").exists()


def dataclasses_replace(config, **kw):
    import dataclasses

    return dataclasses.replace(config, **kw)


def test_config_json_records_the_union_of_models_and_shifts(tmp_path, data):
    run(make_config(tmp_path, data, shifts=("toy",), models=("a",)), source(ColourNet()))
    run(make_config(tmp_path, data, shifts=("toy-sub",), models=("b",)), source(ColourNet()))
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["config"]["shifts"] == ["toy", "toy-sub"]
    assert stored["config"]["models"] == ["a", "b"]


def test_second_model_reads_decoded_images_from_the_cache(tmp_path, data):
    config = make_config(tmp_path, data, shifts=("toy",), cache_dir=str(tmp_path / "cache"))
    run(config, source(ColourNet()))
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(entries) == 2 and entries[0].endswith(".json") and entries[1].endswith(".u8")
    assert (tmp_path / "cache" / entries[1]).stat().st_size == 8 * 3 * 16 * 16

    run(config, source(ColourNet(name="second", bias=2.0)))
    rows = {r.model: r for r in RunDir(tmp_path / "run").read_results()}
    assert rows["colour-net"].provenance["source"] == "decode"
    assert rows["second"].provenance["source"] == "cache"
    cached = Predictions.load(RunDir(tmp_path / "run").predictions_path("second", "toy"))
    np.testing.assert_array_equal(cached.logits[:, 0], [2, -58, -58, -58, -118, 2, -178, 2])
    assert rows["second"].metrics == rows["colour-net"].metrics


def test_progress_bars_show_images_per_second_and_eta_on_stderr(tmp_path, data, capsys):
    import re

    run(make_config(tmp_path, data, shifts=("toy",), progress=True), source(ColourNet()))
    captured = capsys.readouterr()
    # tqdm's bar: description, count, [elapsed<remaining (the ETA), rate in img/s]
    assert re.search(r"colour-net \| toy:\s+0%\|\s*\| 0/8 \[00:00<\?, \?img/s\]", captured.err)
    assert "img/s" not in captured.out
