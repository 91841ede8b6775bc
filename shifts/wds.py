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

import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def _check_end(path: Path, offset: int) -> None:
    """A complete tar ends with two zero blocks where the member stream stopped."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        tail = fh.read(1024)
    if len(tail) < 1024 or tail.strip(b"\0"):
        raise ValueError(
            f"{path}: truncated or corrupt shard (no end-of-archive after the last member); re-download or re-pack it"
        )


def read_shard(path: Path) -> Iterator[ShardSample]:
    """Yield the samples of one shard in stored order; a truncated shard raises naming it."""
    current: dict[str, bytes] = {}
    current_key: str | None = None

    def emit() -> ShardSample:
        return _sample(path, current_key, current)

    try:
        with tarfile.open(path, mode="r|") as tf:
            for member in tf:
                if not member.isfile():
                    continue
                m = _MEMBER.match(member.name)
                if not m:
                    raise ValueError(
                        f"{path}: member {member.name!r} has no key.extension name; not a webdataset shard"
                    )
                key, ext = m.group(1), m.group(2).lower()
                if current_key is not None and key != current_key:
                    yield emit()
                    current = {}
                current_key = key
                fh = tf.extractfile(member)
                current[ext] = fh.read() if fh else b""
            end = tf.offset
    except (tarfile.ReadError, EOFError, OSError) as exc:
        raise ValueError(
            f"{path}: truncated or corrupt shard ({exc}); re-download or re-pack it"
        ) from exc
    _check_end(path, end)
    if current_key is not None:
        yield emit()


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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_split(
    out_dir: Path,
    split: str,
    samples: Iterable[ShardSample],
    classnames: list[str],
    templates: list[str],
    maxcount: int = 10_000,
) -> dict[str, Any]:
    """Write ``samples`` as deterministic shards (fixed mtimes/owners, given order).

    Each shard and the manifest are written to a temporary name and renamed, so a crash never
    leaves a half shard under a final name. Returns the manifest.
    """
    if maxcount < 1:
        raise ValueError("maxcount must be at least 1")
    split_dir = Path(out_dir) / split
    split_dir.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, Any]] = []
    keys: list[str] = []
    labels: list[int] = []
    tf: tarfile.TarFile | None = None
    tmp: Path | None = None

    def close() -> None:
        assert tf is not None and tmp is not None
        tf.close()
        final = split_dir / f"{len(shards)}.tar"
        os.replace(tmp, final)
        shards.append({"name": final.name, "count": count, "sha256": sha256_file(final)})

    count = 0
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
