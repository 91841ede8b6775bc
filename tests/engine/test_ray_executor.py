"""``--executor ray``: each model's cells run as a Ray task; same numbers as a local run, resumable.

Ray is the optional ``ray`` extra, installed by the test extra so this runs in CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.engine.store import RunDir

ray = pytest.importorskip("ray", reason="the test extra installs ray; pip install -e '.[test]'")


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def run_args(data: Path, run_dir: Path, executor: str) -> list[str]:
    models = ["--model", "fake:a", "--model-arg", "num_classes=4", "--model-arg", "label_space=folder:images", "--model-arg", "seed=1",
              "--model", "fake:b", "--model-arg", "num_classes=4", "--model-arg", "label_space=folder:images", "--model-arg", "seed=2"]  # fmt: skip
    return ["run", *models, "--shifts", "folder", "--data-root", str(data), "--run-dir", str(run_dir),
            "--executor", executor, "--workers", "0", "--no-cache", "--no-progress"]  # fmt: skip


@pytest.mark.slow
def test_ray_cells_equal_local_cells_and_resume(tmp_path, ray_cluster):
    from shifts.fixtures import write_folder

    data = tmp_path / "images"
    write_folder(data, per_class=3)
    assert main(run_args(data, tmp_path / "local", "local")) == 0
    assert main(run_args(data, tmp_path / "ray", "ray")) == 0
    local, remote = RunDir(tmp_path / "local"), RunDir(tmp_path / "ray")
    key = lambda r: (r.model, r.setting)  # noqa: E731
    local_rows, ray_rows = sorted(local.read_results(), key=key), sorted(remote.read_results(), key=key)
    assert [key(r) for r in ray_rows] == [("fake:a", "folder"), ("fake:b", "folder")]
    for a, b in zip(local_rows, ray_rows, strict=True):
        assert (a.metrics, a.n, a.predictions_sha256) == (b.metrics, b.n, b.predictions_sha256)

    # Rerunning on Ray finds every cell done: nothing is predicted or rewritten.
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray" / "predictions").rglob("*.npz")}
    before = remote.results_path.read_bytes()
    assert main(run_args(data, tmp_path / "ray", "ray")) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert remote.results_path.read_bytes() == before


@pytest.mark.slow
def test_a_refused_ray_run_writes_nothing(tmp_path, ray_cluster, capsys):
    """One task checks every model before any task runs: a good model's cells are not written
    when another model of the run is refused."""
    from doubles import tree_state

    from shifts.fixtures import write_folder

    data = tmp_path / "images"
    write_folder(data, per_class=3)
    args = run_args(data, tmp_path / "ray", "ray")
    args[args.index("seed=2")] = "sed=2"
    assert main(args) == 2
    assert "model fake: unknown option 'sed'. Did you mean seed?" in capsys.readouterr().err
    assert tree_state(tmp_path / "ray") == {str(tmp_path / "ray"): "absent"}
