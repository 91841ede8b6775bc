"""The core types every package speaks: class maps, shift specs, examples, classifiers,
predictions and results.

Units: accuracies and every other metric are fractions in [0, 1]. Keys are stable strings
(relative path or webdataset ``__key__``) and identify an image across formats and runs.
"""

from __future__ import annotations

import abc
import contextvars
import hashlib
import json
import os
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

REDUCTIONS = ("max", "mean", "logsumexp")

#: The label of every example of unlabelled data (``folder-unlabeled``): its predictions are
#: stored for label-free analyses and never scored.
UNLABELED = -1


@dataclass(frozen=True)
class ClassMap:
    """How a model's label space maps onto a shift's classes.

    ``members[k]`` lists the source-space indices that make up target class ``k``; the
    target score is ``reduce`` over those source logits. ImageNet-R/-A (200 singletons) and
    ObjectNet (113 classes collecting 125 ImageNet ids) are both expressed this way.
    """

    name: str
    source: str
    targets: tuple[str, ...]
    members: tuple[tuple[int, ...], ...]
    reduce: str = "max"

    def __post_init__(self) -> None:
        if len(self.targets) != len(self.members):
            raise ValueError(
                f"class map {self.name!r}: {len(self.targets)} targets but {len(self.members)} member lists"
            )
        if self.reduce not in REDUCTIONS:
            raise ValueError(f"class map {self.name!r}: reduce must be one of {REDUCTIONS}, got {self.reduce!r}")
        if any(len(m) == 0 for m in self.members):
            raise ValueError(f"class map {self.name!r}: every target needs at least one source index")

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def source_indices(self) -> tuple[int, ...]:
        """All source indices the map uses, ascending."""
        return tuple(sorted({i for m in self.members for i in m}))

    def source_to_target(self) -> dict[int, int]:
        """Source index -> target index, for relabelling ID examples on the shift's classes.

        Raises if one source index feeds two targets (then relabelling is ambiguous)."""
        out: dict[int, int] = {}
        for k, m in enumerate(self.members):
            for i in m:
                if i in out:
                    raise ValueError(f"class map {self.name!r}: source index {i} belongs to two targets")
                out[i] = k
        return out

    def project(self, logits: np.ndarray) -> np.ndarray:
        """[N, C_source] -> [N, len(targets)] by ``reduce`` over each target's members."""
        logits = np.asarray(logits, dtype=np.float32)
        if all(len(m) == 1 for m in self.members):
            return logits[:, [m[0] for m in self.members]]
        cols = []
        for m in self.members:
            block = logits[:, list(m)]
            if self.reduce == "max":
                cols.append(block.max(axis=1))
            elif self.reduce == "mean":
                cols.append(block.mean(axis=1))
            else:
                top = block.max(axis=1, keepdims=True)
                cols.append((top + np.log(np.exp(block - top).sum(axis=1, keepdims=True)))[:, 0])
        return np.stack(cols, axis=1)

    def digest(self) -> str:
        """Content hash: two maps with the same digest project identically."""
        payload = json.dumps([self.source, self.targets, self.members, self.reduce])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @classmethod
    def identity(cls, name: str, source: str, targets: tuple[str, ...]) -> ClassMap:
        return cls(name=name, source=source, targets=tuple(targets), members=tuple((i,) for i in range(len(targets))))


@dataclass(frozen=True)
class ShiftSpec:
    """Everything known about a shift before touching its data (pure data, no I/O).

    ``label_space`` is the space a model must output (e.g. ``imagenet-1k``); ``class_map``
    maps it onto the shift's own classes (None: the shift's classes are the label space).
    ``id_reference`` names the in-distribution shift that is scored on the same classes to
    give the x-axis of the effective-robustness plot (e.g. ``imagenet`` for ImageNet-R).
    """

    name: str
    version: str
    family: str
    label_space: str
    num_classes: int
    expected_size: int
    class_map: ClassMap | None = None
    id_reference: str | None = None
    metrics: tuple[str, ...] = ("top1", "top5")
    main_metric: str = "top1"
    group_by: tuple[str, ...] = ()
    protocol: Mapping[str, str] = field(default_factory=dict)
    splits: tuple[str, ...] = ("test",)
    default_split: str = "test"
    homepage: str = ""
    citation: str = ""
    licence: str = ""

    def setting(self) -> str:
        """The name results and the testbed use for this evaluation."""
        return self.name


