"""Fetch a file over HTTP(S) resumably and verify it; extract an archive without trusting it.

:func:`fetch` writes ``<dest>.part`` and resumes it with an HTTP Range request after an
interruption (in the same call, a few times, and in a later call); the finished file is renamed
into place only after its sha256 matched. A mismatch removes the file and names both digests. A
server answering an error status or a web page instead of a file, a dropped connection and a
full disk each stop with an error that says what to do; only the bytes a rerun resumes from
(``<dest>.part``) outlive a failed call, never a folder or note it made for nothing.

:func:`safe_extract` unpacks a tar (any compression) or zip into an empty staging folder,
refusing absolute names, ``..``, links, devices and FIFOs before anything is written.
"""

from __future__ import annotations

import errno
import hashlib
import shutil
import stat
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from harness.files import missing_folders, remove_empty_folders
from reports.safe_archive import BundleError, _kind, check_member_name

CHUNK = 1 << 20
USER_AGENT = "shiftbench-download"


class DownloadError(Exception):
    """A download or extraction that could not complete; the message says what to do."""


class ChecksumMismatch(DownloadError):
    def __init__(self, message: str, expected: str, actual: str) -> None:
        super().__init__(message)
        self.expected, self.actual = expected, actual


def sha256_file(path: Path, progress: Callable[[int], None] | None = None, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm, usedforsecurity=False) if algorithm == "md5" else hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            if progress:
                progress(len(chunk))
    return h.hexdigest()


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


