"""``pack``: a shift's folder-form split written as CLIP_benchmark-style webdataset shards.

Images keep their original encoded bytes (JPEG stays JPEG, PNG stays PNG), so decoding a packed
sample gives exactly the pixels of the file; labels are in the shift's own label space, keys are
the shift's stable keys and WILDS metadata rides along as ``json``. Every image is decoded once
while packing, so a corrupt file stops the pack with its name.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shifts import wds
from shifts.base import DatasetShift
from shifts.images import decode_image

_EXT = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}


def _samples(
    shift: DatasetShift, dataset_dir: Path, split: str, progress: bool
) -> Iterator[wds.ShardSample]:
    from tqdm import tqdm

    records = shift.index(dataset_dir, split)
    for r in tqdm(
        records, desc=f"pack {shift.spec.name}/{split}", unit="img", disable=not progress
    ):
        data = r.path.read_bytes()
        img = decode_image(data, r.key, str(r.path))
        ext = _EXT.get(r.path.suffix.lower())
        if ext is None:  # bmp/tiff/ppm: store losslessly as PNG
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            data, ext = buf.getvalue(), "png"
        yield wds.ShardSample(r.key, r.label, data, ext, dict(r.meta))


def pack(
    shift: DatasetShift,
    root: Path,
    out: Path,
    split: str | None = None,
    maxcount: int = 10_000,
    progress: bool = True,
) -> dict[str, Any]:
    """Pack ``split`` of ``shift`` found under ``root`` (folder form) into ``out``; returns the manifest."""
    split = shift.resolve_split(split)
    loc = shift.locate(root, split, form="folder")
    out = Path(out)
    if (out / split / "nshards.txt").exists():
        raise ValueError(
            f"{out / split} already holds shards; choose another --out or delete it first"
        )
    manifest = wds.write_split(
        out,
        split,
        _samples(shift, loc.path, split, progress),
        classnames=shift.classnames(root),
        templates=shift.templates(),
        maxcount=maxcount,
    )
    for name in shift.pack_copies:
        shutil.copytree(loc.path / name, out / name, dirs_exist_ok=True)
    return manifest