def is_unlabeled(spec: ShiftSpec) -> bool:
    """A shift of unlabelled images: predicted and stored, never scored."""
    return spec.protocol.get("labels") == "none"


def is_user_shift(spec: ShiftSpec) -> bool:
    """A labelled dataset of the user's own (``folder``, ``wds``): it knows no ID reference
    of its own; ``shiftbench run --id-shift`` names one."""
    return spec.family == "user" and not is_unlabeled(spec)


def id_view_setting(id_shift: str, ood_shift: str) -> str:
    """Name of the ID reference scored on an OOD shift's classes, e.g. ``imagenet@imagenet-r``."""
    return f"{id_shift}@{ood_shift}"


def id_setting_of(spec: ShiftSpec) -> str | None:
    """The setting an OOD shift's results pair with on the effective-robustness plot: its ID
    reference scored on the shift's classes where it has a class map (``imagenet@imagenet-r``),
    else the ID reference itself (``imagenet``, ``iwildcam:id_test``); None for an ID shift."""
    ref = spec.id_reference
    if not ref or ref == spec.name:
        return None
    return id_view_setting(ref, spec.name) if spec.class_map is not None else ref


def id_setting_with(spec: ShiftSpec, id_shift: str | None) -> str | None:
    """:func:`id_setting_of`, where a user shift takes ``id_shift`` (``run --id-shift``) as its
    ID reference. The rule is the same: a shift with a class map would pair with the view
    ``<id_shift>@<shift>``; ``folder`` and ``wds`` shifts have none (a model answers in their
    own classes), so they pair with ``id_shift`` itself."""
    if id_shift and is_user_shift(spec):
        from dataclasses import replace

        spec = replace(spec, id_reference=id_shift)
    return id_setting_of(spec)


SPLIT_SEPARATOR = ":"


def split_setting(shift: str, split: str) -> str:
    """Name of another split of a shift scored as its own setting, e.g. ``iwildcam:id_test``."""
    return f"{shift}{SPLIT_SEPARATOR}{split}"


class Example(NamedTuple):
    """One labelled image. ``label`` is in the shift's own label space."""

    image: Any
    label: int
    key: str
    meta: Mapping[str, Any]


class LazyExample(NamedTuple):
    """An example whose image is decoded only when ``load()`` is called (PIL image out).

    ``encoded``, where a reader can offer it, returns the image file's bytes such that
    ``load()`` is exactly PIL's decode of them converted to RGB (no crop or other change in
    between); the engine then may decode JPEGs in batches on the GPU. None: use ``load``.

    ``stamp``, where a reader can offer it, returns ``harness.files.file_stamp`` of the file
    the image is read from (its folder file or its shard): the engine's cache and cell
    identities hold it, so an image rewritten in place under the same name is read again, not
    taken for the one read before. None: such a rewrite goes unnoticed."""

    key: str
    label: int
    meta: Mapping[str, Any]
    load: Callable[[], Any]
    encoded: Callable[[], bytes] | None = None
    stamp: Callable[[], str] | None = None


class Shift(abc.ABC):
    """A dataset reader: a spec plus its examples read from the dataset's own layout."""

    spec: ShiftSpec

    @abc.abstractmethod
    def examples(self, root: Path, transform: Callable | None = None, split: str | None = None) -> Iterator[Example]:
        """Yield every example of ``split`` under ``root``; ``transform`` maps the PIL image."""

    def spec_for(self, root: Path) -> ShiftSpec:
        """The spec completed from the data under ``root`` (e.g. a class map read from the
        dataset's own mapping files); the default is ``spec``."""
        return self.spec

    def expected_size(self, split: str | None = None) -> int | None:
        """Published size of ``split`` (None when unknown); the default knows the default split."""
        return self.spec.expected_size if split in (None, self.spec.default_split) else None

    def lazy_examples(self, root: Path, split: str | None = None) -> Iterator[LazyExample]:
        """Same examples, same order, without decoding: the engine reads keys and labels, and
        each (rank, worker) shard decodes only its own images. Readers that can defer decoding
        should override this; the default decodes every image eagerly through ``examples``."""
        for ex in self.examples(root, None, split):
            yield LazyExample(ex.key, ex.label, ex.meta, lambda image=ex.image: image)


