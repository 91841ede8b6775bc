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


HOLD_REMOVING = """
import sys
from harness.files import file_lock
with file_lock(sys.argv[1], remove=True):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_a_removed_lock_file_passes_the_lock_to_its_waiter_and_is_gone_when_let_go(tmp_path):
    """``remove=True``: the holder deletes the file as it lets go; a process that was waiting on
    the deleted file locks the one now at the path, so a third can never hold it alongside."""
    path = tmp_path / "locks" / "shift.lock"
    first = subprocess.Popen([sys.executable, "-c", HOLD_REMOVING, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    second = None
    try:
        assert first.stdout.readline().strip() == "held"
        second = subprocess.Popen([sys.executable, "-c", HOLD_REMOVING, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        import time

        deadline = time.monotonic() + 60  # the second has opened the file and waits on it
        while not any(str(path) in link for link in _open_files(second.pid)) and time.monotonic() < deadline:
            time.sleep(0.02)
        first.communicate("\n", timeout=60)
        assert second.stdout.readline().strip() == "held"
        assert path.exists()  # the second's own file, not the one the first removed
        with pytest.raises(BlockingIOError):
            with file_lock(path, wait=False, remove=True):
                pass
    finally:
        if first.poll() is None:
            first.communicate("\n", timeout=60)
        if second is not None:
            second.communicate("\n", timeout=60)
    assert not path.exists()


def _open_files(pid: int) -> list[str]:
    import os

    folder = f"/proc/{pid}/fd"
    try:
        return [os.readlink(os.path.join(folder, fd)) for fd in os.listdir(folder)]
    except OSError:
        return []
