"""Data-parallel evaluation under ``torchrun``: shard a shift across ranks, gather by index.

Each rank predicts its own examples; ``gather_by_index`` collects every rank's (index,
logits) on every rank and checks that each example was predicted exactly once before
anything is written. Only rank 0 writes the run directory. gloo on CPU, nccl on GPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np


class RankFailed(RuntimeError):
    """Another rank failed in a step this rank finished: raised on every rank but the one that
    failed (which raises its own error), so all ranks stop together with its message."""


@dataclass(frozen=True)
class World:
    rank: int
    size: int

    @classmethod
    def single(cls) -> World:
        return cls(0, 1)

    @classmethod
    def from_env(cls, device: str | Any = "cpu") -> World:
        """Join the process group ``torchrun`` describes in the environment, if any.

        On CUDA each rank is bound to its own GPU (``LOCAL_RANK``) before NCCL starts, both
        with ``set_device`` (so plain ``cuda`` means this rank's GPU) and with the group's
        ``device_id``; without it every rank would use cuda:0. A single process asked for
        ``cuda:N`` makes N its current device, so nothing creates a context on GPU 0."""
        import torch

        device = torch.device(device)
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            if device.type == "cuda" and device.index is not None:
                torch.cuda.set_device(device.index)
            return cls.single()
        import torch.distributed as dist

        kwargs: dict[str, Any] = {}
        if device.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            if device.index is not None:
                raise ValueError(
                    f"--device {device} under torchrun: each rank runs on its own GPU (LOCAL_RANK); "
                    "use --device cuda, and choose GPUs with CUDA_VISIBLE_DEVICES"
                )
            torch.cuda.set_device(local)
            kwargs["device_id"] = torch.device("cuda", local)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", **kwargs)
        return cls(dist.get_rank(), dist.get_world_size())

    def close(self) -> None:
        """Leave the process group together: without it, a rank exiting first can make the
        other abort in gloo's shutdown."""
        if self.size > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()

    def all_ok(self, ok: bool) -> bool:
        """True only if every rank says ok (so all ranks raise or go on together)."""
        if self.size == 1:
            return ok
        import torch.distributed as dist

        flags: list[Any] = [None] * self.size
        dist.all_gather_object(flags, bool(ok))
        return all(flags)

    @contextmanager
    def together(self, what: str) -> Iterator[None]:
        """Run a rank-local step (no collectives inside) and let every rank learn whether every
        other rank finished it. A rank that raised re-raises its own error after telling the
        others; the others raise ``RankFailed`` naming it. Without this, one rank's error leaves
        the rest waiting in the next collective until the backend's timeout (30 min for gloo,
        10 for NCCL)."""
        try:
            yield
        except Exception as exc:
            self._report(f"{type(exc).__name__}: {exc}", what)
            raise
        self._report(None, what)

    def _report(self, error: str | None, what: str) -> None:
        if self.size == 1:
            return
        reports = self.gather_objects(error)
        if error is not None:
            return
        failed = [(rank, message) for rank, message in enumerate(reports) if message is not None]
        if failed:
            rank, message = failed[0]
            raise RankFailed(f"rank {rank} of {self.size} failed {what}: {message}")

    def abandon(self) -> None:
        """Leave the process group after an error, without waiting for the other ranks."""
        if self.size > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def from_main(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank: for decisions every rank must take alike (which
        cells to predict), where ranks may see a shared directory differently for a moment."""
        return obj if self.size == 1 else self.gather_objects(obj)[0]

    def sum_counts(self, counts: list[int]) -> list[int]:
        """Element-wise totals of every rank's counts, on every rank."""
        return [sum(c) for c in zip(*self.gather_objects(list(counts)), strict=True)]

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if self.size == 1:
            return [obj]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.size
        dist.all_gather_object(gathered, obj)
        return gathered

    def gather_by_index(
        self,
        indices: np.ndarray,
        logits: np.ndarray,
        n: int,
        agreement: tuple[int, int, float] | None = None,
        absent: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, tuple[int, int, float] | None]:
        """All ranks' rows in example order, checked exactly-once; agreement counts summed.

        ``absent``: indices deliberately left out (skipped images); each example is then
        either predicted or absent, exactly once."""
        parts = [(indices, logits, agreement)]
        if self.size > 1:
            import torch.distributed as dist

            gathered: list[Any] = [None] * self.size
            dist.all_gather_object(gathered, parts[0])
            parts = gathered
        all_idx = np.concatenate([p[0] for p in parts]).astype(np.int64)
        all_logits = np.concatenate([p[1] for p in parts]) if all_idx.size else np.zeros((0, logits.shape[1]), logits.dtype)
        check_exactly_once(all_idx if absent is None else np.concatenate([all_idx, absent.astype(np.int64)]), n)
        order = np.argsort(all_idx, kind="stable")
        agreements = [p[2] for p in parts if p[2] is not None]
        total = None
        if agreements:
            total = (sum(a[0] for a in agreements), sum(a[1] for a in agreements), max(a[2] for a in agreements))
        return all_idx[order], all_logits[order], total


def check_exactly_once(indices: np.ndarray, n: int) -> None:
    """Every index in ``[0, n)`` exactly once, or a ValueError saying which are wrong."""
    counts = np.bincount(indices[(indices >= 0) & (indices < n)], minlength=n) if n else np.zeros(0, dtype=np.int64)
    out_of_range = indices[(indices < 0) | (indices >= n)]
    missing = np.flatnonzero(counts == 0)
    repeated = np.flatnonzero(counts > 1)
    if out_of_range.size or missing.size or repeated.size:
        raise ValueError(
            f"predictions are not exactly-once over {n} examples: {missing.size} missing (first {missing[:5].tolist()}), "
            f"{repeated.size} repeated (first {repeated[:5].tolist()}), {out_of_range.size} out of range; "
            "the shift must yield examples in the same order on every pass and rank"
        )