@dataclass(frozen=True)
class PreprocessSpec:
    """A model's eval transform as data, so the engine can build fast or cached pipelines."""

    image_size: int
    resize_size: int
    resize_mode: str = "shortest"  # "shortest" (keep aspect) or "squash"
    crop: str = "center"  # "center" or "none"
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Classifier(abc.ABC):
    """What ``models`` returns: one batched method from images to logits over ``label_space``."""

    name: str
    label_space: str
    num_classes: int
    preprocess_spec: PreprocessSpec

    @abc.abstractmethod
    def logits(self, images: Any) -> Any:
        """[B, 3, H, W] normalised float tensor -> [B, num_classes] logits."""

    def describe(self) -> dict[str, Any]:
        """Provenance: weights hash, alpha, soup ingredients, head recipe, tags."""
        return {"name": self.name, "label_space": self.label_space}


_BUILD_DEVICE: contextvars.ContextVar[str | None] = contextvars.ContextVar("shiftbench_build_device", default=None)


@contextmanager
def building_on(device: str | None) -> Iterator[None]:
    """Classifiers built inside will run on ``device`` (the engine's choice): a factory may do
    its build-time work there, e.g. encode a zero-shot head's prompts with the text tower on
    the run's GPU instead of the CPU. It never decides where the classifier runs."""
    token = _BUILD_DEVICE.set(device)
    try:
        yield
    finally:
        _BUILD_DEVICE.reset(token)


def build_device() -> str | None:
    """The device of the run building a classifier (``building_on``), or None outside one."""
    return _BUILD_DEVICE.get()


_CHECKING: contextvars.ContextVar[bool] = contextvars.ContextVar("shiftbench_checking", default=False)


@contextmanager
def checking_build() -> Iterator[None]:
    """Classifiers built inside are only checked, before a command writes anything: a factory
    reads and refuses its input as a real build does (options, files, a checkpoint against its
    architecture) but writes nothing (no cache entry) and may skip work that checks nothing
    (the weights' values: its modules may live on the ``meta`` device; a zero-shot head's text
    encoding). What it returns is read only for its name, label space, width and preprocessing."""
    token = _CHECKING.set(True)
    try:
        yield
    finally:
        _CHECKING.reset(token)


def is_checking_build() -> bool:
    """Whether the classifier being built is only checked (``checking_build``)."""
    return _CHECKING.get()


