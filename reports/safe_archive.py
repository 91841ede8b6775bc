"""Readers for untrusted submission containers: a ``.tar.gz`` bundle and the ``.npz`` files in it.

Everything is read into memory under explicit limits, so nothing is ever written to disk while
reading, and a hostile bundle cannot place files anywhere. Refused outright: absolute or ``..``
member names, links, devices, FIFOs, sparse members, duplicated names, members or totals over the
limits (checked against the headers *and* the bytes actually inflated, so a gzip bomb stops at
the cap), and any ``.npy`` whose header declares more data than its member holds or an object
dtype (which would need pickle).
"""

from __future__ import annotations

import gzip
import io
import re
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Caps for one bundle; defaults fit six ImageNet-scale shifts with 1000-way float16 logits."""

    max_compressed: int = 2048 * MiB
    max_member: int = 1024 * MiB
    max_total: int = 3072 * MiB
    max_members: int = 1000


DEFAULT_LIMITS = Limits()


class BundleError(ValueError):
    """A bundle that cannot be read safely; ``code`` names the check that refused it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _CappedReader(io.RawIOBase):
    """Reads a stream but raises once more than ``cap`` bytes came out of it."""

    def __init__(self, stream, cap: int, source: str, limit: int) -> None:
        self._stream = stream
        self._cap = cap
        self._limit = limit
        self._seen = 0
        self._source = source

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(
            size if size is not None and size >= 0 else self._cap + 1 - self._seen
        )
        self._seen += len(data)
        if self._seen > self._cap:
            raise BundleError(
                "too-large",
                f"{self._source}: inflates past the {self._limit // MiB} MiB limit (a decompression bomb or an oversized bundle); refused",
            )
        return data


_DRIVE = re.compile(r"^[A-Za-z]:")


def check_member_name(name: str, source: str) -> str:
    """The member name if it stays inside the bundle, else BundleError('unsafe-member')."""
    if not name or "\x00" in name:
        raise BundleError(
            "unsafe-member", f"{source}: member with an empty or NUL-containing name; refused"
        )
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise BundleError(
            "unsafe-member", f"{source}: member {name!r} has an absolute path; refused"
        )
    if ".." in re.split(r"[/\\]", name):
        raise BundleError(
            "unsafe-member", f"{source}: member {name!r} contains '..' (path traversal); refused"
        )
    return name


def _kind(member: tarfile.TarInfo) -> str | None:
    """Why a member type is refused, or None for a plain file or folder."""
    if member.issym():
        return f"is a symbolic link to {member.linkname!r}"
    if member.islnk():
        return f"is a hard link to {member.linkname!r}"
    if member.ischr() or member.isblk():
        return "is a device"
    if member.isfifo():
        return "is a FIFO"
    if member.issparse():
        return "is a sparse file"
    if member.isreg() or member.isdir():
        return None
    return f"has unsupported type {member.type!r}"


def read_bundle(path: Path, limits: Limits = DEFAULT_LIMITS) -> dict[str, bytes]:
    """Every regular file of a ``.tar.gz`` as name -> bytes, read under ``limits``."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{source}: no such submission file; build one with `shiftbench submit`"
        )
    size = path.stat().st_size
    if size > limits.max_compressed:
        raise BundleError(
            "too-large",
            f"{source}: {size // MiB} MiB exceeds the {limits.max_compressed // MiB} MiB limit; refused",
        )
    members: dict[str, bytes] = {}
    total = 0
    try:
        with open(path, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            # headers and padding add at most ~1 KiB per member on top of the members' bytes
            capped = _CappedReader(
                gz, limits.max_total + 1024 * limits.max_members + MiB, source, limits.max_total
            )
            with tarfile.open(fileobj=capped, mode="r|") as tar:
                for count, member in enumerate(tar, 1):
                    if count > limits.max_members:
                        raise BundleError(
                            "too-large",
                            f"{source}: more than {limits.max_members} members; refused",
                        )
                    name = check_member_name(member.name, source)
                    why = _kind(member)
                    if why:
                        raise BundleError(
                            "unsafe-member",
                            f"{source}: member {name!r} {why}; only plain files are allowed",
                        )
                    if member.isdir():
                        continue
                    if name in members:
                        raise BundleError(
                            "duplicate-member", f"{source}: member {name!r} appears twice; refused"
                        )
                    if member.size > limits.max_member:
                        raise BundleError(
                            "too-large",
                            f"{source}: member {name!r} is {member.size // MiB} MiB, over the {limits.max_member // MiB} MiB per-member limit; refused",
                        )
                    total += member.size
                    if total > limits.max_total:
                        raise BundleError(
                            "too-large",
                            f"{source}: members total over the {limits.max_total // MiB} MiB limit; refused",
                        )
                    fh = tar.extractfile(member)
                    data = fh.read(member.size + 1) if fh is not None else b""
                    if len(data) != member.size:
                        raise BundleError(
                            "corrupt", f"{source}: member {name!r} is truncated; rebuild the bundle"
                        )
                    members[name] = data
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise BundleError(
            "corrupt",
            f"{source}: not a readable .tar.gz bundle ({exc}); rebuild it with `shiftbench submit`",
        ) from None
    return members


_NPY_NAME = re.compile(r"^[A-Za-z0-9._-]+\.npy$")


def _check_npy_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> None:
    with zf.open(info) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        except ValueError as exc:
            raise BundleError(
                "corrupt", f"{source}: array {info.filename!r} has a bad header ({exc})"
            ) from None
    if dtype.hasobject:
        raise BundleError(
            "unsafe-member",
            f"{source}: array {info.filename!r} holds Python objects (needs pickle); refused",
        )
    declared = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if declared > info.file_size:
        raise BundleError(
            "corrupt",
            f"{source}: array {info.filename!r} declares {declared} bytes but holds {info.file_size}; refused",
        )


def read_npz(data: bytes, source: str, max_bytes: int) -> dict[str, np.ndarray]:
    """Arrays of an untrusted ``.npz`` (no pickle), refusing bombs and lying headers."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise BundleError("corrupt", f"{source}: not a readable .npz ({exc})") from None
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise BundleError(
                "duplicate-member", f"{source}: .npz holds a duplicated array name; refused"
            )
        if sum(i.file_size for i in infos) > max_bytes:
            raise BundleError(
                "too-large",
                f"{source}: .npz inflates past the {max_bytes // MiB} MiB limit; refused",
            )
        for info in infos:
            if not _NPY_NAME.match(info.filename):
                raise BundleError(
                    "unsafe-member", f"{source}: unexpected .npz entry {info.filename!r}; refused"
                )
            _check_npy_header(zf, info, source)
        out = {}
        for info in infos:
            try:
                with zf.open(info) as fh:
                    out[info.filename[:-4]] = np.lib.format.read_array(
                        io.BytesIO(fh.read()), allow_pickle=False
                    )
            except (ValueError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise BundleError(
                    "corrupt", f"{source}: array {info.filename!r} is unreadable ({exc})"
                ) from None
        return out
