"""Never a silently wrong number: shared image caches, cell identity as content, recovery advice,
and ``score`` racing ``run`` (real second processes where the defect needs one)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from doubles import ColourNet, get_shift, toy_config, write_toy_data
from PIL import Image

from harness.api import Predictions
from harness.engine import cache as cache_module
from harness.engine.cache import ImageCache
from harness.engine.run import Engine, ModelSource, RunLog, rescore
from harness.engine.store import RunDir

ROOT = Path(__file__).resolve().parents[2]


class Events:
    """A RunLog stand-in that keeps every event (kind, message)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.log = RunLog()
        self.log.event = lambda kind, message="", **fields: self.seen.append((kind, message))  # type: ignore[method-assign]

    def kinds(self) -> list[str]:
        return [k for k, _ in self.seen]

    def messages(self, kind: str) -> list[str]:
        return [m for k, m in self.seen if k == kind]


def run(config, *sources: ModelSource, redo: bool = False) -> Events:
    events = Events()
    Engine(config, get_shift=get_shift, log=events.log, redo=redo).run(list(sources))
    return events


def colour(name: str = "colour-net", identity: str | None = None, bias: float = 0.0, builds: list | None = None) -> ModelSource:
    def build():
        if builds is not None:
            builds.append(name)
        return ColourNet(name=name, bias=bias)

    return ModelSource(name=name, identity=identity or name, build=build)


# -- the shared image cache ---------------------------------------------------------------


def test_two_writers_of_one_cache_entry_do_not_crash_each_other(tmp_path):
    cache = ImageCache(tmp_path)
    a, b = cache.writer("k", 2, 4), cache.writer("k", 2, 4)
    rows = np.ones((2, 3, 4, 4), np.uint8)
    a.put(np.arange(2), rows)
    b.put(np.arange(2), rows)
    assert a.commit()
    assert b.commit()  # both used <key>.u8.tmp: FileNotFoundError
    np.testing.assert_array_equal(cache.open("k", 2, 4), rows)


def test_a_second_writer_never_truncates_the_first_ones_rows(tmp_path):
    """The shared-cache race of two runs on one dataset: B opens the entry's temp file while A
    is mid-pass; A finishes and publishes; B dies. The entry must hold A's rows, not zeros
    (a later model read black images from it and scored 19% instead of 26%, exit 0)."""
    cache = ImageCache(tmp_path)
    rows = np.arange(4 * 3 * 4 * 4, dtype=np.uint8).reshape(4, 3, 4, 4) | 1  # no all-zero row
    a = cache.writer("k", 4, 4)
    a.put(np.arange(2), rows[:2])
    a.array.flush()  # as the kernel does with mapped pages at any time during a long pass
    b = cache.writer("k", 4, 4)  # truncated A's temp file when both used one name
    a.put(np.arange(2, 4), rows[2:])
    assert a.commit()
    b.abort()  # interrupted
    got = cache.open("k", 4, 4)
    assert got is not None
    np.testing.assert_array_equal(got, rows)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_a_cache_entry_that_differs_from_its_checksum_is_not_read(tmp_path):
    cache = ImageCache(tmp_path)
    w = cache.writer("k", 2, 4)
    w.put(np.arange(2), np.full((2, 3, 4, 4), 9, np.uint8))
    assert w.commit()
    data = tmp_path / "k.u8"
    raw = bytearray(data.read_bytes())
    raw[5] = 0  # a row zeroed behind the index's back
    data.write_bytes(bytes(raw))
    assert cache.open("k", 2, 4) is None
    (tmp_path / "k.json").write_text(json.dumps({"shape": [2, 3, 4, 4]}))  # an index without a checksum
    assert cache.open("k", 2, 4) is None


