"""Bounded stress: four ``shiftbench run`` processes (two models x two data sets) share one image
cache and one run directory while ``shiftbench score`` rescores it in a loop; the final
results.jsonl holds exactly the rows one sequential run of the same commands writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from doubles import registered, write_toy_data

from harness.cli import main
from harness.engine.store import RunDir

RUN_CLI = str(Path(__file__).parent / "run_cli.py")
# What says how a row was computed this time (timing, cache hit or decode), not what it is.
VOLATILE = ("elapsed_s", "images_per_s", "source", "cache")


def commands(data: Path, run_dir: Path, cache: Path) -> list[list[str]]:
    common = ["--data-root", str(data), "--run-dir", str(run_dir), "--cache-dir", str(cache), "--workers", "0", "--batch-size", "1", "--no-progress"]
    models = (["--model", "colour:a"], ["--model", "colour:b", "--model-arg", "bias=0.5"])
    return [["run", *m, "--shifts", shift, *common] for m in models for shift in ("toy", "toy-heldout")]


def stable_rows(run_dir: Path) -> list[str]:
    rows = []
    for row in RunDir(run_dir).read_results():
        d = json.loads(row.to_json())
        for key in VOLATILE:
            d["provenance"].pop(key, None)
        rows.append(json.dumps(d, sort_keys=True))
    return sorted(rows)


def test_four_runs_and_score_in_a_loop_equal_a_sequential_run(tmp_path):
    data = write_toy_data(tmp_path / "data")
    env = {**os.environ, "COLOUR_NET_DELAY": "0.02", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, RUN_CLI, *cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd in commands(data, run_dir, cache)]  # fmt: skip
    scores = []
    while any(p.poll() is None for p in procs):
        scores.append(subprocess.run([sys.executable, RUN_CLI, "score", str(run_dir)], env=env, capture_output=True, text=True))
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert " new" in out  # each cell was computed by the process that asked for it
    for s in scores:  # a score either rescored every row or found none yet
        assert s.returncode == 0 or "no results to score" in s.stderr, s.stderr
    final = subprocess.run([sys.executable, RUN_CLI, "score", str(run_dir)], env=env, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr

    with registered():
        for cmd in commands(data, tmp_path / "sequential", tmp_path / "cache-seq"):
            assert main(cmd) == 0
    assert len(stable_rows(run_dir)) == 4
    assert stable_rows(run_dir) == stable_rows(tmp_path / "sequential")
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) == 4 and all(not n.startswith(".") for n in entries)  # two datasets, .u8 + .json each, no temp left
    assert not list(run_dir.rglob("*.tmp"))
