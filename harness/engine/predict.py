"""The predict loop: one model over one shift -> verified ``Predictions`` (exactly once).

Two passes over the shift's ``lazy_examples``. The manifest pass reads keys, labels and
metadata in the shift's own order without decoding pixels, so counts are checked before any
model time is spent. The image pass decodes each example in exactly one (rank, worker)
shard, or reads the decoded-image cache; every logit row is written at its example's index
and the result is checked for holes and duplicates.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.api import Classifier, LazyExample, Predictions, PreprocessSpec, Shift, ShiftSpec
from harness.engine.cache import ImageCache, cache_key
from harness.engine.distributed import World
from harness.engine.gpu_decode import (
    BatchDecoder,
    PackedPayloads,
    choose_decoder,
    decoder_fidelity,
    decoder_label,
    worker_payload,
)
from harness.engine.numerics import Numerics, applied, place, plan, warn_if_emulated
from harness.engine.pipeline import HostLogits, current_device, staged, true_fp32
from harness.scoring import resolve_split  # noqa: F401  (the core owns it)
from harness.transforms import geometry, normalize


@dataclass
class Manifest:
    """Keys, labels and metadata of one shift split, in the shift's order."""

    shift: str
    version: str
    split: str
    root: str
    keys: list[str]
    labels: np.ndarray
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    #: Digest of every example's file stamp (``LazyExample.stamp``), in order; "" where the
    #: reader offers none. Part of cache keys and cell identities: files rewritten in place
    #: under the same names are other data.
    files: str = ""

    def __len__(self) -> int:
        return len(self.keys)

    def without(self, indices: np.ndarray) -> Manifest:
        """The manifest less the examples at ``indices`` (images left out as undecodable)."""
        if not len(indices):
            return self
        keep = np.ones(len(self), dtype=bool)
        keep[indices] = False
        return dataclasses.replace(
            self,
            keys=[k for k, kept in zip(self.keys, keep, strict=True) if kept],
            labels=self.labels[keep],
            meta={name: column[keep] for name, column in self.meta.items()},
        )

    def digest(self) -> str:
        """Shift, version, split, root, every key and label in order, and the metadata columns
        (WILDS groups: FMoW's regions from its country table, iWildCam's locations), which the
        grouped metrics read: a metadata table changed under the same images is other data."""
        h = hashlib.sha256(json.dumps([self.shift, self.version, self.split, self.root]).encode())
        h.update("\n".join(self.keys).encode())
        h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        for name in sorted(self.meta):  # none for most shifts: their digests are as before
            h.update(json.dumps([name, np.asarray(self.meta[name]).tolist()]).encode())
        return h.hexdigest()


def read_manifest(shift: Shift, root: Path, split: str, name: str | None = None) -> Manifest:
    """One pass over the shift's examples without decoding images (``name``: as registered)."""
    keys: list[str] = []
    labels: list[int] = []
    columns: dict[str, list[Any]] = {}
    stamps = hashlib.sha256()
    stamped = False
    for ex in shift.lazy_examples(root, split):
        stamp = getattr(ex, "stamp", None)  # readers built on an older LazyExample have none
        stamped = stamped or stamp is not None
        stamps.update(((stamp() if stamp is not None else "-") + "\n").encode())
        if not columns and not keys:
            columns = {field_name: [] for field_name in ex.meta}
        if set(ex.meta) != set(columns):
            raise ValueError(
                f"shift {shift.spec.name!r}: example {ex.key!r} has metadata fields {sorted(ex.meta)}, "
                f"earlier examples {sorted(columns)}"
            )
        keys.append(str(ex.key))
        labels.append(int(ex.label))
        for field_name, value in ex.meta.items():
            columns[field_name].append(value)
    meta = {}
    for field_name, values in columns.items():
        col = np.asarray(values)
        meta[field_name] = col.astype(str) if col.dtype == object else col
    return Manifest(
        shift=name or shift.spec.name,
        version=shift.spec.version,
        split=split,
        root=str(Path(root).resolve()),
        keys=keys,
        labels=np.asarray(labels, dtype=np.int64),
        meta=meta,
        files=stamps.hexdigest() if stamped else "",
    )


