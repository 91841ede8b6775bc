"""``shiftbench run --id-shift ID``: a user shift's rows name their ID setting. The ID reference is
metadata of the rows, never of the predictions: adding or changing it rescores stored
predictions and predicts nothing; ``shiftbench score`` and later runs keep it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.api import ShiftSpec, id_setting_with
from harness.cli import main
from harness.engine.store import RunDir


@pytest.fixture
def pets(tmp_path: Path) -> Path:
    from shifts.fixtures import write_folder

    write_folder(tmp_path / "pets", per_class=2)
    return tmp_path / "pets"


def run_args(data: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["run", "--model", "fake:a", "--model-arg", "num_classes=4", "--model-arg", f"label_space=folder:{data.name}",
            "--shifts", "folder", "--data-root", str(data), "--run-dir", str(run_dir), "--workers", "0", "--no-cache",
            "--no-progress", "--json", *extra]  # fmt: skip


def events(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_adding_and_changing_id_shift_rescores_and_predicts_nothing(tmp_path, pets, capsys):
    run_dir = tmp_path / "run"
    assert main(run_args(pets, run_dir)) == 0
    first = events(capsys.readouterr().out)
    assert [e["event"] for e in first].count("cell_predicted") == 1
    (before,) = RunDir(run_dir).read_results()
    assert before.id_setting is None
    npz = RunDir(run_dir).predictions_path("fake:a", "folder")
    stamp = npz.stat().st_mtime_ns

    assert main(run_args(pets, run_dir, "--id-shift", "imagenet")) == 0
    second = events(capsys.readouterr().out)
    kinds = [e["event"] for e in second]
    assert "cell_start" not in kinds and "cell_predicted" not in kinds  # nothing predicted
    (rerun,) = [e for e in second if e["event"] == "cell_rerun"]
    assert "ID setting changes (none -> imagenet)" in rerun["reason"]
    assert "cell_reused" in kinds
    (row,) = RunDir(run_dir).read_results()
    assert row.id_setting == "imagenet"
    assert row.predictions_sha256 == before.predictions_sha256 and row.metrics == before.metrics
    assert row.provenance["config_hash"] == before.provenance["config_hash"]  # the cell's identity did not move
    assert npz.stat().st_mtime_ns == stamp
    assert RunDir(run_dir).read_config().id_shift == "imagenet"

    # a later run that names none keeps the directory's: all done, nothing rescored
    assert main(run_args(pets, run_dir)) == 0
    kinds = [e["event"] for e in events(capsys.readouterr().out)]
    assert "model_skipped" in kinds and "cell_rerun" not in kinds
    assert RunDir(run_dir).read_results()[0].id_setting == "imagenet"

    # another ID: rescored again, still from disk
    assert main(run_args(pets, run_dir, "--id-shift", "folder:pets-id")) == 0
    kinds = [e["event"] for e in events(capsys.readouterr().out)]
    assert "cell_predicted" not in kinds and "cell_reused" in kinds
    assert RunDir(run_dir).read_results()[0].id_setting == "folder:pets-id"
    assert npz.stat().st_mtime_ns == stamp

    # `shiftbench score` re-derives the rows and keeps the ID setting
    assert main(["score", str(run_dir), "--json"]) == 0
    (scored,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert scored["id_setting"] == "folder:pets-id"
    assert RunDir(run_dir).read_results()[0].id_setting == "folder:pets-id"


def test_id_shift_from_a_config_file(tmp_path, pets, capsys):
    config = tmp_path / "run.toml"
    config.write_text('[run]\nid-shift = "imagenet"\n')
    assert main([*run_args(pets, tmp_path / "run"), "--config", str(config)]) == 0
    capsys.readouterr()
    (row,) = RunDir(tmp_path / "run").read_results()
    assert row.id_setting == "imagenet"
    # the command line wins over the file
    assert main([*run_args(pets, tmp_path / "run"), "--config", str(config), "--id-shift", "folder:pets-id"]) == 0
    assert RunDir(tmp_path / "run").read_results()[0].id_setting == "folder:pets-id"


@pytest.mark.parametrize(("extra", "message"), [
    (("--id-shift", "folder:pets"), r"--id-shift folder:pets is the shift folder:pets itself; name the ID dataset"),
    (("--id-shift", "folder"), r"--id-shift folder is the shift folder:pets itself"),
    (("--id-shift", "wds"), r"--id-shift wds: a user dataset's setting is named after its folder, wds:<folder name>"),
    (("--id-shift", "imagnet"), r"--id-shift imagnet: Unknown shift 'imagnet'. Did you mean: imagenet"),
    (("--id-shift", "iwildcam:nope"), r"--id-shift iwildcam:nope: shift 'iwildcam' has no split 'nope'"),
    (("--id-shift", "folder=imagenet"), r"`shiftbench run` takes the ID setting alone .* SETTING=ID is the form of `shiftbench report --id-shift`"),
    (("--id-shift", "imagenet@imagenet-r"), r"not a same-class view"),
    (("--id-shift", "folder-unlabeled"), r"unlabelled images have no accuracy to pair with"),
    (("--unlabeled", "--id-shift", "imagenet"), r"no labelled folder or wds shift .*folder-unlabeled holds unlabelled images"),
])  # fmt: skip
def test_an_id_shift_that_cannot_apply_is_refused_and_changes_nothing(tmp_path, pets, capsys, extra, message):
    import re

    run_dir = tmp_path / "run"
    assert main(run_args(pets, run_dir, *extra)) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not run_dir.exists()


def test_an_id_shift_on_a_run_with_no_user_shift_names_the_flag_and_the_fix(tmp_path, capsys):
    from shifts.fixtures import write_imagenetv2

    write_imagenetv2(tmp_path / "data", "threshold-0.7")
    args = ["run", "--model", "fake:a", "--shifts", "imagenetv2-threshold-0.7", "--data-root", str(tmp_path / "data"),
            "--run-dir", str(tmp_path / "run"), "--id-shift", "imagenet"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--id-shift imagenet names the ID reference of a user dataset, but this run has no labelled folder or wds shift" in err
    assert "drop --id-shift" in err and "--shifts folder (or wds)" in err
    assert not (tmp_path / "run").exists()


def test_the_id_shift_applies_to_user_shifts_only():
    """In a run of several shifts, registered ones keep their own pairing."""
    user = ShiftSpec("folder:pets", "user", "user", "folder:pets", 4, 8)
    wds = ShiftSpec("wds:cars", "user", "user", "wds:cars", 4, 8)
    sketch = ShiftSpec("imagenet-sketch", "1", "imagenet", "imagenet-1k", 1000, 50_889, id_reference="imagenet")
    unlabeled = ShiftSpec("folder-unlabeled:x", "user", "user", "imagenet-1k", 1000, 8, protocol={"labels": "none"})
    assert id_setting_with(user, "imagenet") == "imagenet" and id_setting_with(wds, "imagenet") == "imagenet"
    assert id_setting_with(user, None) is None
    assert id_setting_with(sketch, "folder:pets-id") == "imagenet"
    assert id_setting_with(unlabeled, "imagenet") is None


def test_a_user_shift_with_a_class_map_is_refused():
    """Its ID reference would pair on its classes (``imagenet@<shift>``), which a run over the
    user dataset alone cannot score."""
    from harness.api import ClassMap
    from harness.config import RunConfig
    from harness.engine.run import check_id_shift

    mapped = ShiftSpec("folder:dogs", "user", "user", "imagenet-1k", 2, 8,
                       class_map=ClassMap("dogs", "imagenet-1k", ("a", "b"), ((151,), (207,))))
    assert id_setting_with(mapped, "imagenet") == "imagenet@folder:dogs"  # the rule of registered shifts
    config = RunConfig(shifts=("folder",), id_shift="imagenet", cache_dir="")
    with pytest.raises(ValueError, match=r"folder:dogs has a class map onto imagenet-1k, so it pairs with imagenet scored on "
                                         r"its classes.*`shiftbench report --id-shift folder:dogs=ID`"):
        check_id_shift(config, lambda name: mapped)
