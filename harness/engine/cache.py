"""Decode once, evaluate many: a uint8 cache of preprocessed images.

An entry holds every image of one shift split after ``harness.transforms.geometry``
(resize + crop, before normalisation) as one ``[N, 3, S, S]`` uint8 array, so the second
model with the same geometry, every WiSE-FT alpha and every soup candidate skip JPEG
decoding. The key is the dataset manifest (shift, version, split, data root, every key and
label in order, the stat signature of every image file or shard read), the geometry fields of
the ``PreprocessSpec`` and the JPEG decoder —
normalisation is not part of it, so models differing only in mean/std share an entry.

Layout: ``<cache_dir>/<key>.u8`` (raw array) and ``<key>.json`` (shape, row count, sha256 of
the array), the json written last. Runs on the same data share entries safely: each writer
fills its own temp file (``.<key>.u8.<pid>.<random>.tmp``), and publishes it only when every
row is written, by renaming it into place and then writing the index. A reader opens the
array, checks its size and sha256 against the index, and memory-maps that same open file, so
an entry replaced meanwhile by another writer is never mixed with the index it read. An
entry that fails the check is ignored and rebuilt. The cache only saves time: a problem with
it (full disk, permissions) never fails a cell. A writer holds a ``flock`` on its temp file
while it lives; a new writer removes the temp files no process holds (what a killed run left:
a reserved entry the size of the whole split, e.g. 7.5 GB for ImageNet val at 224 px).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from harness.api import PreprocessSpec
from harness.files import atomic_write_text, temp_path

GEOMETRY_FIELDS = ("image_size", "resize_size", "resize_mode", "crop", "interpolation")


def geometry_key(spec: PreprocessSpec) -> dict[str, object]:
    d = spec.to_dict()
    return {k: d[k] for k in GEOMETRY_FIELDS}


def cache_key(manifest_digest: str, spec: PreprocessSpec, decoder: str = "pil", files: str = "") -> str:
    """``decoder`` (``harness.engine.gpu_decode.decoder_label``) is part of the key: another JPEG
    decoder gives slightly different pixels, so entries never mix decoders. ``files``
    (``Manifest.files``, the stat signatures of the image files) is too: an image rewritten in
    place under its old name is decoded again, never served from the entry of the old one."""
    entry: dict[str, object] = {"manifest": manifest_digest, "geometry": geometry_key(spec)}
    if decoder != "pil":  # PIL entries keep the key they had before decoders were chosen
        entry["decoder"] = decoder
    if files:
        entry["files"] = files
    payload = json.dumps(entry, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _sha256_of(fh, length: int, chunk: int = 1 << 24) -> str:  # noqa: ANN001 - a binary file object
    h = hashlib.sha256()
    fh.seek(0)
    left = length
    while left > 0:
        block = fh.read(min(chunk, left))
        if not block:
            break
        h.update(block)
        left -= len(block)
    return h.hexdigest()


class ImageCache:
    """A directory of cache entries; ``open`` reads one, ``writer`` builds one."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.dir / f"{key}.u8", self.dir / f"{key}.json"

    def open(self, key: str, n: int, size: int) -> np.ndarray | None:
        """The cached ``[n, 3, size, size]`` array (memory-mapped), or None if absent,
        incomplete, or not the bytes its index describes."""
        data, index = self._paths(key)
        shape = (n, 3, size, size)
        try:
            meta = json.loads(index.read_text())
            if tuple(meta.get("shape", ())) != shape or meta.get("rows") != n or not meta.get("sha256"):
                return None
            with open(data, "rb") as fh:
                length = os.fstat(fh.fileno()).st_size
                if length != int(np.prod(shape)) or _sha256_of(fh, length) != meta["sha256"]:
                    return None
                # copy-on-write: writable views, file untouched; mapped from the file just verified
                return np.memmap(fh, dtype=np.uint8, mode="c", shape=shape)
        except (OSError, ValueError, AttributeError, json.JSONDecodeError):
            return None

    def writer(self, key: str, n: int, size: int) -> CacheWriter:
        self.remove_orphans()
        return CacheWriter(self, key, (n, 3, size, size))

    def remove_orphans(self) -> list[Path]:
        """Delete the entries' temp files whose writer is gone (no ``flock`` on them); returns them."""
        removed = []
        for tmp in self.dir.glob(".*.u8.*.tmp"):
            try:
                with open(tmp, "rb") as fh:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by a live writer: BlockingIOError
                    tmp.unlink()
                    removed.append(tmp)
            except OSError:
                continue
        return removed


class CacheWriter:
    """Fills an entry row by row; ``commit`` publishes it only once every row is written."""

    def __init__(self, cache: ImageCache, key: str, shape: tuple[int, int, int, int]) -> None:
        self.data_path, self.index_path = cache._paths(key)
        cache.dir.mkdir(parents=True, exist_ok=True)
        self.tmp_path = temp_path(self.data_path)
        self.shape = shape
        self.filled = np.zeros(shape[0], dtype=bool)
        # Reserve the whole entry now: a full disk is an OSError here, not a SIGBUS when a
        # page of a sparse memory map is first written.
        self._held = open(self.tmp_path, "xb")  # noqa: SIM115 - held, locked, for the writer's life
        with contextlib.suppress(OSError):  # a file system without flock: no orphan is ever removed
            fcntl.flock(self._held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            os.posix_fallocate(self._held.fileno(), 0, int(np.prod(shape)))
        except OSError:
            self._release()
            self.tmp_path.unlink(missing_ok=True)
            raise
        self.array: np.memmap | None = np.memmap(self.tmp_path, dtype=np.uint8, mode="r+", shape=shape)

    def _release(self) -> None:
        """Drop the temp file's lock (after it is published or removed)."""
        with contextlib.suppress(OSError):
            self._held.close()

    def put(self, indices: np.ndarray, images: np.ndarray) -> None:
        assert self.array is not None, "cache entry already committed"
        self.array[indices] = images
        self.filled[indices] = True

    def commit(self) -> bool:
        """Publish the entry if complete; returns whether it was published. Never raises for
        storage problems: the cache only saves time."""
        try:
            if self.array is not None:
                self.array.flush()
                del self.array
            self.array = None
            if not self.filled.all():
                self.tmp_path.unlink(missing_ok=True)
                return False
            with open(self.tmp_path, "rb") as fh:
                digest = _sha256_of(fh, int(np.prod(self.shape)))
            self.tmp_path.replace(self.data_path)
            index = {"shape": list(self.shape), "rows": self.shape[0], "sha256": digest}
            atomic_write_text(self.index_path, json.dumps(index) + "\n")
            return True
        except (OSError, ValueError):
            self.tmp_path.unlink(missing_ok=True)
            return False
        finally:
            self._release()

    def abort(self) -> None:
        self.array = None
        self.tmp_path.unlink(missing_ok=True)
        self._release()