def check_manifest(manifest: Manifest, spec: ShiftSpec, expected: int | None, allow_incomplete: bool = False) -> None:
    """Incomplete or mislabelled data is an error before any model runs."""
    n = len(manifest)
    if expected is not None and n != expected and not allow_incomplete:
        raise ValueError(
            f"shift {manifest.shift!r} under {manifest.root}: {n} examples in split {manifest.split!r}, "
            f"expected {expected}; the data is incomplete or not the expected version (see "
            "`shiftbench check-data`), or pass --allow-incomplete to score what is there (recorded as n < n_expected)"
        )
    if n == 0:
        raise ValueError(f"shift {manifest.shift!r} under {manifest.root}: no examples in split {manifest.split!r}")
    if len(set(manifest.keys)) != n:
        seen: set[str] = set()
        dup = next(k for k in manifest.keys if k in seen or seen.add(k))
        raise ValueError(f"shift {manifest.shift!r} under {manifest.root}: key {dup!r} occurs twice")
    from harness.api import UNLABELED, is_unlabeled

    if is_unlabeled(spec):
        if (manifest.labels != UNLABELED).any():
            raise ValueError(f"shift {manifest.shift!r}: an unlabelled shift's examples must carry no label")
        return
    bad = (manifest.labels < 0) | (manifest.labels >= spec.num_classes)
    if bad.any():
        raise ValueError(f"shift {manifest.shift!r}: label {int(manifest.labels[bad][0])} outside [0, {spec.num_classes})")


@dataclass(frozen=True)
class DecodeFailure:
    """An image a loader worker could not decode, sent on as data so the main process raises
    one clear line (an exception raised in a worker arrives wrapped in its traceback)."""

    message: str
    index: int = -1
    key: str = ""
    fatal: bool = False  # not an undecodable image but a broken cell: raised even with --skip-bad-images


class DecodeStream(torch.utils.data.IterableDataset):
    """(index, uint8 image) for this rank's share of a shift, split again across workers.

    Example ``i`` belongs to shard ``i % (ranks * workers)``; a shard decodes only its own
    images (``LazyExample.load``), so each image is decoded exactly once overall.

    ``keys``: the manifest's keys. Every pass lists the data again, so files added, removed or
    renamed since the manifest pass would move examples to other indices, and their logits
    onto other keys' labels; an example whose key is not the manifest's at its index stops
    the cell instead."""

    def __init__(
        self, shift: Shift, root: Path, split: str, spec: PreprocessSpec, world: World, keys: list[str] | None = None
    ) -> None:
        self.shift, self.root, self.split, self.spec, self.world = shift, root, split, spec, world
        self.keys = keys

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        shard, nshards = self.world.rank * nw + wid, self.world.size * nw
        geo = geometry(self.spec)
        for index, ex in enumerate(self.shift.lazy_examples(self.root, self.split)):
            if index % nshards == shard:
                moved = self._moved(index, str(ex.key))
                if moved is not None:
                    yield index, DecodeFailure(moved, index, str(ex.key), fatal=True)
                    return
                try:
                    item = self.payload(ex, geo)
                except (ValueError, OSError) as exc:
                    message = str(exc) if ex.key in str(exc) else f"image {ex.key!r}: {type(exc).__name__}: {exc}"
                    item = DecodeFailure(message, index, str(ex.key))
                yield index, item

    def _moved(self, index: int, key: str) -> str | None:
        if self.keys is None or (index < len(self.keys) and self.keys[index] == key):
            return None
        held = f"holds {self.keys[index]!r} there" if index < len(self.keys) else f"ends at {len(self.keys)} examples"
        return (
            f"{self.root}: the data changed while this cell ran: example {index} is now {key!r}, but the manifest "
            f"read before it {held}; let the copy or download finish, then run again (nothing of this cell is kept)"
        )

    def payload(self, ex: LazyExample, geo: Callable[[Any], torch.Tensor]) -> torch.Tensor:
        return geo(ex.load())


class EncodedStream(DecodeStream):
    """The same shards, handing baseline JPEGs over as bytes for ``gpu_decode.BatchDecoder``."""

    def payload(self, ex: LazyExample, geo: Callable[[Any], torch.Tensor]) -> torch.Tensor:
        return worker_payload(ex, geo)


def _split_failures(items: list[tuple[int, Any]]) -> tuple[np.ndarray, list[Any], list[DecodeFailure]]:
    good = [(i, p) for i, p in items if not isinstance(p, DecodeFailure)]
    failures = [p for _, p in items if isinstance(p, DecodeFailure)]
    return np.asarray([i for i, _ in good], dtype=np.int64), [p for _, p in good], failures


