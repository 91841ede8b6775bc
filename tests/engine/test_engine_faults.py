"""Faults mid-run: a full disk at each write, a corrupt image in a loader worker. Each is one
clear error, and nothing already written is lost or changed."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from doubles import ColourNet, get_shift, snapshot, toy_config, write_toy_data
from test_gpu_decode import PatchNet, baseline, write_folder_dataset

from harness import files
from harness.api import Predictions
from harness.config import RunConfig
from harness.engine import cache as cache_module
from harness.engine.run import Engine, ModelSource
from harness.engine.store import RunDir
from shifts.generic import ImageFolderShift


def config_for(tmp_path: Path, data: Path, **kw) -> RunConfig:
    return toy_config(data, **{"run_dir": str(tmp_path / "run"), "shifts": ("toy",), **kw})


def run(config: RunConfig, net: ColourNet, builds: list | None = None) -> None:
    def build():
        if builds is not None:
            builds.append(1)
        return net

    Engine(config, get_shift=get_shift).run([ModelSource(net.name, net.name, build)])


def test_a_full_disk_while_writing_results_keeps_the_old_rows_and_the_rerun_scores_from_disk(tmp_path, monkeypatch):
    data = write_toy_data(tmp_path / "data")
    config = config_for(tmp_path, data)
    run(config, ColourNet())
    results = tmp_path / "run" / "results.jsonl"
    before = results.read_text()
    real_fsync = os.fsync

    def full_for_results(fd):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if name.startswith(".results.jsonl.") and name.endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", full_for_results)
    with pytest.raises(ValueError, match=r"disk full while writing .*results.jsonl; free space and rerun \(completed work is kept\)"):
        run(config, ColourNet(name="second", bias=1.0))
    assert results.read_text() == before
    assert not list((tmp_path / "run").rglob("*.tmp"))

    monkeypatch.setattr(files.os, "fsync", real_fsync)  # space freed
    builds: list = []
    run(config, ColourNet(name="second", bias=1.0), builds)
    assert builds == []  # its predictions were complete on disk: scored, not recomputed
    rows = RunDir(tmp_path / "run").read_results()
    assert [(r.model, r.setting) for r in rows] == [("colour-net", "toy"), ("second", "toy")]
    assert results.read_text().startswith(before)


def test_a_full_disk_for_the_image_cache_runs_without_it(tmp_path, monkeypatch, capsys):
    data = write_toy_data(tmp_path / "data")
    cache_dir = tmp_path / "cache"

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module.os, "posix_fallocate", no_space)
    run(config_for(tmp_path, data, cache_dir=str(cache_dir)), ColourNet())
    row = RunDir(tmp_path / "run").read_results()[0]
    assert row.metrics == {"top1": 5 / 8, "top2": 6 / 8, "ece": 3 / 8, "nll": 45.0}
    assert row.provenance["cache"] == f"not written: cannot reserve 6,144 bytes in {cache_dir} (No space left on device)"
    assert "predicting without it" in capsys.readouterr().err
    assert list(cache_dir.iterdir()) == []


@pytest.mark.parametrize("decoder", ["pil", "torchvision"])
def test_a_corrupt_image_in_a_loader_worker_is_one_line_naming_the_file(tmp_path, decoder):
    data = write_folder_dataset(tmp_path / "photos")
    config = RunConfig(
        shifts=("folder",), data_root=str(data), run_dir=str(tmp_path / "run"), batch_size=4, workers=2,
        cache_dir=str(tmp_path / "cache"), progress=False, decoder=decoder,
    )  # fmt: skip
    net = PatchNet(f"folder:{data.name}")
    engine = Engine(config, get_shift=lambda name: ImageFolderShift())
    engine.run([ModelSource(net.name, net.name, lambda: net)])
    before = snapshot(tmp_path / "run")

    good = baseline(64, 48, 7)
    (data / "class1" / "zz_truncated.jpg").write_bytes(good[: len(good) // 2])
    other = PatchNet(f"folder:{data.name}", name="other")
    with pytest.raises(ValueError) as err:
        Engine(config, get_shift=lambda name: ImageFolderShift()).run([ModelSource(other.name, other.name, lambda: other)])
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    assert f"{data / 'class1' / 'zz_truncated.jpg'}: cannot decode image" in message
    assert snapshot(tmp_path / "run") == before
    # The failed pass published no cache entry and left no partial file.
    assert len(list((tmp_path / "cache").glob("*.u8"))) == 1
    assert not list((tmp_path / "cache").glob("*.tmp"))


@pytest.mark.parametrize("decoder", ["pil", "torchvision"])
def test_skip_bad_images_leaves_them_out_and_records_each_key(tmp_path, decoder):
    def evaluate(data: Path, run_dir: Path, **kw) -> Engine:
        config = RunConfig(
            shifts=("folder",), data_root=str(data), run_dir=str(run_dir), batch_size=4, workers=2,
            cache_dir=str(tmp_path / "cache"), progress=False, decoder=decoder, **kw,
        )  # fmt: skip
        net = PatchNet(f"folder:{data.name}")
        Engine(config, get_shift=lambda name: ImageFolderShift()).run([ModelSource(net.name, net.name, lambda: net)])

    clean = write_folder_dataset(tmp_path / "clean" / "photos")
    evaluate(clean, tmp_path / "reference")
    (reference,) = RunDir(tmp_path / "reference").read_results()

    data = write_folder_dataset(tmp_path / "photos")
    good = baseline(64, 48, 7)
    (data / "class1" / "zz_truncated.jpg").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"zz_truncated.jpg: cannot decode image.*--skip-bad-images") as err:
        evaluate(data, tmp_path / "run")
    assert str(err.value).count("--skip-bad-images") == 1  # the reader's advice, not repeated
    assert not (tmp_path / "run" / "results.jsonl").exists()

    evaluate(data, tmp_path / "run", skip_bad_images=True)
    (row,) = RunDir(tmp_path / "run").read_results()
    assert (row.n, row.n_expected) == (reference.n, reference.n + 1)
    assert row.provenance["skipped_images"] == 1
    assert row.provenance["skipped_keys"] == ["class1/zz_truncated.jpg"]
    assert row.metrics == reference.metrics  # the other images score exactly as without the bad one
    preds = Predictions.load(RunDir(tmp_path / "run").predictions_path("patch-net", "folder"))
    assert "class1/zz_truncated.jpg" not in preds.keys.tolist() and len(preds) == reference.n