def test_a_cache_that_cannot_publish_never_fails_the_cell(tmp_path, monkeypatch):
    data = write_toy_data(tmp_path / "data")

    def disk_full(path, text):
        raise ValueError(f"disk full while writing {path}; free space and rerun (completed work is kept)")

    monkeypatch.setattr(cache_module, "atomic_write_text", disk_full)
    config = toy_config(data, run_dir=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"))
    run(config, colour())
    rows = RunDir(tmp_path / "run").read_results()
    assert {r.setting for r in rows} == {"toy", "toy@toy-sub", "toy-sub"}
    assert "publishing the entry" in rows[0].provenance["cache"]
    assert not [p for p in (tmp_path / "cache").iterdir() if p.suffix != ".u8"]  # no index: no entry


def test_two_saves_of_one_predictions_file_publish_one_of_them_whole(tmp_path, monkeypatch):
    """Both writers used ``<shift>.npz.tmp``: the second failed with a misleading error, and the
    file published could match neither writer."""
    import threading

    import harness.api as api

    real, gate = np.savez, threading.Barrier(2)

    def savez_then_wait(fh, **arrays):
        real(fh, **arrays)
        gate.wait(timeout=10)  # both have written their temp file before either renames it

    monkeypatch.setattr(api.np, "savez", savez_then_wait)
    keys, labels = np.array(["a", "b"]), np.array([0, 1])
    made = [Predictions("m", "s", keys, labels, np.full((2, 3), v, np.float16)) for v in (1.0, 2.0)]
    errors: list[BaseException] = []

    def save(p: Predictions) -> None:
        try:
            p.save(tmp_path / "s.npz")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(p,)) for p in made]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors, errors
    assert Predictions.load(tmp_path / "s.npz").sha256() in {p.sha256() for p in made}
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]


# -- cell identity is content -------------------------------------------------------------


def test_another_dataset_under_the_run_directory_reruns_its_cells_and_says_why(tmp_path):
    first = write_toy_data(tmp_path / "a")
    second = write_toy_data(tmp_path / "b")
    Image.new("RGB", (20, 16), (250, 0, 0)).save(next((second / "toy" / "0").iterdir()))  # another image, same keys
    config = toy_config(first, run_dir=str(tmp_path / "run"))
    run(config, colour())
    before = {r.setting: r for r in RunDir(tmp_path / "run").read_results()}
    events = run(toy_config(second, run_dir=str(tmp_path / "run")), colour())
    assert "model_skipped" not in events.kinds()  # was: "all cells done, skipped", old rows kept
    (why,) = [m for m in events.messages("cell_rerun") if "| toy:" in m]
    assert f"the data root ({first.resolve()} -> {second.resolve()})" in why
    after = RunDir(tmp_path / "run").read_results()
    assert len(after) == 3  # superseded, not duplicated
    assert {r.setting: r for r in after}["toy"].predictions_sha256 != before["toy"].predictions_sha256
    rescore(RunDir(tmp_path / "run"), spec_of=lambda name: get_shift(name).spec)  # and score works


def test_changed_labels_under_the_same_root_rerun_the_cell(tmp_path):
    data = write_toy_data(tmp_path / "data")
    config = toy_config(data, run_dir=str(tmp_path / "run"))
    run(config, colour())
    moved = next((data / "toy" / "0").iterdir())
    shutil.move(moved, data / "toy" / "1" / moved.name)  # relabelled: same count, same root
    events = run(config, colour())
    (why,) = [m for m in events.messages("cell_rerun") if "| toy:" in m]
    assert "the data (keys, labels or metadata read)" in why
    preds = Predictions.load(RunDir(tmp_path / "run").predictions_path("colour-net", "toy"))
    assert f"1/{moved.name}" in set(map(str, preds.keys))


