"""``shiftbench run``/``score`` from the command line, a killed run resumed, and 2-process torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from doubles import toy_run_args

from harness.api import Predictions
from harness.cli import main
from harness.engine.store import RunDir

RUN_CLI = str(Path(__file__).parent / "run_cli.py")


def run_args(data: Path, run_dir: Path, *extra: str) -> list[str]:
    return toy_run_args(data, run_dir, "--workers", "0", "--no-cache", *extra)


def test_cli_run_prints_config_and_a_summary_table(tmp_path, data, capsys):
    assert main(run_args(data, tmp_path / "run")) == 0
    out, err = capsys.readouterr()
    assert "shiftbench run configuration (hash " in err
    assert "precision" in err
    lines = out.splitlines()
    assert lines[0].split() == ["model", "setting", "n", "top1", "top2", "ece", "nll", "img/s", "status"]
    assert lines[1].split()[:5] == ["colour:a", "toy", "8", "62.50", "75.00"]
    assert lines[2].split()[:4] == ["colour:a", "toy@toy-sub", "4", "75.00"]
    assert lines[3].split()[:4] == ["colour:a", "toy-sub", "4", "50.00"]

    assert main(run_args(data, tmp_path / "run")) == 0
    out, _ = capsys.readouterr()
    assert [line.split()[-1] for line in out.splitlines()[1:]] == ["skipped"] * 3


def test_cli_json_mode_writes_only_json_lines(tmp_path, data, capsys):
    assert main(run_args(data, tmp_path / "run", "--json")) == 0
    out, _ = capsys.readouterr()
    events = [json.loads(line) for line in out.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "config" and kinds[-1] == "summary"
    assert kinds.count("cell_predicted") == 2 and kinds.count("scored") == 3
    assert {r["setting"]: r["top1"] for r in events[-1]["rows"]} == {"toy": 0.625, "toy@toy-sub": 0.75, "toy-sub": 0.5}


def test_config_file_sits_between_defaults_and_the_command_line(tmp_path, data):
    cfg = tmp_path / "run.toml"
    cfg.write_text('[run]\nbatch-size = 3\nprecision = "bf16"\nseed = 7\n')
    assert main([*run_args(data, tmp_path / "run", "--config", str(cfg)), "--precision", "fp32"]) == 0
    prov = RunDir(tmp_path / "run").read_results()[0].provenance
    assert (prov["precision"], prov["seed"]) == ("fp32", 7)
    # --batch-size 2 on the command line beats the file's 3.
    assert prov["batch_size"] == 2


def test_cli_errors_are_one_line_with_exit_status_2(tmp_path, data, capsys):
    assert main(["run", "--model", "colour:a", "--shifts", "toy-sbu", "--data-root", str(data), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Did you mean: toy-sub" in err
    assert main(["run", "--model", "nope:a", "--shifts", "toy", "--data-root", str(data), "--run-dir", str(tmp_path / "r")]) == 2
    assert "Unknown model 'nope'" in capsys.readouterr().err


def test_cli_score_rederives_results(tmp_path, data, capsys):
    assert main(run_args(data, tmp_path / "run")) == 0
    capsys.readouterr()
    assert main(["score", str(tmp_path / "run"), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["setting"], r["metrics"]["top1"]) for r in rows] == [("toy", 0.625), ("toy@toy-sub", 0.75), ("toy-sub", 0.5)]


def _wait_for_lines(path: Path, count: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError("run did not reach the expected batch in time")


@pytest.mark.slow
def test_a_run_killed_mid_cell_resumes_with_only_the_missing_cells(tmp_path, data):
    run_dir = tmp_path / "run"
    calls = tmp_path / "calls.log"
    env = {**os.environ, "COLOUR_NET_LOG": str(calls), "COLOUR_NET_DELAY": "0.5", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, RUN_CLI, *run_args(data, run_dir)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # toy is 4 batches of 2; the 5th batch is toy-sub's first: kill the process inside it.
    _wait_for_lines(calls, 5, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = RunDir(run_dir)
    before = store.results_path.read_text()
    assert [r.setting for r in store.read_results()] == ["toy", "toy@toy-sub"]
    assert not store.predictions_path("colour:a", "toy-sub").exists()

    calls.unlink()
    env["COLOUR_NET_DELAY"] = "0"
    done = subprocess.run([sys.executable, RUN_CLI, *run_args(data, run_dir)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert calls.read_text().split() == ["2", "2"]  # only toy-sub's 4 images were predicted
    after = store.results_path.read_text()
    assert after.startswith(before)
    assert [r.setting for r in store.read_results()] == ["toy", "toy@toy-sub", "toy-sub"]
    assert store.read_results()[2].metrics == {"top1": 0.5, "ece": 0.5, "nll": 60.0}
    assert not list(run_dir.rglob("*.tmp"))


@pytest.mark.slow
def test_two_gloo_processes_split_a_shift_and_gather_it_exactly_once(tmp_path, data):
    calls = tmp_path / "calls.log"
    env = {**os.environ, "COLOUR_NET_LOG": str(calls), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", RUN_CLI, *run_args(data, tmp_path / "dist"), "--device", "cpu"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # Each rank took every other image: 4 + 2 per rank in batches of 2, 12 images in all.
    assert sorted(calls.read_text().split()) == ["2"] * 6
    assert main(run_args(data, tmp_path / "single")) == 0
    dist, single = RunDir(tmp_path / "dist"), RunDir(tmp_path / "single")
    for shift in ("toy", "toy-sub"):
        a = Predictions.load(dist.predictions_path("colour:a", shift))
        b = Predictions.load(single.predictions_path("colour:a", shift))
        assert a.sha256() == b.sha256()
    rows = dist.read_results()
    assert [r.setting for r in rows] == ["toy", "toy@toy-sub", "toy-sub"]
    assert rows[0].provenance["world_size"] == 2


def test_a_user_folder_is_complete_by_its_own_count(tmp_path):
    """``folder`` has no published size: its spec, completed from the data, says how many to expect."""
    from shifts.fixtures import write_folder

    data = tmp_path / "images"
    write_folder(data, per_class=2)
    run_dir = tmp_path / "run"
    args = ["run", "--model", "fake:a", "--model-arg", "num_classes=4", "--model-arg", "label_space=folder:images",
            "--shifts", "folder", "--data-root", str(data), "--run-dir", str(run_dir), "--workers", "0", "--no-cache", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    (row,) = RunDir(run_dir).read_results()
    assert (row.setting, row.n, row.n_expected) == ("folder", 8, 8)


def test_wiseft_endpoint_options_override_the_shared_model_args():
    from harness.config import RunConfig, model_entry

    zs = model_entry("m:zs", ["weights=zs.pt", "templates=t=1.txt"])
    config = RunConfig(models=(zs, model_entry("m:ft", [])), model_args=("config=tiny.json", "weights=shared.pt"), cache_dir="")
    assert config.model_specs() == [
        ("m:zs", {"config": "tiny.json", "weights": "zs.pt", "templates": "t=1.txt"}),
        ("m:ft", {"config": "tiny.json", "weights": "shared.pt"}),
    ]
    with pytest.raises(ValueError, match=r"option 'weights' must look like key=value"):
        RunConfig(models=(model_entry("m:ft", ["weights"]),), cache_dir="")


def test_wiseft_cells_hash_each_endpoints_own_options():
    from harness.engine.sweeps import wiseft_sources

    def identity(zs_options, ft_options):
        return wiseft_sources(("m:zs", zs_options), ("m:ft", ft_options), [0.5])[0].identity

    same = identity({"w": "a"}, {"w": "a"})
    assert same == identity({"w": "a"}, {"w": "a"})
    assert len({same, identity({"w": "a"}, {"w": "b"}), identity({"w": "a"}, {"w": "c"})}) == 3


def test_a_missing_id_reference_is_named_as_the_reference_of_the_shift_asked_for(tmp_path, data, capsys):
    import shutil

    shutil.rmtree(data / "toy")
    args = ["run", "--model", "colour:a", "--shifts", "toy-sub", "--data-root", str(data), "--run-dir", str(tmp_path / "r"), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("shiftbench run: error: toy is the ID reference of toy-sub and is evaluated with it: ")
    assert str(data / "toy") in err
