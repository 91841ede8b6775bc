"""Two real gloo processes under ``torchrun``: one rank's error stops both promptly, with its
message, and ranks that disagree on whether the image cache exists all decode."""

from __future__ import annotations

import os
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
RANK_CACHE_CLI = str(Path(__file__).parent / "rank_cache_cli.py")


def run_args(data: Path, run_dir: Path, *extra: str) -> list[str]:
    return toy_run_args(data, run_dir, "--device", "cpu", *extra)


def torchrun(script: str, args: list[str], env: dict[str, str], timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script, *args]
    start = time.perf_counter()
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", **env}, capture_output=True, text=True, timeout=timeout)
    return done, time.perf_counter() - start


@pytest.mark.slow
def test_one_ranks_error_stops_the_other_promptly_with_its_message(tmp_path, data):
    done, seconds = torchrun(RUN_CLI, run_args(data, tmp_path / "run", "--workers", "0", "--no-cache"), {"COLOUR_NET_FAIL_RANK": "1"})
    assert done.returncode != 0
    # rank 1 prints its own error; rank 0, which finished its share, names rank 1 and its error
    assert "shiftbench run: error: colour net cannot run on rank 1" in done.stderr
    assert "shiftbench run: error: rank 1 of 2 failed predicting colour:a | toy: ValueError: colour net cannot run on rank 1" in done.stderr
    assert seconds < 120  # gloo's own timeout would hold rank 0 for 30 minutes
    assert not RunDir(tmp_path / "run").predictions_path("colour:a", "toy").exists()


@pytest.mark.slow
def test_ranks_that_disagree_about_the_cache_all_decode(tmp_path, data):
    """Rank 0 finds a complete cache entry, rank 1 (another cache directory, as on another
    node) none. Cached rows and decoded images are sharded differently across ranks, so
    reading the cache on one rank only would predict some examples twice and others never."""
    caches = tmp_path / "caches"
    assert main(run_args(data, tmp_path / "seed", "--workers", "0", "--cache-dir", str(caches / "rank0"))) == 0
    assert list((caches / "rank0").glob("*.u8"))
    done, _ = torchrun(RANK_CACHE_CLI, run_args(data, tmp_path / "dist", "--workers", "2"), {"RANK_CACHE_ROOT": str(caches)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list((caches / "rank1").glob("*.u8"))  # distributed runs never write the cache
    dist, single = RunDir(tmp_path / "dist"), RunDir(tmp_path / "seed")
    for shift in ("toy", "toy-sub"):
        assert Predictions.load(dist.predictions_path("colour:a", shift)).sha256() == Predictions.load(single.predictions_path("colour:a", shift)).sha256()
    assert {r.provenance["source"] for r in dist.read_results()} == {"decode"}


def _decide(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from harness.engine.distributed import World

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    world = World(rank, 2)
    # rank 1 does not see a cell rank 0 finished (a shared directory lagging on its node)
    decided = world.from_main(["toy"] if rank == 0 else ["toy", "toy-sub"])
    Path(out, f"rank{rank}").write_text(",".join(decided))
    world.close()


@pytest.mark.slow
def test_rank_0s_view_of_the_run_directory_decides_for_every_rank(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_decide, args=(port, str(tmp_path)), nprocs=2, start_method="spawn")
    assert (tmp_path / "rank0").read_text() == (tmp_path / "rank1").read_text() == "toy"


@pytest.mark.slow
def test_a_torchrun_job_waits_for_a_cell_another_process_holds_then_finds_it_done(tmp_path, data):
    """The job's rank 0 takes the cell's lock for the job: while another process holds the
    cell, every rank waits (polling, so no collective times out); once that process has
    predicted and scored it, the job finds it done and neither predicts nor rewrites it."""
    run_dir = tmp_path / "run"
    args = run_args(data, run_dir, "--workers", "0", "--no-cache")
    log = tmp_path / "job.log"
    with RunDir(run_dir).cell_lock("colour:a", "toy-sub"):  # this process holds the OOD cell
        with open(log, "w") as out:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", RUN_CLI, *args]
            job = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 240
            while "another process holds this cell" not in log.read_text():
                assert job.poll() is None, f"the job ended without waiting for the cell:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"the job never waited for the cell:\n{log.read_text()[-3000:]}"
                time.sleep(0.5)
            assert main(args) == 0  # this process predicts and scores the cell (its own lock is re-entrant)
            written = RunDir(run_dir).predictions_path("colour:a", "toy-sub").stat().st_mtime_ns
        except BaseException:
            job.kill()
            raise
    assert job.wait(timeout=240) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "colour:a | toy-sub: done, skipped" in text and "colour:a | toy-sub: predicting" not in text
    assert RunDir(run_dir).predictions_path("colour:a", "toy-sub").stat().st_mtime_ns == written
    rows = RunDir(run_dir).read_results()
    assert sorted((r.model, r.setting) for r in rows) == sorted({(r.model, r.setting) for r in rows})
    assert any(r.setting == "toy-sub" for r in rows)


@pytest.mark.slow
def test_a_refused_torchrun_job_writes_nothing(tmp_path, data):
    """Every rank checks the plan before rank 0 opens the run directory."""
    import shutil

    shutil.rmtree(data / "toy")
    done, _ = torchrun(RUN_CLI, run_args(data, tmp_path / "run", "--workers", "0", "--no-cache"), {})
    assert done.returncode != 0
    assert "shiftbench run: error: toy is the ID reference of toy-sub and is evaluated with it" in done.stderr
    assert not (tmp_path / "run").exists()