def test_data_completed_after_an_allow_incomplete_run_is_scored_again(tmp_path):
    data = write_toy_data(tmp_path / "data", n_toy=6)
    run(toy_config(data, run_dir=str(tmp_path / "run"), allow_incomplete=True), colour())
    assert {r.setting: r.n for r in RunDir(tmp_path / "run").read_results()}["toy"] == 6
    write_toy_data(data)  # the rest arrives
    events = run(toy_config(data, run_dir=str(tmp_path / "run")), colour())
    (why,) = [m for m in events.messages("cell_rerun") if "| toy:" in m]
    assert "--allow-incomplete" in why and "the data (keys, labels or metadata read)" in why
    rows = {r.setting: r for r in RunDir(tmp_path / "run").read_results()}
    assert (rows["toy"].n, rows["toy"].n_expected, len(rows)) == (8, 8, 3)


def test_a_checkpoint_rewritten_in_place_reruns_with_the_new_weights(tmp_path):
    data = write_toy_data(tmp_path / "data")
    weights = tmp_path / "bias.json"

    def from_checkpoint() -> ModelSource:
        identity = json.dumps({"model": "colour:ckpt", "options": {"weights": str(weights)}}, sort_keys=True)
        return ModelSource("ckpt", identity, lambda: ColourNet(name="ckpt", bias=json.loads(weights.read_text())["bias"]))

    config = toy_config(data, run_dir=str(tmp_path / "run"))
    weights.write_text(json.dumps({"bias": 0.0}))
    run(config, from_checkpoint())
    assert "model_skipped" in run(config, from_checkpoint()).kinds()  # unchanged: nothing redone
    weights.write_text(json.dumps({"bias": 5.0}))  # same path, new contents
    events = run(config, from_checkpoint())
    assert any(f"the contents of {weights.resolve()}" in m for m in events.messages("cell_rerun"))
    rows = RunDir(tmp_path / "run").read_results()
    assert len(rows) == 3
    assert all(r.provenance["cell"]["weights_sha256"][str(weights.resolve())] for r in rows)
    preds = Predictions.load(RunDir(tmp_path / "run").predictions_path("ckpt", "toy"))
    assert float(preds.logits.max()) == 5.0  # the new weights' logits, not the old ones


def test_rerunning_a_name_with_other_options_supersedes_its_rows_and_score_still_works(tmp_path):
    data = write_toy_data(tmp_path / "data")
    config = toy_config(data, run_dir=str(tmp_path / "run"))
    run(config, colour(identity="colour bias=0"))
    events = run(config, colour(identity="colour bias=1", bias=1.0))
    assert any("the model's spec or options" in m for m in events.messages("cell_rerun"))
    rows = RunDir(tmp_path / "run").read_results()
    assert sorted(r.setting for r in rows) == ["toy", "toy-sub", "toy@toy-sub"]  # was: six rows, score failing
    rescore(RunDir(tmp_path / "run"), spec_of=lambda name: get_shift(name).spec)


