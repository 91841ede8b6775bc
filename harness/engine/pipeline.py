"""Overlap around the forward pass: batches staged on a side thread, logits copied back late.

The forward's thread only launches forward passes. A background thread pulls the next
batches (loader workers' output, the batched JPEG decoder, the cached array), hands each to
the cache writer and copies it to the device; on CUDA it works on its own stream from pinned
memory with ``non_blocking`` copies, and the forward's stream waits for each batch's event
rather than the host waiting for the copy. Logits go back to pinned host memory with
``non_blocking`` copies, and the host waits once, when the cell's logits are gathered: no
GPU->CPU synchronisation per batch. On the CPU the same code runs with plain copies, which is
how it is tested without a GPU.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

Batch = tuple[np.ndarray, torch.Tensor]


class _Done:
    pass


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def staged(
    batches: Iterator[Batch], device: torch.device, keep: Callable[[np.ndarray, torch.Tensor], None] | None = None, depth: int = 2
) -> Iterator[Batch]:
    """``batches`` produced ``depth`` ahead on a background thread, each already on ``device``.

    ``keep(indices, images)`` runs on that thread before the copy (the cache writer: its
    copy to the host never stalls the forward). An error on the thread is raised here; when
    the consumer stops early, the thread stops after its current batch."""
    items: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    cuda = device.type == "cuda"
    stream = torch.cuda.Stream(device) if cuda else None

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                for indices, images in batches:
                    if keep is not None:
                        keep(indices, images)
                    if stream is not None and images.device.type == "cpu" and not images.is_pinned():
                        images = images.pin_memory()  # (the loader pins decoded batches itself)
                    images = images.to(device, non_blocking=True)
                    ready = None
                    if stream is not None:
                        ready = torch.cuda.Event()
                        ready.record(stream)
                    if not put((indices, images, ready)):
                        return
            put(_Done())
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            put(_Failed(exc))
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="shiftbench-batches", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if isinstance(item, _Done):
                return
            if isinstance(item, _Failed):
                raise item.exc
            indices, images, ready = item
            if ready is not None:
                current = torch.cuda.current_stream(device)
                current.wait_event(ready)
                images.record_stream(current)  # allocated on the side stream, used on this one
            yield indices, images
    finally:
        stop.set()
        thread.join()


class HostLogits:
    """Each batch's logits copied to the host without waiting; ``numpy`` waits once."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.parts: list[torch.Tensor] = []

    def add(self, logits: torch.Tensor) -> None:
        if logits.device.type == "cuda":
            host = torch.empty(logits.shape, dtype=logits.dtype, pin_memory=True)
            host.copy_(logits, non_blocking=True)
            self.parts.append(host)
        else:
            self.parts.append(logits.detach().cpu())

    def numpy(self, width: int) -> np.ndarray:
        """Every batch's logits in order, float32 ``[N, width]``."""
        if any(p.is_pinned() for p in self.parts):
            torch.cuda.synchronize(self.device)
        if not self.parts:
            return np.zeros((0, width), np.float32)
        return torch.cat(self.parts).float().numpy()


@contextlib.contextmanager
def true_fp32() -> Iterator[None]:
    """float32 matmuls and convolutions in IEEE fp32, not TF32, inside the block.

    PyTorch runs cuDNN convolutions in TF32 by default on Ampere and later GPUs (and matmuls
    too where ``set_float32_matmul_precision`` was lowered): ``--precision fp32`` and the
    fp32 reference of the agreement check mean true fp32. Reduced-precision passes are
    unaffected (autocast runs those layers in bf16/fp16). The flags are process-wide and
    restored on exit."""
    backends = (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn)
    before = [b.fp32_precision for b in backends]
    for b in backends:
        b.fp32_precision = "ieee"
    try:
        yield
    finally:
        for b, value in zip(backends, before, strict=True):
            b.fp32_precision = value


def current_device(device: torch.device) -> contextlib.AbstractContextManager:
    """``device`` as the thread's current CUDA device inside the block: pinned buffers and
    the caching allocator then never create a context on GPU 0 for a ``cuda:N`` run."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
