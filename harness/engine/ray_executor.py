"""``--executor ray``: each model's cells run as one Ray task against the shared run directory.

Ray is an optional extra (``pip install 'shiftbench[ray]'``). One task first checks every
model's plan (``Engine.check``), so a refused run writes nothing. Tasks resume like local runs:
each skips its done cells; cells and ``results.jsonl`` are guarded by file locks
(``harness.engine.store``), so concurrent tasks never tear or lose a row. The run directory
must be on storage every Ray worker sees.

A run on CUDA (``--device cuda``/``cuda:N``, or ``auto`` where the Ray cluster has GPUs) asks
Ray for one GPU per task, and Ray gives each task its own (``CUDA_VISIBLE_DEVICES``). A task
that requests none is given none: Ray versions that hide the GPUs from it
(``CUDA_VISIBLE_DEVICES=""``) make ``cuda`` fail and ``auto`` run on the CPU; Ray 2.60 leaves
the variable unset, so every such task would crowd onto GPU 0. Inside the task ``auto`` and
``cuda:N`` become ``cuda``: the GPU Ray assigned, whatever its number on the node.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from harness.config import RunConfig
from harness.engine.run import Engine, ModelSource, RunLog


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ValueError("--executor ray needs Ray: pip install 'shiftbench[ray]' (or use --executor local)") from None
    return ray


def _engine(config: RunConfig, redo: bool) -> Engine:
    return Engine(dataclasses.replace(config, progress=False), log=RunLog(config.json, quiet=True), redo=redo)


def _run_one(config: RunConfig, source: ModelSource, redo: bool = False) -> list[dict[str, Any]]:
    return _engine(config, redo).run([source])


def _check_all(config: RunConfig, sources: list[ModelSource], redo: bool = False) -> None:
    """Every model's plan checked in one task, where the cells run, before any task writes."""
    _engine(config, redo).check(sources)


def task_resources(config: RunConfig, cluster_gpus: float) -> tuple[dict[str, Any], RunConfig]:
    """Ray task options for the run's device, and the config each task runs with.

    ``auto`` runs on a GPU when the Ray cluster has one (``cluster_gpus``), whether or not
    the driving machine does."""
    if config.device == "auto":
        on_gpu = cluster_gpus > 0
    else:
        try:
            on_gpu = torch.device(config.device).type == "cuda"
        except RuntimeError:
            raise ValueError(f"unknown device {config.device!r}; use auto, cpu, cuda or cuda:N") from None
    if not on_gpu:
        return {"num_gpus": 0}, dataclasses.replace(config, device="cpu")
    if cluster_gpus < 1:
        raise ValueError(f"--device {config.device} with --executor ray, but the Ray cluster has no GPU")
    return {"num_gpus": 1}, dataclasses.replace(config, device="cuda")


def run_on_ray(config: RunConfig, sources: list[ModelSource], log: RunLog, redo: bool = False) -> list[dict[str, Any]]:
    ray = _import_ray()
    if not ray.is_initialized():
        ray.init(address="auto" if _has_cluster() else None)
    options, config = task_resources(config, _cluster_gpus(ray))
    ray.get(ray.remote(_check_all).options(**options).remote(config, sources, redo))  # a refused run writes nothing
    task = ray.remote(_run_one).options(**options)
    futures = [task.remote(config, s, redo) for s in sources]
    summary: list[dict[str, Any]] = []
    for source, future in zip(sources, futures, strict=True):
        rows = ray.get(future)
        log.event("model_done", f"{source.name}: {len(rows)} settings", model=source.name)
        summary.extend(rows)
    return summary


def _cluster_gpus(ray: Any) -> float:
    return float(ray.cluster_resources().get("GPU", 0))


def _has_cluster() -> bool:
    import os

    return bool(os.environ.get("RAY_ADDRESS"))