def test_recovery_from_a_deleted_or_corrupt_predictions_file_leads_somewhere(tmp_path):
    data = write_toy_data(tmp_path / "data")
    config = toy_config(data, run_dir=str(tmp_path / "run"))
    store = RunDir(tmp_path / "run")
    spec_of = lambda name: get_shift(name).spec  # noqa: E731
    run(config, colour())
    store.predictions_path("colour-net", "toy").unlink()
    with pytest.raises(FileNotFoundError, match="rerun the `shiftbench run` command that made it"):
        rescore(store, spec_of=spec_of)
    events = run(config, colour())  # was: skipped because its rows exist
    assert any("predictions file is missing" in m for m in events.messages("cell_rerun"))
    rescore(store, spec_of=spec_of)
    store.predictions_path("colour-net", "toy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"--redo"):
        rescore(store, spec_of=spec_of)
    builds: list[str] = []
    events = run(config, colour(builds=builds), redo=True)
    assert builds and any("--redo" in m for m in events.messages("cell_rerun"))
    assert len(rescore(store, spec_of=spec_of)) == 3


# -- score during run -----------------------------------------------------------------------

APPEND_ROW = """
import sys
from harness.api import Result
from harness.engine.store import RunDir
row = Result(model="late", setting="toy", shift="toy", shift_version="1", n=8, n_expected=8, metrics={"top1": 0.5})
print("appending", flush=True)
RunDir(sys.argv[1]).append_results([row])
print("appended", flush=True)
"""


def test_score_while_a_run_appends_loses_no_row(tmp_path):
    """``score`` read results.jsonl outside the lock and rewrote it: a row another process
    appended meanwhile was gone, while that run printed it as new."""
    data = write_toy_data(tmp_path / "data")
    config = toy_config(data, run_dir=str(tmp_path / "run"))
    run(config, colour())
    store = RunDir(tmp_path / "run")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started: list[subprocess.Popen] = []
    from harness import metrics

    class SlowScorer:
        """Scores like harness.metrics; at the first row, another process appends a row."""

        def score(self, preds, spec):
            if not started:
                proc = subprocess.Popen([sys.executable, "-c", APPEND_ROW, str(store.path)], env=env, stdout=subprocess.PIPE, text=True)
                started.append(proc)
                assert proc.stdout.readline().strip() == "appending"
                time.sleep(1.0)  # unlocked, the append lands now, between score's read and write
            return metrics.score(preds, spec)

        def id_view(self, preds, class_map, setting):
            return metrics.id_view(preds, class_map, setting)

    rescore(store, scorer=SlowScorer(), spec_of=lambda name: get_shift(name).spec)
    (proc,) = started
    assert proc.wait(timeout=60) == 0
    assert [r.model for r in store.read_results()].count("late") == 1


def test_run_redo_on_the_command_line_predicts_again_and_keeps_one_row_per_setting(tmp_path, capsys):
    from doubles import engine_flags, registered

    from harness.cli import main

    with registered():
        data = write_toy_data(tmp_path / "data")
        argv = ["run", "--model", "colour:a", "--shifts", "toy-sub", *engine_flags(data, tmp_path / "run")]
        assert main(argv) == 0
        assert main(argv) == 0 and "all cells done, skipped" in capsys.readouterr().err
        assert main([*argv, "--redo"]) == 0
        err = capsys.readouterr().err
        assert "colour:a | toy: running again: --redo" in err and "predicting 8 images" in err
    assert len(RunDir(tmp_path / "run").read_results()) == 3


def test_a_killed_writer_leaves_no_reserved_entry_behind_and_a_live_one_keeps_its_own(tmp_path):
    """A run killed mid-pass left its temp file, reserved at the size of the whole split (7.5 GB
    for ImageNet val at 224 px), after every kill; the next writer now removes it, but never the
    temp file of a writer still running in another process."""
    script = (
        "import os, signal, sys, numpy as np\n"
        "from harness.engine.cache import ImageCache\n"
        "w = ImageCache(sys.argv[1]).writer(sys.argv[2], 4, 8)\n"
        "w.put(np.arange(2), np.ones((2, 3, 8, 8), np.uint8))\n"
        "print('ready', flush=True)\n"
        "if sys.argv[3] == 'die': os.kill(os.getpid(), signal.SIGKILL)\n"
        "sys.stdin.read()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    dead = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), "gone", "die"], stdout=subprocess.PIPE, env=env, text=True)
    assert dead.stdout.readline() == "ready\n"
    dead.wait()
    assert dead.returncode == -9
    (orphan,) = tmp_path.glob(".gone.u8.*.tmp")
    live = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), "busy", "live"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert live.stdout.readline() == "ready\n"
        assert not orphan.exists()  # removed by the next writer; was: kept forever
        (busy,) = tmp_path.glob(".busy.u8.*.tmp")
        writer = ImageCache(tmp_path).writer("mine", 4, 8)
        assert busy.exists()  # its writer is alive
        writer.abort()
    finally:
        live.communicate("")  # it exits without publishing: its temp file is an orphan now
    assert ImageCache(tmp_path).remove_orphans() == [busy]
    assert not list(tmp_path.glob(".*.tmp"))
