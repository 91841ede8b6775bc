"""``file_lock``: exclusive across processes, re-entrant within one, and ``wait=False`` refuses
at once when another process or thread holds it."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from harness.files import file_lock

HOLD = """
import sys, time
from harness.files import file_lock
with file_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_wait_false_refuses_while_another_process_holds_the_lock(tmp_path):
    path = tmp_path / "cell.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BlockingIOError):
            with file_lock(path, wait=False):
                pass
    finally:
        holder.communicate("\n", timeout=60)
    with file_lock(path, wait=False):  # free again
        with file_lock(path, wait=False):  # and re-entrant in the thread that holds it
            pass


def test_wait_false_refuses_while_another_thread_holds_the_lock(tmp_path):
    path = tmp_path / "cell.lock"
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with file_lock(path):
            held.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(30)
        with pytest.raises(BlockingIOError):
            with file_lock(path, wait=False):
                pass
    finally:
        release.set()
        t.join()
