"""What every dataset reader shares: locating the data, indexing, and yielding examples.

A shift subclasses :class:`DatasetShift` and implements :meth:`index` (its raw layout -> one
:class:`Record` per image, validated). Reading from folders or from packed webdataset shards,
border crops, RGB conversion, the bad-image policy and check-data all live here, so every shift
behaves the same way.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from harness.api import Example, LazyExample, Shift, ShiftSpec
from harness.files import file_stamp
from shifts import wds
from shifts.images import BadImageError, DeferredImage, crop_border, decode_image, is_image_file


@dataclass(frozen=True)
class Record:
    """One image of a folder-form dataset: stable key, label (shift's space), file, metadata."""

    key: str
    label: int
    path: Path
    meta: Mapping[str, Any] = field(default_factory=dict)


# key, label, metadata, decode (RGB, before the border crop), the image file's bytes, the
# stat signature of the file the image is read from (its own file, or its shard)
RawExample = tuple[
    str, int, Mapping[str, Any], Callable[[], Image.Image], Callable[[], bytes], Callable[[], str]
]


@dataclass(frozen=True)
class Location:
    form: str  # "folder" or "wds"
    path: Path


class DatasetShift(Shift):
    """Base for the built-in shifts. Subclasses set the class attributes and :meth:`index`."""

    spec: ShiftSpec
    #: Sub-folders of the data root that may hold the dataset in its raw layout, in search order.
    folder_names: tuple[str, ...] = ()
    #: Pixels cropped from every side before ``transform`` (ObjectNet: 2).
    border_crop: int = 0
    #: Expected image counts per split, where the dataset's authors publish them.
    expected_sizes: Mapping[str, int] = {}
    #: Images every class must have, where the dataset is balanced (ImageNet val 50, V2 10).
    per_class: int | None = None
    #: Folders of the dataset copied next to packed shards (metadata the reader needs there too).
    pack_copies: tuple[str, ...] = ()

    # -- metadata --------------------------------------------------------------------------

    def classnames(self, root: Path | None = None) -> list[str]:
        """Class names in the shift's label space, for zero-shot text heads.

        ``root`` is needed only by shifts whose names ship with the data (ObjectNet, WILDS)."""
        raise NotImplementedError

    def spec_for(self, root: Path) -> ShiftSpec:
        """The spec completed from the data's own files (ObjectNet's class map); else ``spec``."""
        return self.spec

    def templates(self) -> list[str]:
        """Prompt templates with a ``{c}`` placeholder."""
        raise NotImplementedError

    def resolve_split(self, split: str | None) -> str:
        split = split or self.spec.default_split
        if split not in self.spec.splits:
            raise ValueError(f"{self.spec.name} has splits {list(self.spec.splits)}, not {split!r}")
        return split

    def expected_size(self, split: str | None = None) -> int | None:
        split = self.resolve_split(split)
        if split == self.spec.default_split:
            return self.spec.expected_size
        return self.expected_sizes.get(split)

    # -- locating ----------------------------------------------------------------------------

    def wds_names(self) -> tuple[str, ...]:
        """Folders holding the webdataset form: ``wds/<name>`` and ``wds_<name>`` (CLIP_benchmark)."""
        n = self.spec.name
        return (f"wds/{n}", f"wds_{n}")

    def candidates(self, root: Path) -> list[Location]:
        root = Path(root)
        out = [Location("folder", root / n) for n in self.folder_names]
        out += [Location("wds", root / n) for n in self.wds_names()]
        return out

    def is_present(self, loc: Location, split: str) -> bool:
        if loc.form == "wds":
            return (loc.path / split / "nshards.txt").is_file()
        return loc.path.is_dir()

    def locate(self, root: Path, split: str | None = None, form: str | None = None) -> Location:
        """The first candidate present (folders before shards), else an error listing all."""
        split = self.resolve_split(split)
        if form not in (None, "folder", "wds"):
            raise ValueError(f"form must be 'folder' or 'wds', not {form!r}")
        cands = [c for c in self.candidates(root) if form in (None, c.form)]
        for c in cands:
            if self.is_present(c, split):
                self.found(c)
                return c
        looked = ", ".join(
            str(c.path) + (f"/{split}/nshards.txt" if c.form == "wds" else "") for c in cands
        )
        raise FileNotFoundError(
            f"{self.spec.name} not found under {root}: looked in {looked}. "
            f"Get it from {self.spec.homepage or 'its authors'} and extract it to one of these folders"
        )

    def found(self, loc: Location) -> None:
        """Called with the location about to be read: shifts whose spec depends on the data's
        own files (ObjectNet's class map) complete ``self.spec`` here."""

    # -- reading ------------------------------------------------------------------------------

    def index(self, dataset_dir: Path, split: str) -> list[Record]:
        """Every image of ``split`` in the raw folder layout, validated, in a deterministic order."""
        raise NotImplementedError

    def prepare(self, img: Image.Image) -> Image.Image:
        return crop_border(img, self.border_crop) if self.border_crop else img

    def load(self, record: Record) -> Image.Image:
        """One folder-form record as the image a model's transform receives (RGB, crop applied):
        with :meth:`index`, what a map-style dataset needs."""
        return self.prepare(decode_image(record.path, record.key, str(record.path)))

    def examples(
        self,
        root: Path,
        transform: Callable | None = None,
        split: str | None = None,
        *,
        form: str | None = None,
        skip_bad_images: bool = False,
        skipped: list[str] | None = None,
        part: tuple[int, int] | None = None,
    ) -> Iterator[Example]:
        """Yield the split's examples from folders or shards, whichever is found first.

        ``transform`` receives an RGB PIL image that decodes on first use (the shift's border
        crop applied), so a transform that ignores an image never pays for decoding it; with no
        transform the image is decoded before it is yielded.

        A corrupt image raises :class:`BadImageError` naming it; with ``skip_bad_images`` its key
        is appended to ``skipped`` (required then) so the caller records and counts it.
        ``part=(i, n)`` yields only the i-th of n disjoint parts (every n-th image, or every n-th
        shard), for data-loader workers and ranks; the n parts together are the whole split.
        """
        if skip_bad_images and skipped is None:
            raise ValueError("skip_bad_images needs a 'skipped' list to record the skipped keys in")
        if part is not None and not (part[1] >= 1 and 0 <= part[0] < part[1]):
            raise ValueError(f"part must be (i, n) with 0 <= i < n, got {part}")
        split = self.resolve_split(split)
        loc = self.locate(root, split, form)
        for key, label, meta, load, _, _ in self._raw(loc, split, part or (0, 1)):
            img = DeferredImage(lambda load=load: self.prepare(load()))
            try:
                out = transform(img) if transform else img.materialize()
            except BadImageError:
                if not skip_bad_images:
                    raise
                skipped.append(key)  # type: ignore[union-attr]
                continue
            yield Example(out, label, key, meta)

    def lazy_examples(self, root: Path, split: str | None = None) -> Iterator[LazyExample]:
        """The split's examples in :meth:`examples`' order, nothing decoded until ``load()``:
        the engine's manifest pass reads only keys and labels, and each loader worker decodes
        only its own share. ``encoded`` (the file's bytes, for batched GPU JPEG decoding) is
        offered only when no border crop changes the image after decoding; ``stamp`` always."""
        split = self.resolve_split(split)
        loc = self.locate(root, split)
        for key, label, meta, load, encoded, stamp in self._raw(loc, split, (0, 1)):
            yield LazyExample(
                key,
                label,
                meta,
                lambda load=load: self.prepare(load()),
                None if self.border_crop else encoded,
                stamp,
            )

    def _raw(self, loc: Location, split: str, part: tuple[int, int]) -> Iterator[RawExample]:
        i, n = part
        if loc.form == "folder":
            for r in self.index(loc.path, split)[i::n]:
                yield (
                    r.key,
                    r.label,
                    r.meta,
                    (lambda r=r: decode_image(r.path, r.key, str(r.path))),
                    r.path.read_bytes,
                    (lambda r=r: file_stamp(r.path)),
                )
            return
        for path in wds.shard_paths(loc.path / split)[i::n]:
            yield from self._shard_raw(path)

    def _shard_raw(self, path: Path) -> Iterator[RawExample]:
        stamp = functools.cache(lambda: file_stamp(path))  # one stat for the shard's samples
        for s in wds.read_shard(path):
            where = f"{path} sample {s.key!r}"
            self._check_label(s.label, where)
            yield (
                s.key,
                s.label,
                s.meta,
                (lambda s=s, where=where: decode_image(s.image, s.key, where)),
                (lambda s=s: s.image),
                stamp,
            )

    def _check_label(self, label: int, where: str) -> None:
        if not 0 <= label < self.spec.num_classes:
            raise ValueError(
                f"{where}: label {label} outside {self.spec.name}'s {self.spec.num_classes} classes; re-pack the shards"
            )

    def keys_and_labels(
        self, root: Path, split: str | None = None, form: str | None = None
    ) -> list[tuple[str, int]]:
        """Keys and labels without decoding images (folder form) or with shard reading only."""
        split = self.resolve_split(split)
        loc = self.locate(root, split, form)
        if loc.form == "folder":
            return [(r.key, r.label) for r in self.index(loc.path, split)]
        return [(s.key, s.label) for s in wds.read_split(loc.path / split)]


# -- helpers the shift modules share ----------------------------------------------------------


def list_dir(path: Path) -> tuple[list[str], list[str]]:
    """(sub-folder names, file names) of ``path``, each sorted."""
    dirs, files = [], []
    with os.scandir(path) as it:
        for e in it:
            (dirs if e.is_dir() else files).append(e.name)
    return sorted(dirs), sorted(files)


def image_files(folder: Path, dataset: str) -> list[str]:
    """Sorted image file names in ``folder``; anything else there is an error naming it."""
    dirs, files = list_dir(folder)
    hidden = [f for f in files if f.startswith(".")]
    if hidden:  # macOS tarballs carry a "._name.jpg" resource fork next to every image
        raise ValueError(
            f"{folder / hidden[0]}: hidden file in a {dataset} class folder ({len(hidden)} here; '._' files are "
            "macOS resource forks, not images); delete them, e.g. find DATA_ROOT -name '._*' -delete"
        )
    stray = dirs + [f for f in files if not is_image_file(f)]
    if stray:
        raise ValueError(
            f"{folder / stray[0]}: unexpected {'folder' if stray[0] in dirs else 'file'} in a {dataset} class folder "
            f"({len(stray)} such entries); move it out of the dataset folder"
        )
    return files


def check_class_folders(
    dataset_dir: Path, expected: Sequence[str], dataset: str, allowed_files: Sequence[str] = ()
) -> None:
    """The class folders must be exactly ``expected``; stray files only if ``allowed_files``."""
    dirs, files = list_dir(dataset_dir)
    missing = sorted(set(expected) - set(dirs))
    extra = sorted(set(dirs) - set(expected))
    stray = [f for f in files if f not in allowed_files]
    if missing:
        raise ValueError(
            f"{dataset_dir}: {len(missing)} of {len(expected)} {dataset} class folders are missing "
            f"(e.g. {', '.join(missing[:3])}); re-extract the dataset"
        )
    if extra:
        raise ValueError(
            f"{dataset_dir / extra[0]}: not a {dataset} class folder ({len(extra)} unexpected folders); move it out"
        )
    if stray:
        raise ValueError(
            f"{dataset_dir / stray[0]}: unexpected file in the {dataset} folder; move it out"
        )


def folder_records(
    dataset_dir: Path, folders: Sequence[str], labels: Sequence[int], dataset: str
) -> list[Record]:
    """Records for class folders ``folders[i]`` labelled ``labels[i]``; key = ``folder/file``."""
    out = []
    for folder, label in zip(folders, labels, strict=True):
        for name in image_files(dataset_dir / folder, dataset):
            out.append(Record(f"{folder}/{name}", int(label), dataset_dir / folder / name))
    return out


def class_counts(labels: Sequence[int]) -> Counter:
    return Counter(int(y) for y in labels)
