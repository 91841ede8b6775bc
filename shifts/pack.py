"""``pack``: a shift's folder-form split written as CLIP_benchmark-style webdataset shards.

Images keep their original encoded bytes (JPEG stays JPEG, PNG stays PNG), so decoding a packed
sample gives exactly the pixels of the file; labels are in the shift's own label space, keys are
the shift's stable keys and WILDS metadata rides along as ``json``. Every image is decoded once
while packing, so a corrupt file stops the pack with its name; rerunning the pack after a
crash or a fixed file resumes after the last finished shard, and one that failed after its
shards (writing the manifest, class names or templates, or copying a shift's extra folders)
finishes those. A pack stopped before it finished a shard leaves nothing behind: no folder,
marker or temporary shard.
"""

from __future__ import annotations

import io
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.files import check_output, missing_folders, remove_empty_folders, storage_error
from shifts import wds
from shifts.base import DatasetShift, Record
from shifts.images import BadImageError, decode_image

_EXT = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}


def _samples(
    shift: DatasetShift, records: list[Record], split: str, done: int, progress: bool
) -> Iterator[wds.ShardSample]:
    """The records from ``done`` on, each read and decoded once."""
    from tqdm import tqdm

    rest = records[done:]
    desc = f"pack {shift.spec.name}/{split}"
    bar = tqdm(rest, desc=desc, unit="img", initial=done, total=len(records), disable=not progress)
    for r in bar:
        data = r.path.read_bytes()
        try:
            img = decode_image(data, r.key, str(r.path))
        except BadImageError as exc:
            advice = (
                "replace the file and rerun the same pack: it resumes after the shards it finished"
            )
            raise BadImageError(exc.key, exc.where, exc.reason, advice) from None
        ext = _EXT.get(r.path.suffix.lower())
        if ext is None:  # bmp/tiff/ppm: store losslessly as PNG
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            data, ext = buf.getvalue(), "png"
        yield wds.ShardSample(r.key, r.label, data, ext, dict(r.meta))


def check_written(
    written: list[wds.WrittenShard], records: list[Record], maxcount: int, split_dir: Path
) -> int:
    """How many records the shards of an interrupted pack already hold; an error unless they
    are exactly the first records in order, cut every ``maxcount``."""
    done = 0
    for w in written:  # a shard after a short (last) one meets no records: a mismatch too
        want = records[done : done + maxcount]
        if w.keys != [r.key for r in want] or w.labels != [r.label for r in want]:
            raise ValueError(
                f"{split_dir / w.entry['name']} holds other images than this pack writes there "
                f"(another --maxcount, split or dataset?); delete {split_dir} or choose another --out"
            )
        done += len(want)
    return done


SOURCE_FILE = ".pack-source"  # the folder an unfinished pack reads, removed when it finishes


def check_source(split_dir: Path, source: Path, resuming: bool) -> None:
    """An interrupted pack resumes only from the folder it started from: shards of another data
    root with the same file names would otherwise be kept as if they were this one's."""
    marker = split_dir / SOURCE_FILE
    here = str(Path(source).resolve())
    if resuming:
        try:
            first = marker.read_text().strip()
        except OSError:
            first = "an unrecorded folder"
        if first != here:
            raise ValueError(
                f"{split_dir} holds shards packed from {first}, not {here}; rerun with that --data-root, "
                f"or delete {split_dir} to pack this one"
            )
        return
    split_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(here + "\n")


def pack(
    shift: DatasetShift,
    root: Path,
    out: Path,
    split: str | None = None,
    maxcount: int = 10_000,
    progress: bool = True,
) -> dict[str, Any]:
    """Pack ``split`` of ``shift`` found under ``root`` (folder form) into ``out``; returns the manifest.

    An interrupted pack into the same ``out`` resumes after its last finished shard; the
    result is byte for byte what an uninterrupted pack writes."""
    split = shift.resolve_split(split)
    loc = shift.locate(root, split, form="folder")
    out = Path(out)
    split_dir = out / split
    check_output(out, "--out", folder=True)
    if split_dir.exists() and not split_dir.is_dir():
        raise ValueError(f"--out {out}: {split_dir} exists and is not a folder; give a folder path")
    # ``.pack-source`` outlives the shards until the last file after them is written: with it, a
    # split whose nshards.txt is written is still unfinished, and the rerun finishes it
    unfinished = (split_dir / SOURCE_FILE).is_file()
    if (split_dir / "nshards.txt").exists() and not unfinished:
        raise ValueError(
            f"{split_dir} already holds shards; choose another --out or delete it first"
        )
    if maxcount < 1:
        raise ValueError("maxcount must be at least 1")
    records = shift.index(loc.path, split)
    classnames = shift.classnames(root)
    written = wds.written_shards(split_dir, finishing=unfinished)
    done = check_written(written, records, maxcount, split_dir)
    made = missing_folders(split_dir / SOURCE_FILE)  # the split folder and --out, if new
    check_source(split_dir, loc.path, bool(written))
    if written and progress:
        print(
            f"resuming: {len(written)} shards ({done} images) already packed in {split_dir}",
            file=sys.stderr,
        )
    try:
        manifest = wds.write_split(
            out,
            split,
            _samples(shift, records, split, done, progress),
            classnames=classnames,
            templates=shift.templates(),
            maxcount=maxcount,
            written=written,
        )
    except BaseException as exc:
        if not (split_dir / "0.tar").exists():  # no finished shard to resume from
            (split_dir / SOURCE_FILE).unlink(missing_ok=True)
            remove_empty_folders(made)
        if isinstance(exc, OSError):  # a full disk: one line naming the file, and the rerun resumes
            raise storage_error(Path(exc.filename or split_dir), exc) from exc
        raise
    for name in shift.pack_copies:
        try:
            shutil.copytree(loc.path / name, out / name, dirs_exist_ok=True)
        except OSError as exc:  # .pack-source stays: the rerun finishes the copy
            raise storage_error(out / name, exc) from exc
    (split_dir / SOURCE_FILE).unlink(missing_ok=True)  # last: the pack is finished
    return manifest