def _collate(items: list[tuple[int, Any]]) -> tuple[np.ndarray, torch.Tensor | None, list[DecodeFailure]]:
    indices, images, failures = _split_failures(items)
    return indices, torch.stack(images) if images else None, failures


def _collate_payloads(items: list[tuple[int, Any]]) -> tuple[np.ndarray, PackedPayloads, list[DecodeFailure]]:
    indices, payloads, failures = _split_failures(items)
    return indices, PackedPayloads(payloads), failures


def decoded_batches(
    stream: DecodeStream, batch_size: int, workers: int, pin: bool, collate: Callable = _collate, skipped: list[DecodeFailure] | None = None
) -> Iterator[tuple[np.ndarray, Any]]:
    """Decoded batches; an image that cannot be decoded is an error naming it, or, given a
    ``skipped`` list (``--skip-bad-images``), is recorded there and left out."""
    loader = torch.utils.data.DataLoader(
        stream,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin,
        prefetch_factor=4 if workers else None,
    )
    for indices, images, failures in loader:
        _left_out(failures, skipped)
        if len(indices):
            yield indices, images


def _left_out(failures: list[DecodeFailure], skipped: list[DecodeFailure] | None) -> None:
    """Undecodable images: an error naming the first, or recorded in ``skipped``."""
    fatal = [f for f in failures if f.fatal]
    if fatal:
        raise ValueError(fatal[0].message)
    if failures and skipped is None:
        message = failures[0].message
        if "--skip-bad-images" not in message:  # the built-in readers already say so
            message += "; replace the file, or pass --skip-bad-images to leave such images out (each is recorded and counted in the results)"
        raise ValueError(message)
    if failures and skipped is not None:
        skipped.extend(failures)


def device_decoded_batches(
    stream: EncodedStream, decoder: BatchDecoder, batch_size: int, workers: int, skipped: list[DecodeFailure] | None = None
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Workers read bytes (or PIL-decode what the batched decoder cannot take); each batch's
    JPEGs are decoded together on the decoder's device."""
    for idx, payloads in decoded_batches(stream, batch_size, workers, False, _collate_payloads, skipped):
        kept, images = decoder(idx, payloads.items())
        failures = [DecodeFailure(message, index, decoder.keys[index]) for index, message in decoder.failures]
        decoder.failures.clear()
        _left_out(failures, skipped)
        if len(kept):
            yield kept, images


def cached_batches(array: np.ndarray, world: World, batch_size: int) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Batches of this rank's rows, read by a background thread so reading overlaps compute."""
    indices = np.arange(world.rank, len(array), world.size)
    chunks = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    q: queue.Queue = queue.Queue(maxsize=4)

    def produce() -> None:
        for chunk in chunks:
            block = array[chunk[0] : chunk[-1] + 1 : world.size]
            q.put((chunk, torch.from_numpy(np.ascontiguousarray(block))))
        q.put(None)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    while (item := q.get()) is not None:
        yield item
    thread.join()


# -- forward ----------------------------------------------------------------------------


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc))


