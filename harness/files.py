"""Publishing shared files and folders: a unique temp name, then one atomic rename.

Several processes may write the same path at once (two runs sharing an image cache or a run
directory, torchrun ranks, Ray tasks). Each writer gets its own temp name (pid + random), so
no writer truncates or renames another's half-written file, and readers see either the old
file or a complete new one. A failed writer removes its temp file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def temp_path(path: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """A sibling of ``path`` no other writer uses: ``.<name>.<pid>.<random><suffix>``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}{suffix}")


def storage_error(path: Path, exc: OSError) -> ValueError:
    """One line naming the file and the fix."""
    if exc.errno == errno.ENOSPC:
        return ValueError(f"disk full while writing {path}; free space and rerun (completed work is kept)")
    return ValueError(f"cannot write {path}: {exc.strerror or exc}; fix the path or permissions and rerun")


def missing_folders(path: str | os.PathLike) -> list[Path]:
    """The folders above ``path`` that do not exist yet, nearest first: what writing it creates."""
    return [p for p in Path(path).absolute().parents if not p.exists()]


def check_output(path: str | os.PathLike, what: str, folder: bool = False, example: str = "") -> None:
    """Refuse, before a command writes anything, an output path its write would fail on: a file
    where a folder is wanted (or the reverse, ``example`` naming a file to suggest inside it), or a
    file among the folders above it."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        such = f" such as {path / example}" if example else ""
        raise ValueError(f"{what} {path} exists and is not a folder; give a folder path" if folder
                         else f"{what} {path} is a folder; give a file path{such}")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{what} {path}: {parent} is a file, not a folder; give another path")
            return


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove ``folders`` (``missing_folders`` of a write that failed or was refused), nearest
    first, each only while empty: a refused command leaves no folder it made, and never removes
    what another process put there meanwhile. One already gone is passed over."""
    for folder in folders:
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            return


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", fsync: bool = True) -> Iterator[IO[Any]]:
    """``with atomic_file(p) as fh: fh.write(...)`` publishes ``p`` only if the block succeeds;
    otherwise neither its temp file nor the folders made for it are left."""
    path = Path(path)
    made = missing_folders(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, mode) as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        remove_empty_folders(made)
        raise storage_error(path, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        remove_empty_folders(made)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a unique temp file + fsync + rename."""
    with atomic_file(path, "w") as fh:
        fh.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path, "wb") as fh:
        fh.write(data)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, ours: Callable[[str], bool] = lambda name: True, what: str = "--out") -> Iterator[Path]:
    """Build a folder under a temp name and swap it into place when the block succeeds.

    A failure leaves ``path`` as it was (the old folder, or nothing) and no temp folder
    behind (nor a folder made for it). An existing ``path`` that is not a folder, or holds a
    name ``ours`` does not claim (someone else's files, which the swap would delete), is
    refused before anything is built."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path} exists and is not a folder; give a folder path")
    if path.is_dir():
        foreign = sorted(p.name for p in path.iterdir() if not ours(p.name))
        if foreign:
            raise ValueError(
                f"{what} {path} holds files this command did not write ({', '.join(foreign[:3])}); "
                "give a new or empty folder"
            )
    made = missing_folders(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path, ".building")
    tmp.mkdir()
    try:
        yield tmp
        replace_folder(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_empty_folders(made)
        raise


def replace_folder(new: Path, path: Path) -> None:
    """Put folder ``new`` at ``path``; an old folder there is moved aside, then removed."""
    old = None
    if path.exists():
        old = temp_path(path, ".old")
        path.rename(old)
    try:
        new.rename(path)
    except OSError:
        if old is not None:
            old.rename(path)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def file_stamp(path: str | os.PathLike) -> str:
    """A file's stat signature for identities that outlive the process (image cache keys, cell
    identities): size and modification time in ns, the quick check rsync and make use. Any
    rewrite moves the modification time; a copy that keeps times (``rsync -a``, ``cp -p``, a
    tar extracted again on another node) and a ``chmod`` keep it, so they keep their cells. The
    change time and inode would rerun every cell after each of those. Only a rewrite that puts
    both size and modification time back on purpose goes unseen."""
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


_HASHED: dict[tuple[str, int, int, int, int], str] = {}


def file_version(path: str | os.PathLike) -> tuple[str, int, int, int, int]:
    """(resolved path, inode, size, mtime, ctime): what a file's contents are remembered by for
    the process; a file rewritten or replaced has another."""
    st = os.stat(path)
    return str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Content hash of a file: a model's weights (what ``describe()`` records, names and cell
    identities derive from).

    Remembered for the process by (path, inode, size, mtime, ctime): a run or sweep plans its
    cells, builds its models and writes its records from one hash of each multi-GB file, and a
    rewritten or replaced file is hashed again."""
    key = file_version(path)
    if key not in _HASHED:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
        _HASHED[key] = h.hexdigest()
    return _HASHED[key]


_locks: dict[str, tuple[threading.RLock, list[Any]]] = {}
_locks_guard = threading.Lock()


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, wait: bool = True, remove: bool = False) -> Iterator[None]:
    """An exclusive lock on ``path`` across processes (``flock``), reentrant within one.

    Threads of one process queue on an ``RLock``; the first holder takes the ``flock``, so a
    function that holds the lock may call another that takes it again. ``wait=False`` raises
    ``BlockingIOError`` at once when another thread or process holds it. ``remove=True`` deletes
    the lock file as the last holder lets go (a folder that must end as it began, such as a data
    root); a waiter that then finds its file gone or replaced locks the file now at ``path``."""
    path = Path(path)
    key = os.path.realpath(path)
    with _locks_guard:
        rlock, state = _locks.setdefault(key, (threading.RLock(), [None, 0]))
    if not rlock.acquire(blocking=wait):
        raise BlockingIOError(f"{path} is locked by another thread")
    try:
        if state[1] == 0:
            state[0] = _flock(path, wait, remove)
        state[1] += 1
        try:
            yield
        finally:
            state[1] -= 1
            if state[1] == 0:
                if remove:
                    path.unlink(missing_ok=True)  # still held: no other process has it now
                fcntl.flock(state[0], fcntl.LOCK_UN)
                state[0].close()
                state[0] = None
    finally:
        rlock.release()


def _flock(path: Path, wait: bool, remove: bool) -> IO[Any]:
    """The open, ``flock``ed lock file at ``path`` (with ``remove``: the one still there)."""
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fh = open(path, "a")  # noqa: SIM115 - held, locked, until the lock is let go
        except FileNotFoundError:
            if remove:
                continue  # its emptied folder was removed by the holder before: make it again
            raise
        try:
            fcntl.flock(fh, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not remove or _same_file(fh, path):
                return fh
        except BaseException:
            fh.close()
            raise
        fh.close()  # the holder before removed this file as it let go


def _same_file(fh: IO[Any], path: Path) -> bool:
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fh.fileno())
    return (held.st_dev, held.st_ino) == (here.st_dev, here.st_ino)