@dataclass
class Predictions:
    """Per-example outputs of one model on one shift: the unit everything is scored from."""

    model: str
    shift: str
    keys: np.ndarray  # [N] str
    labels: np.ndarray  # [N] int64, shift label space
    logits: np.ndarray  # [N, C] float16, full model width
    meta: dict[str, np.ndarray] = field(default_factory=dict)  # per-example metadata columns

    def __post_init__(self) -> None:
        n = len(self.keys)
        if len(self.labels) != n or len(self.logits) != n:
            raise ValueError(
                f"predictions {self.model}/{self.shift}: {n} keys, {len(self.labels)} labels, {len(self.logits)} logit rows"
            )
        for name, col in self.meta.items():
            if len(col) != n:
                raise ValueError(f"predictions {self.model}/{self.shift}: meta column {name!r} has {len(col)} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.keys)

    def sha256(self) -> str:
        """Hash of keys, labels, logits and metadata, independent of file encoding."""
        h = hashlib.sha256()
        h.update("\n".join(map(str, self.keys)).encode())
        h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(self.logits, dtype=np.float16).tobytes())
        for name in sorted(self.meta):
            h.update(name.encode())
            h.update(np.ascontiguousarray(self.meta[name]).tobytes())
        return h.hexdigest()

    def save(self, path: Path) -> str:
        """Write atomically as an ``.npz`` (no pickle); returns the content sha256."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")  # one per writer
        arrays = {
            "keys": np.asarray(self.keys, dtype=str),
            "labels": np.asarray(self.labels, dtype=np.int64),
            "logits": np.asarray(self.logits, dtype=np.float16),
            "header": np.asarray(json.dumps({"model": self.model, "shift": self.shift})),
        }
        for name, col in self.meta.items():
            arrays[f"meta.{name}"] = np.asarray(col)
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self.sha256()

    @classmethod
    def load(cls, path: Path) -> Predictions:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(str(z["header"]))
                meta = {k[5:]: z[k] for k in z.files if k.startswith("meta.")}
                return cls(header["model"], header["shift"], z["keys"], z["labels"], z["logits"], meta)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path}: not a readable predictions file ({exc}); rerun its cell with `shiftbench run ... --redo`") from exc


#: What a cell's identity (``harness.engine.identity``) records of the data it read.
CELL_DATA_FIELDS = ("data_root", "manifest", "data_files")


@dataclass(frozen=True)
class Result:
    """One row of ``results.jsonl``: a scored (model, setting) with its provenance."""

    model: str
    setting: str
    shift: str
    shift_version: str
    n: int
    n_expected: int
    metrics: Mapping[str, float]
    class_map: str | None = None
    protocol: Mapping[str, str] = field(default_factory=dict)
    group_counts: Mapping[str, int] = field(default_factory=dict)
    predictions_sha256: str | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)
    #: The setting this row pairs with on the ID-vs-OOD plot (None: an ID row, or unknown).
    id_setting: str | None = None
    #: The shift's official metric (a key of ``metrics``), e.g. ``macro_f1`` for iWildCam.
    main_metric: str = "top1"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def data_read(self) -> tuple | None:
        """What this row's cell recorded of the data it read (root, digest of keys and labels,
        digest of the image files' stamps), for telling two rows of equal keys but other images
        apart; None for a row without a cell identity (a published figure)."""
        cell = (self.provenance or {}).get("cell")
        return tuple(cell.get(k) for k in CELL_DATA_FIELDS) if isinstance(cell, Mapping) else None

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> Result:
        known = set(cls.__dataclass_fields__)
        unknown = set(row) - known
        if unknown:
            raise ValueError(f"result row has unknown fields {sorted(unknown)}")
        return cls(**row)


class SplitShift(Shift):
    """One fixed split of a shift, registered under ``<shift>:<split>`` (``iwildcam:id_test``).

    A WILDS shift names its ID split this way as its ``id_reference``, so a run over the OOD
    test also scores the ID split the WILDS paper compares it with, as its own cell."""

    def __init__(self, base: Shift, split: str, name: str) -> None:
        if split not in base.spec.splits:
            raise ValueError(f"shift {base.spec.name!r} has no split {split!r}; it has {', '.join(base.spec.splits)}")
        self.base, self.fixed_split = base, split
        size = base.expected_size(split) or 0
        self.spec = _split_spec(base.spec, split, name, size)

    def examples(self, root: Path, transform: Callable | None = None, split: str | None = None) -> Iterator[Example]:
        return self.base.examples(root, transform, self.fixed_split)

    def lazy_examples(self, root: Path, split: str | None = None) -> Iterator[LazyExample]:
        return self.base.lazy_examples(root, self.fixed_split)

    def spec_for(self, root: Path) -> ShiftSpec:
        full = self.base.spec_for(root)
        return _split_spec(full, self.fixed_split, self.spec.name, self.spec.expected_size)

    def expected_size(self, split: str | None = None) -> int | None:
        return self.spec.expected_size or None

    def __getattr__(self, name: str) -> Any:  # class names, templates, locate, ... of the base
        if name in ("base", "fixed_split", "spec"):
            raise AttributeError(name)
        return getattr(self.base, name)


def _split_spec(spec: ShiftSpec, split: str, name: str, size: int) -> ShiftSpec:
    from dataclasses import replace

    return replace(
        spec, name=name, expected_size=size, id_reference=None, splits=(split,), default_split=split,
        protocol={**spec.protocol, "split": split},
    )
