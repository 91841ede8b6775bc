"""Decode once, evaluate many: a uint8 cache of preprocessed images.

An entry holds every image of one shift split after ``harness.transforms.geometry``
(resize + crop, before normalisation) as one ``[N, 3, S, S]`` uint8 array, so the second
model with the same geometry, every WiSE-FT alpha and every soup candidate skip JPEG
decoding. The key is the dataset manifest (shift, version, split, data root, every key and
label in order), the geometry fields of the ``PreprocessSpec`` and the JPEG decoder —
normalisation is not part of it, so models differing only in mean/std share an entry.

Layout: ``<cache_dir>/<key>.u8`` (raw array) and ``<key>.json`` (shape, manifest digest),
the json written last: an entry without it is incomplete and is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from harness.api import PreprocessSpec
from harness.engine.store import atomic_write_text

GEOMETRY_FIELDS = ("image_size", "resize_size", "resize_mode", "crop", "interpolation")


def geometry_key(spec: PreprocessSpec) -> dict[str, object]:
    d = spec.to_dict()
    return {k: d[k] for k in GEOMETRY_FIELDS}


def cache_key(manifest_digest: str, spec: PreprocessSpec, decoder: str = "pil") -> str:
    """``decoder`` (``harness.engine.gpu_decode.decoder_label``) is part of the key: another JPEG
    decoder gives slightly different pixels, so entries never mix decoders."""
    entry: dict[str, object] = {"manifest": manifest_digest, "geometry": geometry_key(spec)}
    if decoder != "pil":  # PIL entries keep the key they had before decoders were chosen
        entry["decoder"] = decoder
    payload = json.dumps(entry, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


class ImageCache:
    """A directory of cache entries; ``open`` reads one, ``writer`` builds one."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.dir / f"{key}.u8", self.dir / f"{key}.json"

    def open(self, key: str, n: int, size: int) -> np.ndarray | None:
        """The cached ``[n, 3, size, size]`` array (memory-mapped), or None if absent/incomplete."""
        data, index = self._paths(key)
        if not (data.exists() and index.exists()):
            return None
        try:
            meta = json.loads(index.read_text())
        except json.JSONDecodeError:
            return None
        shape = (n, 3, size, size)
        if tuple(meta.get("shape", ())) != shape or data.stat().st_size != int(np.prod(shape)):
            return None
        return np.memmap(data, dtype=np.uint8, mode="c", shape=shape)  # copy-on-write: writable views, file untouched

    def writer(self, key: str, n: int, size: int) -> CacheWriter:
        return CacheWriter(self, key, (n, 3, size, size))


class CacheWriter:
    """Fills an entry row by row; ``commit`` publishes it only once every row is written."""

    def __init__(self, cache: ImageCache, key: str, shape: tuple[int, int, int, int]) -> None:
        self.data_path, self.index_path = cache._paths(key)
        self.tmp_path = self.data_path.with_name(self.data_path.name + ".tmp")
        self.shape = shape
        self.filled = np.zeros(shape[0], dtype=bool)
        cache.dir.mkdir(parents=True, exist_ok=True)
        # Reserve the whole entry now: a full disk is an OSError here, not a SIGBUS when a
        # page of a sparse memory map is first written.
        try:
            with open(self.tmp_path, "wb") as fh:
                os.posix_fallocate(fh.fileno(), 0, int(np.prod(shape)))
        except OSError:
            self.tmp_path.unlink(missing_ok=True)
            raise
        self.array: np.memmap | None = np.memmap(self.tmp_path, dtype=np.uint8, mode="r+", shape=shape)

    def put(self, indices: np.ndarray, images: np.ndarray) -> None:
        assert self.array is not None, "cache entry already committed"
        self.array[indices] = images
        self.filled[indices] = True

    def commit(self) -> bool:
        """Publish the entry if complete; returns whether it was published."""
        if self.array is not None:
            self.array.flush()
        self.array = None
        if not self.filled.all():
            self.tmp_path.unlink(missing_ok=True)
            return False
        self.tmp_path.replace(self.data_path)
        atomic_write_text(self.index_path, json.dumps({"shape": list(self.shape)}) + "\n")
        return True

    def abort(self) -> None:
        self.array = None
        self.tmp_path.unlink(missing_ok=True)