class Progress:
    """Bytes done, bytes/s and ETA on one stderr line (redrawn at most a few times a second)."""

    def __init__(self, label: str, total: int | None, done: int = 0, enabled: bool = True) -> None:
        self.label, self.total, self.done, self.enabled = label, total, done, enabled
        self.start_done, self.t0, self.last = done, time.monotonic(), 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self.last >= 0.25:
            self.last = now
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        rate = (self.done - self.start_done) / max(now - self.t0, 1e-6)
        text = f"{self.label}: {_fmt_bytes(self.done)}"
        if self.total:
            text += f" of {_fmt_bytes(self.total)} ({100 * self.done / self.total:.0f}%)"
        text += f", {_fmt_bytes(rate)}/s"
        if self.total and rate > 0 and self.done < self.total:
            eta = int((self.total - self.done) / rate)
            text += f", ETA {eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}"
        return text

    def _draw(self, now: float) -> None:
        print("\r" + self.line(now), end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled:
            print("\r" + self.line(), file=sys.stderr, flush=True)


def _looks_like_html(head: bytes) -> bool:
    start = head.lstrip()[:200].lower()
    return start.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in start


def _open(url: str, offset: int, timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (http/https only, checked)


def fetch(
    url: str,
    dest: Path,
    sha256: str | None,
    size: int | None = None,
    *,
    size_exact: bool = True,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
) -> str:
    """Download ``url`` to ``dest`` (resuming ``dest.part``) and return its sha256.

    With ``sha256`` the file must match it; without, the digest is returned for the caller to
    record. ``size`` (exact or approximate) drives the progress line and the free-space check."""
    if not url.startswith(("http://", "https://")):
        raise DownloadError(f"{url}: only http:// and https:// URLs can be downloaded")
    dest = Path(dest)
    made = missing_folders(dest)
    part = dest.with_name(dest.name + ".part")
    origin = dest.with_name(dest.name + ".part.url")
    try:
        return _fetch(url, dest, part, origin, sha256, size, size_exact, retries, timeout, progress)
    except BaseException:
        if not part.exists():  # nothing to resume from: leave no note and no folder behind
            origin.unlink(missing_ok=True)
            remove_empty_folders(made)
        raise


def _fetch(url: str, dest: Path, part: Path, origin: Path, sha256: str | None, size: int | None,
           size_exact: bool, retries: int, timeout: float, progress: bool) -> str:
    if part.exists() and (not origin.is_file() or origin.read_text() != url):
        part.unlink()  # a partial from another server: not resumed from this one
    for tries in range(10):  # a shared folder another command removes once it finds it empty
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            origin.write_text(url)  # the folder is not empty from here on
            break
        except FileNotFoundError:
            if tries == 9:
                raise
    attempt = 0
    total = size
    hasher = _PrefixHash()
    while True:
        offset = part.stat().st_size if part.exists() else 0
        if size and size_exact and offset > size:
            part.unlink()  # longer than the archive can be: not a prefix of it
            offset = 0
        try:
            total = _download_into(url, part, offset, size, size_exact, timeout, progress, dest.name, hasher)
            break
        except _Dropped as exc:
            attempt += 1
            if attempt > retries:
                got = part.stat().st_size if part.exists() else 0
                raise DownloadError(
                    f"{url}: connection dropped after {_fmt_bytes(got)} ({exc.reason}); the partial file "
                    f"{part} is kept: rerun the same command to resume from there"
                ) from None
            print(f"{dest.name}: connection dropped ({exc.reason}); resuming", file=sys.stderr)
            time.sleep(min(2.0**attempt / 4, 5.0))
    got = part.stat().st_size
    if total is not None and size_exact and got != total:
        raise DownloadError(
            f"{url}: received {got} bytes but the server announced {total}; the partial file "
            f"{part} is kept: rerun to resume"
        )
    hasher.sync(part, got)
    digest = hasher.hexdigest()
    if sha256 is not None and digest != sha256:
        part.unlink()
        raise ChecksumMismatch(
            f"{dest.name} from {url}: sha256 {digest} does not match the expected {sha256}; "
            "the file was removed, nothing was extracted. A changed or damaged copy on the "
            "server, or a proxy rewriting it: try --mirror, or fetch it elsewhere and pass --archive",
            sha256,
            digest,
        )
    part.replace(dest)
    origin.unlink(missing_ok=True)
    return digest


class _PrefixHash:
    """The sha256 of a growing file's first ``n`` bytes, fed as they are written, so the finished
    download is not read again; ``sync`` re-reads the prefix only when a resume starts elsewhere."""

    def __init__(self) -> None:
        self.h, self.n = hashlib.sha256(), 0

    def sync(self, part: Path, offset: int) -> None:
        if self.n == offset:
            return
        self.h, self.n = hashlib.sha256(), 0
        if offset:
            with open(part, "rb") as fh:
                while self.n < offset and (chunk := fh.read(min(CHUNK, offset - self.n))):
                    self.update(chunk)

    def update(self, chunk: bytes) -> None:
        self.h.update(chunk)
        self.n += len(chunk)

    def hexdigest(self) -> str:
        return self.h.hexdigest()


class _Dropped(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _download_into(
    url: str,
    part: Path,
    offset: int,
    size: int | None,
    size_exact: bool,
    timeout: float,
    progress: bool,
    label: str,
    hasher: _PrefixHash,
) -> int | None:
    """Append the rest of ``url`` to ``part``; the total size when the server says it."""
    try:
        resp = _open(url, offset, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to send: the partial file is complete
            return offset
        hint = " (the link may have moved: try --mirror, or --archive with a copy fetched elsewhere)"
        raise DownloadError(f"{url}: the server answered HTTP {exc.code} {exc.reason}{hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if offset:
            raise _Dropped(str(reason)) from None
        raise DownloadError(f"{url}: cannot connect ({reason}); check the network or use --mirror") from None
    with resp:
        status = resp.status
        ctype = resp.headers.get("Content-Type", "")
        if status == 206:
            start = _range_start(resp.headers.get("Content-Range", ""))
            if start != offset:
                raise DownloadError(f"{url}: the server resumed at byte {start}, not {offset}; delete {part} and retry")
        elif offset:
            offset = 0  # the server ignored Range: start over
        length = resp.headers.get("Content-Length")
        announced = offset + int(length) if length and length.isdigit() else None
        # the published size stands in when the server announces none, but only an exact one
        # can tell a short stream from a finished one
        total = announced if announced is not None else (size if size_exact else None)
        first = resp.read(min(CHUNK, 4096))
        if not offset and ("text/html" in ctype.lower() or _looks_like_html(first)):
            raise DownloadError(
                f"{url}: the server answered with a web page (HTML), not the archive; the link may "
                "need a login or confirmation, or has moved: download it in a browser and pass "
                "--archive FILE, or use --mirror"
            )
        if size and size_exact and total is not None and total != size:
            raise DownloadError(
                f"{url}: the server offers {total} bytes but the published archive has {size}; "
                "it is not the expected file: try --mirror, or --archive with a copy fetched elsewhere"
            )
        if (total or size) and not offset:
            check_space(part.parent, total or size)
        bar = Progress(label, total or size or None, offset, enabled=progress)
        hasher.sync(part, offset)
        mode = "ab" if offset else "wb"
        try:
            with open(part, mode) as out:
                chunk = first
                while chunk:
                    _write(out, chunk, part)
                    hasher.update(chunk)
                    bar.update(len(chunk))
                    try:
                        chunk = resp.read(CHUNK)
                    except (OSError, ValueError) as exc:  # IncompleteRead, reset, timeout
                        raise _Dropped(type(exc).__name__ + (f": {exc}" if str(exc) else "")) from None
        finally:
            bar.close()
        got = part.stat().st_size
        if total is not None and got < total:
            raise _Dropped(f"stream ended at {got} of {total} bytes")
        return total


def _write(out, chunk: bytes, part: Path) -> None:
    try:
        out.write(chunk)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DownloadError(
                f"{part}: the disk is full; free space (the partial file is kept) and rerun to resume"
            ) from None
        raise


def check_space(folder: Path, need: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < need:
        raise DownloadError(
            f"{folder}: {_fmt_bytes(free)} free, but the download needs {_fmt_bytes(need)} "
            "(and extracting needs as much again); free space or choose another --data-root"
        )


def _range_start(content_range: str) -> int:
    try:  # "bytes START-END/TOTAL"
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return -1


# -- extraction -------------------------------------------------------------------------------


def _member_path(name: str, source: str) -> str | None:
    """The member's path below the archive root (``./`` dropped), or None for the root itself."""
    try:
        name = check_member_name(name, source)
    except BundleError as exc:
        raise DownloadError(str(exc)) from None
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    return name or None


def _place(dest: Path, rel: str | None, is_dir: bool, open_member: Callable) -> bool:
    """Write one checked member below ``dest``; True when it was a file."""
    if rel is None:
        return False
    target = dest / rel
    if is_dir:
        target.mkdir(parents=True, exist_ok=True)
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    with open_member() as src, open(target, "xb") as out:
        while chunk := src.read(CHUNK):
            _write(out, chunk, target)
    return True


def safe_extract(archive: Path, dest: Path, password: str | None = None, progress: bool = True) -> int:
    """Extract a tar or zip into the empty folder ``dest``; the number of files written.

    Every member is checked before it is written: names stay inside ``dest`` and only plain
    files and folders are accepted, so a hostile archive fails before it can place anything."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise DownloadError(f"{dest}: extraction folder is not empty")
    if zipfile.is_zipfile(archive):
        return _extract_zip(archive, dest, password, progress)
    try:
        header = type("Header", (_HeaderSeen,), {"last": b""})  # this archive's own record
        tar = tarfile.open(archive, mode="r:*", tarinfo=header)
    except (tarfile.TarError, OSError) as exc:
        raise DownloadError(
            f"{archive}: not a readable tar or zip archive ({' '.join(str(exc).split())}); a damaged or truncated "
            "copy: fetch it again"
        ) from None
    n = 0
    with open(archive, "rb") as fh:
        plain = fh.read(2) not in (b"\x1f\x8b", b"BZ", b"\xfd7")  # gzip, bzip2, xz magic
    total = archive.stat().st_size if plain else None  # a compressed tar's inflated size is unknown
    bar = Progress(f"extracting {archive.name}", total, enabled=progress)
    try:
        with tar:
            for member in tar:
                rel = _member_path(member.name, str(archive))
                why = _kind(member)
                if why:
                    raise DownloadError(
                        f"{archive}: member {member.name!r} {why}; archives may hold only plain files and folders, refused"
                    )
                if _place(dest, rel, member.isdir(), lambda m=member: tar.extractfile(m)):
                    n += 1
                    bar.update(member.size)
        if len(header.last) != tarfile.BLOCKSIZE or header.last.strip(b"\0"):
            raise DownloadError(
                f"{archive}: the archive is damaged (after {n} files it ends, or has a damaged header, "
                "where tar's end-of-archive block belongs: a truncated or corrupt copy); fetch it again"
            )
    except FileExistsError:
        raise DownloadError(f"{archive}: a member appears twice; refused") from None
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DownloadError(f"{archive}: the archive is damaged ({type(exc).__name__}: {exc})") from None
    finally:
        bar.close()
    return n


class _HeaderSeen(tarfile.TarInfo):
    """Keeps the last header block ``tarfile`` read. ``tarfile`` ends an archive quietly at a
    missing or damaged header (a copy cut between two members reads as a shorter valid one), so
    only a block of zeros there, tar's end-of-archive marker, shows the archive is whole."""

    last = b""

    @classmethod
    def frombuf(cls, buf, encoding, errors):
        cls.last = buf
        return super().frombuf(buf, encoding, errors)


def _extract_zip(archive: Path, dest: Path, password: str | None, progress: bool) -> int:
    pwd = password.encode() if password else None
    n = 0
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:  # check every name and type before writing anything
                _member_path(info.filename, str(archive))
                ftype = stat.S_IFMT(info.external_attr >> 16)  # 0: no Unix type recorded
                if ftype and ftype not in (stat.S_IFREG, stat.S_IFDIR):
                    raise DownloadError(
                        f"{archive}: member {info.filename!r} is a link or special file; refused"
                    )
            bar = Progress(f"extracting {archive.name}", sum(i.file_size for i in infos), enabled=progress)
            try:
                for info in infos:
                    rel = _member_path(info.filename, str(archive))
                    if _place(dest, rel, info.is_dir(), lambda i=info: zf.open(i, pwd=pwd)):
                        n += 1
                        bar.update(info.file_size)
            finally:
                bar.close()
    except RuntimeError as exc:  # zipfile: encrypted member without (or with a wrong) password
        raise DownloadError(f"{archive}: {exc}; pass the password the dataset's site gives") from None
    except FileExistsError:
        raise DownloadError(f"{archive}: a member appears twice; refused") from None
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
        raise DownloadError(f"{archive}: the archive is damaged ({type(exc).__name__}: {exc})") from None
    return n


def remove_tree(path: Path) -> None:
    """Remove a staging folder (never anything outside one)."""
    if path.exists():
        shutil.rmtree(path)