class BackoffForward:
    """Runs ``forward`` on chunks of a batch, halving the chunk size on out-of-memory.

    The chunk size found is kept for later batches and reported as ``batch_size``."""

    def __init__(self, forward: Callable[[torch.Tensor], Any], batch_size: int, on_oom: Callable[[], None] | None = None) -> None:
        self.forward = forward
        self.batch_size = batch_size
        self.on_oom = on_oom or _release_gpu_memory

    def __call__(self, batch: torch.Tensor) -> Any:
        out = []
        start = 0
        while start < len(batch):
            piece = batch[start : start + self.batch_size]
            try:
                out.append(self.forward(piece))
            except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
                if not is_oom(exc):
                    raise
                if self.batch_size == 1:
                    raise ValueError("out of GPU memory even at batch size 1; use a smaller model or another device") from exc
                self.batch_size = max(1, self.batch_size // 2)
                self.on_oom()
                continue
            start += len(piece)
        return torch.cat(out) if isinstance(out[0], torch.Tensor) else np.concatenate(out)


def _release_gpu_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def make_forward(classifier: Classifier, device: torch.device, precision: str | Numerics) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 batch -> float32 logits, left on the device, under no_grad and the precision's autocast.

    The engine alone sets device, precision and layout: the classifier already sits on
    ``device`` with its weights as ``numerics.applied`` left them, and opens no autocast of
    its own. no_grad rather than inference_mode: with bf16 autocast on CPU it measured 1.5x
    faster."""
    spec = classifier.preprocess_spec
    numerics = precision if isinstance(precision, Numerics) else plan(precision, classifier)

    def forward(batch: torch.Tensor) -> np.ndarray:
        x = normalize(batch.to(device, non_blocking=True), spec)
        if numerics.weights is not None:
            x = x.to(numerics.weights)
        if numerics.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        amp = torch.autocast(device.type, dtype=numerics.autocast) if numerics.autocast is not None else contextlib.nullcontext()
        with torch.no_grad(), amp:
            out = classifier.logits(x)
        return torch.as_tensor(out).float()  # on the device: copied back by HostLogits, without a sync

    return forward


def fp16_top1_changed(logits: np.ndarray, stored: np.ndarray) -> int:
    """Examples whose top-1 class differs between the logits computed and the float16 ones
    stored (rounding can tie or swap two close logits); expected to be about 0."""
    if not len(logits):
        return 0
    return int((logits.argmax(1) != stored.argmax(1)).sum())


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        shown = "" if visible is None else f" (CUDA_VISIBLE_DEVICES={visible!r})"
        raise ValueError(f"device {name!r} requested but no CUDA GPU is available{shown}; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} requested but this machine has {torch.cuda.device_count()} CUDA GPU(s); use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


# -- the cell ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictOptions:
    batch_size: int = 64
    workers: int = 2
    device: str = "auto"
    precision: str = "fp32"
    agreement_sample: int = 64
    min_agreement: float = 0.95
    cache_dir: str = ""
    progress: bool = True
    decoder: str = "auto"  # auto | pil | torchvision (harness.engine.gpu_decode.choose_decoder)
    skip_bad_images: bool = False  # leave undecodable images out, recording each key


def check_fits(classifier: Classifier, spec: ShiftSpec) -> None:
    """A model whose label space does not fit the shift is refused before predicting."""
    if classifier.label_space != spec.label_space:
        raise ValueError(
            f"model {classifier.name!r} outputs label space {classifier.label_space!r} but shift "
            f"{spec.name!r} needs {spec.label_space!r}; choose a model with that head"
        )
    width = spec.class_map.source_indices[-1] + 1 if spec.class_map else spec.num_classes
    if classifier.num_classes < width:
        raise ValueError(
            f"model {classifier.name!r} has {classifier.num_classes} outputs but shift {spec.name!r} "
            f"needs at least {width}"
        )
    spec_p = classifier.preprocess_spec
    if spec_p.crop == "none" and spec_p.resize_mode == "shortest":
        raise ValueError(
            f"model {classifier.name!r}: crop='none' with resize_mode='shortest' gives images of "
            "different sizes; use crop='center' or resize_mode='squash'"
        )


def verify(preds: Predictions, manifest: Manifest, num_classes: int) -> None:
    """count == expected, keys unique and in manifest order, labels in range, no NaN."""
    name = f"{preds.model} on {preds.shift}"
    if len(preds) != len(manifest):
        raise ValueError(f"{name}: {len(preds)} predictions for {len(manifest)} examples")
    if list(map(str, preds.keys)) != manifest.keys:
        raise ValueError(f"{name}: predicted keys differ from the shift's keys")
    if len(set(manifest.keys)) != len(manifest):
        raise ValueError(f"{name}: duplicate keys")
    if preds.logits.ndim != 2 or preds.logits.shape[1] != num_classes:
        raise ValueError(f"{name}: logits have shape {preds.logits.shape}, expected [N, {num_classes}]")
    finite = np.isfinite(preds.logits)
    if not finite.all():
        row = int(np.argwhere(~finite.all(axis=1))[0][0])
        raise ValueError(
            f"{name}: non-finite logit (NaN or inf, possibly fp16 overflow) for example {manifest.keys[row]!r}; "
            "nothing was written for this cell; try --precision fp32 or bf16"
        )


@dataclass
class RankPass:
    """What one rank predicted of a cell, before the ranks' rows are gathered."""

    indices: np.ndarray
    logits: np.ndarray
    agreement: tuple[int, int, float] | None  # fp32 agreement counts on this rank's sample
    skipped: list[DecodeFailure] | None
    batch_size: int  # as the out-of-memory back-off left it
    batch_decoder: BatchDecoder | None
    source: str  # cache | decode
    cache_note: str | None
    agreement_s: float = 0.0  # seconds of the fp32 agreement re-run (part of the cell's elapsed_s)


def _predict_here(
    classifier: Classifier,
    model_name: str,
    shift: Shift,
    manifest: Manifest,
    root: Path,
    options: PredictOptions,
    world: World,
    device: torch.device,
    numerics: Numerics,
    decoder: str,
    cache: ImageCache | None,
    key: str,
    cached: np.ndarray | None,
) -> RankPass:
    """This rank's share of the cell. No collectives inside (``World.together`` runs it)."""
    spec = classifier.preprocess_spec
    n, size = len(manifest), spec.image_size
    writer, cache_note = None, None
    if cache is not None and cached is None and world.size == 1:
        try:
            writer = cache.writer(key, n, size)
        except (OSError, ValueError) as exc:  # the cache only saves time: run without it
            cache_note = f"not written: cannot reserve {n * 3 * size * size:,} bytes in {cache.dir} ({getattr(exc, 'strerror', None) or exc})"
            print(f"image cache {cache_note}; predicting without it", file=sys.stderr)
    batch_decoder = None
    skipped: list[DecodeFailure] | None = [] if options.skip_bad_images else None
    if cached is not None:
        batches = cached_batches(cached, world, options.batch_size)
        source = "cache"
    elif decoder == "torchvision":
        batch_decoder = BatchDecoder(spec, device, manifest.keys)
        stream = EncodedStream(shift, root, manifest.split, spec, world, manifest.keys)
        batches = device_decoded_batches(stream, batch_decoder, options.batch_size, options.workers, skipped)
        source = "decode"
    else:
        stream = DecodeStream(shift, root, manifest.split, spec, world, manifest.keys)
        batches = decoded_batches(stream, options.batch_size, options.workers, device.type == "cuda", skipped=skipped)
        source = "decode"
    keep = None if writer is None else (lambda idx, images: writer.put(idx, images.cpu().numpy()))
    batches = staged(batches, device, keep)

    forward = BackoffForward(make_forward(classifier, device, numerics), options.batch_size)
    parts_idx: list[np.ndarray] = []
    host_logits = HostLogits(device)
    sample_idx: list[np.ndarray] = []
    sample_img: list[torch.Tensor] = []
    sampled = 0
    from tqdm import tqdm

    bar = tqdm(
        total=len(range(world.rank, n, world.size)),
        unit="img",
        desc=f"{model_name} | {manifest.shift}",
        disable=not options.progress or world.rank != 0,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
    )
    placement = contextlib.ExitStack()  # bf16 weights / channels_last for this pass only
    placement.enter_context(applied(classifier, numerics))
    try:
        for idx, images in batches:
            logits = forward(images)
            if logits.shape != (len(idx), classifier.num_classes):
                raise ValueError(
                    f"model {model_name!r} returned logits of shape {tuple(logits.shape)} for a batch of "
                    f"{len(idx)}; it declares {classifier.num_classes} classes"
                )
            parts_idx.append(idx)
            host_logits.add(logits)
            if numerics.reduced and sampled < options.agreement_sample:
                take = min(len(idx), options.agreement_sample - sampled)
                sample_idx.append(idx[:take])
                sample_img.append(images[:take].clone())
                sampled += take
            bar.update(len(idx))
    except BaseException:
        batches.close()  # the staging thread stops before the entry it writes is removed
        if writer is not None:
            writer.abort()
        raise
    finally:
        bar.close()
        placement.close()  # the fp32 agreement pass below runs the weights as loaded
    if writer is not None:
        if skipped:
            writer.abort()  # a cache entry with holes would be read as complete
        elif not writer.commit():
            cache_note = f"not written: publishing the entry in {writer.data_path.parent} failed"

    indices = np.concatenate(parts_idx) if parts_idx else np.zeros(0, dtype=np.int64)
    logits = host_logits.numpy(classifier.num_classes)
    agreement_start = time.perf_counter()
    agreement = fp32_agreement(classifier, device, forward.batch_size, sample_idx, sample_img, indices, logits)
    agreement_s = round(time.perf_counter() - agreement_start, 3) if agreement is not None else 0.0
    return RankPass(indices, logits, agreement, skipped, forward.batch_size, batch_decoder, source, cache_note, agreement_s)


def fp32_agreement(
    classifier: Classifier, device: torch.device, batch_size: int, sample_idx: list[np.ndarray], sample_img: list[torch.Tensor],
    indices: np.ndarray, logits: np.ndarray,
) -> tuple[int, int, float] | None:
    """(top-1 agreements, sample size, max |logit difference|) of the sampled images run again
    in fp32, under the same out-of-memory back-off as the pass (from the batch size it found):
    an OOM here must not lose a cell already predicted."""
    if not sample_img:
        return None
    ref = BackoffForward(make_forward(classifier, device, "fp32"), batch_size)(torch.cat(sample_img))
    ref = torch.as_tensor(ref).float().cpu().numpy()
    pos = {int(i): k for k, i in enumerate(indices)}
    low = logits[[pos[int(i)] for i in np.concatenate(sample_idx)]]
    return int((ref.argmax(1) == low.argmax(1)).sum()), len(ref), float(np.abs(ref - low).max())


def predict(
    classifier: Classifier,
    model_name: str,
    shift: Shift,
    manifest: Manifest,
    root: Path,
    options: PredictOptions,
    world: World | None = None,
) -> tuple[Predictions, dict[str, Any]]:
    """Run ``classifier`` over every example once; returns predictions and timing stats."""
    world = world or World.single()
    with world.together(f"preparing {model_name} | {manifest.shift}"):
        device = resolve_device(options.device)
        numerics = plan(options.precision, classifier)
        warn_if_emulated(numerics, device)
        place(classifier, device)
        spec = classifier.preprocess_spec
        n, size = len(manifest), spec.image_size
        start = time.perf_counter()
        decoder = choose_decoder(options.decoder, device, spec, model_name)
        label = decoder_label(decoder, device)
        cache = ImageCache(options.cache_dir) if options.cache_dir else None
        key = cache_key(manifest.digest(), spec, label, manifest.files) if cache else ""
        cached = cache.open(key, n, size) if cache else None
    # Ranks shard cached rows and decoded images differently: all read the cache, or none does.
    if not world.all_ok(cached is not None):
        cached = None
    with world.together(f"predicting {model_name} | {manifest.shift}"), true_fp32(), current_device(device):
        local = _predict_here(
            classifier, model_name, shift, manifest, root, options, world, device, numerics, decoder, cache, key, cached
        )
    skipped, batch_decoder = local.skipped, local.batch_decoder
    skipped_all = world.gather_objects(sorted((f.index, f.key) for f in skipped or []))
    skipped_pairs = sorted(pair for part in skipped_all for pair in part)
    absent = np.asarray([i for i, _ in skipped_pairs], dtype=np.int64)
    indices, logits, agreement = world.gather_by_index(local.indices, local.logits, n, local.agreement, absent=absent)
    kept = manifest.without(absent)

    elapsed = time.perf_counter() - start
    stored = logits.astype(np.float16)  # what is saved, scored now and rescored by `shiftbench score`
    preds = Predictions(
        model=model_name,
        shift=manifest.shift,
        keys=np.asarray(kept.keys, dtype=str),
        labels=kept.labels,
        logits=stored,
        meta=dict(kept.meta),
    )
    stats: dict[str, Any] = {
        "elapsed_s": round(elapsed, 3),
        "images_per_s": round(n / elapsed, 1) if elapsed > 0 else None,
        "source": local.source,
        "decoder": label,
        "decoder_fidelity": decoder_fidelity(label),
        "batch_size": local.batch_size,
        "device": str(device),
        **numerics.record(device),
        "fp16_top1_changed": fp16_top1_changed(logits, stored),
        "world_size": world.size,
    }
    if local.cache_note is not None:
        stats["cache"] = local.cache_note
    if skipped is not None:
        stats["skipped_images"] = len(skipped_pairs)
        stats["skipped_keys"] = [key for _, key in skipped_pairs]
    if batch_decoder is not None:
        counts = world.sum_counts([batch_decoder.on_device, batch_decoder.with_pil])
        stats["decoded_on_device"], stats["decoded_with_pil"] = counts
    if agreement is not None:
        agree, total, max_diff = agreement
        stats["fp32_agreement"] = agree / total
        stats["fp32_agreement_n"] = total
        stats["fp32_max_abs_diff"] = max_diff
        stats["fp32_agreement_s"] = local.agreement_s  # this rank's fp32 re-run, part of elapsed_s
        if agree / total < options.min_agreement:
            raise ValueError(
                f"{model_name} on {manifest.shift}: {options.precision} top-1 agrees with fp32 on only "
                f"{agree}/{total} sampled images (minimum {options.min_agreement:.0%}); use --precision fp32 "
                "or lower --min-agreement"
            )
    return preds, stats
