"""``--executor ray``: each model's cells run as one Ray task against the shared run directory.

Ray is an optional extra (``pip install 'shiftbench[ray]'``). Tasks resume like local runs:
each skips its done cells; cells and ``results.jsonl`` are guarded by file locks
(``harness.engine.store``), so concurrent tasks never tear or lose a row. The run directory must be on storage every Ray worker sees.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from harness.config import RunConfig
from harness.engine.run import Engine, ModelSource, RunLog


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ValueError("--executor ray needs Ray: pip install 'shiftbench[ray]' (or use --executor local)") from None
    return ray


def _run_one(config: RunConfig, source: ModelSource, redo: bool = False) -> list[dict[str, Any]]:
    return Engine(dataclasses.replace(config, progress=False), log=RunLog(config.json, quiet=True), redo=redo).run([source])


def run_on_ray(config: RunConfig, sources: list[ModelSource], log: RunLog, redo: bool = False) -> list[dict[str, Any]]:
    ray = _import_ray()
    if not ray.is_initialized():
        ray.init(address="auto" if _has_cluster() else None)
    task = ray.remote(_run_one)
    futures = [task.remote(config, s, redo) for s in sources]
    summary: list[dict[str, Any]] = []
    for source, future in zip(sources, futures, strict=True):
        rows = ray.get(future)
        log.event("model_done", f"{source.name}: {len(rows)} settings", model=source.name)
        summary.extend(rows)
    return summary


def _has_cluster() -> bool:
    import os

    return bool(os.environ.get("RAY_ADDRESS"))
