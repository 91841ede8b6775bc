"""CLIP_benchmark-style webdataset shards: reading and deterministic writing.

Layout (CLIP_benchmark ``wds/*``): ``{dir}/{split}/nshards.txt``, ``{dir}/{split}/0.tar ...``,
``{dir}/classnames.txt``, ``{dir}/zeroshot_classification_templates.txt``. A sample is the run of
tar members sharing a key: image under ``webp``/``png``/``jpg``/``jpeg``, label ``cls`` (ASCII int),
optional ``json`` (metadata). Our packer also writes ``{dir}/{split}/manifest.json`` (keys, labels,
sha256 and count per shard).

Webdataset keys end at the first ``.`` of the member name, so stable keys (which hold file
extensions) are stored percent-encoded (``.`` -> ``%2E``, ``%`` -> ``%25``) and decoded on read:
the key a reader yields is the shift's stable key. Plain CLIP_benchmark keys (``s0000000``) are
unchanged by this.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.layout import sha256_file

__all__ = ["sha256_file"]  # re-exported: shard manifests hash with the core's helper

IMAGE_KEYS = ("webp", "png", "jpg", "jpeg")
_MEMBER = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's base_plus_ext


def quote_key(key: str) -> str:
    return key.replace("%", "%25").replace(".", "%2E")


def unquote_key(key: str) -> str:
    return key.replace("%2E", ".").replace("%25", "%")


@dataclass
class ShardSample:
    key: str
    label: int
    image: bytes
    image_ext: str
    meta: dict[str, Any] = field(default_factory=dict)


def shard_paths(split_dir: Path) -> list[Path]:
    """The shards ``nshards.txt`` promises, each checked to exist."""
    nfile = split_dir / "nshards.txt"
    if not nfile.is_file():
        raise FileNotFoundError(
            f"{nfile} is missing: a webdataset split needs nshards.txt next to its 0.tar ... shards"
        )
    try:
        n = int(nfile.read_text().strip())
    except ValueError:
        raise ValueError(
            f"{nfile}: expected one integer (the number of shards), got {nfile.read_text()[:40]!r}"
        ) from None
    paths = [split_dir / f"{i}.tar" for i in range(n)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{split_dir}: nshards.txt says {n} shards but {missing[:5]} are missing; re-download or re-pack"
        )
    return paths


class CorruptShard(ValueError):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"{path}: truncated or corrupt shard ({reason}); re-download or re-pack it"
        )


def _octal(field: bytes) -> int:
    if field[:1] == b"\x80":  # GNU base-256 for large sizes
        return int.from_bytes(field[1:], "big")
    text = field.rstrip(b"\0 ").lstrip(b" ")
    return int(text, 8) if text else 0


def _pax_records(data: bytes) -> dict[str, str]:
    out, pos = {}, 0
    while pos < len(data):
        sp = data.index(b" ", pos)
        length = int(data[pos:sp])
        key, _, value = data[sp + 1 : pos + length - 1].partition(b"=")
        out[key.decode()] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def tar_members(path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, data) of every regular file in a tar, read in one pass over the bytes.

    The shard is read whole (CLIP_benchmark shards are at most 1 GB). Faster than ``tarfile``
    for many small members, and strict: header checksums are verified,
    a member running past the end of the file or a missing end-of-archive is an error.
    Handles ustar prefixes, PAX (``x``) and GNU long-name (``L``) headers.
    """
    with open(path, "rb") as fh:
        buf = fh.read()
    pos, n = 0, len(buf)
    pending: dict[str, str] = {}
    while True:
        if pos + 512 > n:
            raise CorruptShard(path, f"ends inside a header at byte {pos}")
        hdr = buf[pos : pos + 512]
        if hdr == b"\0" * 512:
            if buf[pos + 512 : pos + 1024] != b"\0" * 512:
                raise CorruptShard(path, f"only one end-of-archive block at byte {pos}")
            return
        try:
            checksum = _octal(hdr[148:156])
            size = _octal(hdr[124:136])
        except ValueError:
            raise CorruptShard(path, f"unreadable header at byte {pos}") from None
        if checksum != sum(hdr[:148]) + 256 + sum(hdr[156:]):
            raise CorruptShard(path, f"header checksum mismatch at byte {pos}")
        kind = hdr[156:157]
        name = hdr[:100].split(b"\0", 1)[0]
        if hdr[257:262] == b"ustar" and hdr[345:346] != b"\0":
            name = hdr[345:500].split(b"\0", 1)[0] + b"/" + name
        size = int(pending.get("size", size))
        start = pos + 512
        if start + size > n:
            raise CorruptShard(
                path, f"member {name.decode(errors='replace')!r} runs past the end of the file"
            )
        data = buf[start : start + size]
        pos = start + (size + 511) // 512 * 512
        if kind == b"x":
            pending = _pax_records(data)
        elif kind == b"L":
            pending = {"path": data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")}
        elif kind == b"g":
            continue
        else:
            if kind in (b"0", b"\0", b"7"):
                yield pending.get("path", name.decode("utf-8", "surrogateescape")), data
            pending = {}


def read_shard(path: Path) -> Iterator[ShardSample]:
    """Yield the samples of one shard in stored order; a truncated shard raises naming it."""
    current: dict[str, bytes] = {}
    current_key: str | None = None
    try:
        members = list(tar_members(path))
    except OSError as exc:
        raise CorruptShard(path, str(exc)) from exc
    for name, data in members:
        m = _MEMBER.match(name)
        if not m:
            raise ValueError(
                f"{path}: member {name!r} has no key.extension name; not a webdataset shard"
            )
        key, ext = m.group(1), m.group(2).lower()
        if current_key is not None and key != current_key:
            yield _sample(path, current_key, current)
            current = {}
        if ext in current:  # two samples under one key would merge, one of them lost
            raise ValueError(
                f"{path}: member {name!r} repeats key {unquote_key(key)!r} with .{ext} already read; "
                "two samples share that key (webdataset refuses it too); re-pack the shard with unique keys"
            )
        current_key = key
        current[ext] = data
    if current_key is not None:
        yield _sample(path, current_key, current)


def _sample(path: Path, key: str | None, parts: dict[str, bytes]) -> ShardSample:
    where = f"{path} sample {key!r}"
    ext = next((e for e in IMAGE_KEYS if e in parts), None)
    if ext is None:
        raise ValueError(f"{where}: no image (expected one of {IMAGE_KEYS}, found {sorted(parts)})")
    if "cls" not in parts:
        raise ValueError(f"{where}: no 'cls' label member; this reader needs classification shards")
    try:
        label = int(parts["cls"].decode().strip())
    except ValueError:
        raise ValueError(f"{where}: 'cls' is not an integer: {parts['cls'][:20]!r}") from None
    meta = json.loads(parts["json"]) if "json" in parts else {}
    return ShardSample(unquote_key(key or ""), label, parts[ext], ext, meta)


def read_split(split_dir: Path) -> Iterator[ShardSample]:
    for path in shard_paths(split_dir):
        yield from read_shard(path)


def read_lines(path: Path) -> list[str]:
    return [line.rstrip("\n") for line in path.read_text().splitlines()]


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tf.addfile(info, io.BytesIO(data))


@dataclass
class WrittenShard:
    """A finished shard of an unfinished split: its manifest entry and what it holds."""

    entry: dict[str, Any]
    keys: list[str]
    labels: list[int]


def written_shards(split_dir: Path, finishing: bool = False) -> list[WrittenShard]:
    """Shards an interrupted :func:`write_split` left under their final names (``0.tar``,
    ``1.tar``, ... up to the first missing one), each read whole; none once ``nshards.txt``
    marks the split finished or where nothing was written. ``finishing``: read them even past
    ``nshards.txt``, for a write that stopped after its shards, before the files that follow."""
    split_dir = Path(split_dir)
    out: list[WrittenShard] = []
    if (split_dir / "nshards.txt").exists() and not finishing:
        return out
    while (path := split_dir / f"{len(out)}.tar").is_file():
        samples = list(read_shard(path))
        entry = {"name": path.name, "count": len(samples), "sha256": sha256_file(path)}
        out.append(WrittenShard(entry, [x.key for x in samples], [x.label for x in samples]))
    return out


def write_split(
    out_dir: Path,
    split: str,
    samples: Iterable[ShardSample],
    classnames: list[str],
    templates: list[str],
    maxcount: int = 10_000,
    written: Iterable[WrittenShard] = (),
) -> dict[str, Any]:
    """Write ``samples`` as deterministic shards (fixed mtimes/owners, given order).

    Each shard and the manifest are written to a temporary name and renamed, so a crash never
    leaves a half shard under a final name. ``written``: the shards an interrupted write left
    (:func:`written_shards`), which ``samples`` then continue. Returns the manifest.
    """
    if maxcount < 1:
        raise ValueError("maxcount must be at least 1")
    split_dir = Path(out_dir) / split
    split_dir.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, Any]] = []
    keys: list[str] = []
    labels: list[int] = []
    for w in written:
        shards.append(w.entry)
        keys += w.keys
        labels += w.labels
    tf: tarfile.TarFile | None = None
    tmp: Path | None = None

    def close() -> None:
        assert tf is not None and tmp is not None
        tf.close()
        final = split_dir / f"{len(shards)}.tar"
        os.replace(tmp, final)
        shards.append({"name": final.name, "count": count, "sha256": sha256_file(final)})

    count = 0
    try:
        for sample in samples:
            if tf is None:
                tmp = split_dir / f".{len(shards)}.tar.tmp"
                tf = tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT)
                count = 0
            base = quote_key(sample.key)
            _add(tf, f"{base}.{sample.image_ext}", sample.image)
            _add(tf, f"{base}.cls", str(int(sample.label)).encode())
            if sample.meta:
                _add(tf, f"{base}.json", json.dumps(sample.meta, sort_keys=True).encode())
            keys.append(sample.key)
            labels.append(int(sample.label))
            count += 1
            if count == maxcount:
                close()
                tf = None
        if tf is not None:
            close()
    except BaseException:  # the unfinished shard goes; finished ones stay for a resume
        if tf is not None and tmp is not None:
            tf.close()
            tmp.unlink(missing_ok=True)
        raise
    manifest = {"split": split, "n": len(keys), "shards": shards, "keys": keys, "labels": labels}
    _atomic_write(split_dir / "nshards.txt", f"{len(shards)}\n")
    _atomic_write(split_dir / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    _atomic_write(Path(out_dir) / "classnames.txt", "".join(f"{c}\n" for c in classnames))
    _atomic_write(
        Path(out_dir) / "zeroshot_classification_templates.txt",
        "".join(f"{t}\n" for t in templates),
    )
    return manifest


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
