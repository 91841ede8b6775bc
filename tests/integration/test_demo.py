"""``shiftbench demo`` end to end, as CI runs it: the miniature datasets and tiny CLIP pair are
written, every workflow step runs through the real CLI, and the report and the site exist. The
trial bundle it makes is refused by validate and leaderboard unless they are asked to accept it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import socket
import tarfile

import pytest

from harness.cli import main

pytestmark = pytest.mark.slow

STEPS = ("check-data", "run", "wiseft", "soup", "report", "submit", "validate", "leaderboard")


def cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in args])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "shiftbench-demo"
    real = socket.socket.connect

    def connect(self, address):  # the demo needs no network: any connection fails it
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"the demo tried to reach {address}")
        return real(self, address)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHIFTBENCH_CACHE", str(root.parent / "cache"))
        mp.setattr(socket.socket, "connect", connect)
        status, out, err = cli("demo", root)
    assert status == 0, err[-3000:]
    return root, out


def test_the_demo_walks_every_step_and_ends_with_the_report_and_the_site(demo):
    root, out = demo
    typed = [line[2:] for line in out.splitlines() if line.startswith("$ shiftbench ")]
    assert [shlex.split(t)[1] for t in typed] == list(STEPS)
    assert (root / "report" / "report.pdf").read_bytes().startswith(b"%PDF")
    summary = json.loads((root / "report" / "summary.json").read_text())
    assert summary["fits"], "the report fitted no trend"
    assert (root / "site" / "index.html").is_file() and (root / "site" / "leaderboard.pdf").is_file()
    assert "Demo CLIP (random weights) [trial: incomplete data]" in (root / "site" / "leaderboard.md").read_text()
    assert str(root / "report" / "report.pdf") in out and str(root / "site" / "index.html") in out


def test_the_printed_commands_run_as_typed(demo):
    root, out = demo
    line = next(t for t in out.splitlines() if t.startswith("$ shiftbench validate"))
    argv = shlex.split(line)[2:]
    cwd = os.getcwd()
    os.chdir(root)
    try:
        status, text, _ = cli(*argv)
    finally:
        os.chdir(cwd)
    assert status == 0 and "OK" in text and "trial bundle" in text


def test_the_trial_bundle_is_marked_and_refused_unless_asked(demo):
    root, _ = demo
    bundle = root / "submissions" / "demo.tar.gz"
    with tarfile.open(bundle) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert manifest["incomplete"] is True
    require = ("--require", "imagenet,imagenetv2,imagenet-r")
    status, out, _ = cli("validate", bundle, "--data-root", root / "data", *require)
    assert status == 1 and "[incomplete]" in out and "--allow-incomplete" in out
    status, out, _ = cli("leaderboard", root / "submissions", "--out", root / "site-strict", "--data-root", root / "data", *require)
    assert status == 0 and "0 accepted, 1 rejected" in out
    assert "[incomplete]" in (root / "site-strict" / "leaderboard.md").read_text()


def test_submit_without_allow_incomplete_still_refuses_the_miniature_data(demo):
    root, _ = demo
    out = root / "submissions-strict" / "x.tar.gz"
    status, _, err = cli("submit", root / "runs" / "clip", "--card", root / "model.toml", "--out", out,
                         "--data-root", root / "data", "--require", "imagenet,imagenetv2,imagenet-r")
    assert status == 1 and "count-mismatch" in err and not out.exists()


def test_the_demo_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "something").write_text("mine")
    status, _, err = cli("demo", tmp_path)
    assert status == 2 and "not empty" in err and (tmp_path / "something").read_text() == "mine"
    (tmp_path / "demo.txt").write_text("a file")
    status, _, err = cli("demo", tmp_path / "demo.txt")
    assert status == 2 and err.strip().endswith(f"DIR {tmp_path / 'demo.txt'} exists and is not a folder; give a folder path")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.txt", "something"]
