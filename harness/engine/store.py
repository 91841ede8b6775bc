"""The run directory (``docs/run-directory.md``): config, predictions, results.

Every write goes to a temporary file that is renamed into place, so a crash or a full
disk leaves either the old file or the new one, never half of either. Each predictions
file has a small sidecar (``<shift>.json``: cell hash and sha256) written after it, which
is how a rerun knows a cell finished predicting even if scoring never ran.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.api import Predictions, Result
from harness.config import RunConfig
from harness.layout import RunLayout, safe_name

__all__ = ["RunDir", "atomic_write_text", "safe_name"]


def _storage_error(path: Path, exc: OSError) -> ValueError:
    if exc.errno == errno.ENOSPC:
        return ValueError(f"disk full while writing {path}; free space and rerun (completed cells are kept)")
    return ValueError(f"cannot write {path}: {exc.strerror or exc}; fix the path or permissions and rerun")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file + fsync + rename.

    The temp name is unique per writer, so processes sharing a run directory (Ray tasks,
    torchrun ranks) never rename each other's half-written files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _storage_error(path, exc) from exc


class RunDir(RunLayout):
    """One run directory; every method is safe to call again after a crash. The reading
    methods are the core's (:class:`harness.layout.RunLayout`); this class writes."""

    # -- config -------------------------------------------------------------------------
    def adopt_config(self, config: RunConfig) -> RunConfig:
        """Record ``config``; a directory made with other identity settings is refused.

        The stored models and shifts become the union of old and new, so the directory
        describes everything it holds.
        """
        old = self.read_config()
        if old is not None and old.identity() != config.identity():
            diffs = [f"{k}: {old.identity()[k]!r} -> {config.identity()[k]!r}" for k in old.identity() if old.identity()[k] != config.identity()[k]]
            raise ValueError(
                f"run directory {self.path} was made with another configuration ({'; '.join(diffs)}); "
                "use a new --run-dir, or the original settings"
            )
        merged = config
        if old is not None:
            merged = dataclasses.replace(
                config,
                models=_union(old.models, config.models),
                shifts=_union(old.shifts, config.shifts),
            )
        payload = {"config_hash": merged.config_hash(), "config": merged.to_dict()}
        atomic_write_text(self.config_path, json.dumps(payload, indent=2, sort_keys=True) + "\n")
        return merged

    # -- predictions ---------------------------------------------------------------------
    def save_predictions(self, preds: Predictions, cell_hash: str, stats: dict[str, Any] | None = None) -> str:
        """Write the predictions, then the sidecar that marks the cell as predicted."""
        path = self.predictions_path(preds.model, preds.shift)
        try:
            sha = preds.save(path)
        except OSError as exc:
            path.with_name(path.name + ".tmp").unlink(missing_ok=True)
            raise _storage_error(path, exc) from exc
        sidecar = {"model": preds.model, "shift": preds.shift, "cell_hash": cell_hash, "sha256": sha, "n": len(preds), "stats": stats or {}}
        atomic_write_text(self.sidecar_path(preds.model, preds.shift), json.dumps(sidecar, sort_keys=True, default=str) + "\n")
        return sha

    def finished_predictions(self, model: str, shift: str, cell_hash: str) -> Predictions | None:
        """Predictions of a cell that finished predicting with ``cell_hash``, else None."""
        sidecar = self.sidecar_path(model, shift)
        path = self.predictions_path(model, shift)
        if not (sidecar.exists() and path.exists()):
            return None
        try:
            meta = json.loads(sidecar.read_text())
        except json.JSONDecodeError:
            return None
        if meta.get("cell_hash") != cell_hash:
            return None
        try:
            preds = Predictions.load(path)
        except ValueError:
            return None
        if preds.sha256() != meta.get("sha256"):
            return None
        return preds

    # -- results -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def append_results(self, rows: list[Result], replace: bool = True) -> None:
        """Add rows; with ``replace``, a row for the same (model, setting, config hash) is
        replaced rather than duplicated. Rewrites the file atomically under a lock, so
        concurrent cells (Ray) and crashes never leave a torn line."""
        with self._locked():
            existing = self.read_results()
            if replace:
                new_ids = {result_identity(r) for r in rows}
                existing = [r for r in existing if result_identity(r) not in new_ids]
            text = "".join(r.to_json() + "\n" for r in [*existing, *rows])
            atomic_write_text(self.results_path, text)

    def write_results(self, rows: list[Result]) -> None:
        with self._locked():
            atomic_write_text(self.results_path, "".join(r.to_json() + "\n" for r in rows))


def result_identity(row: Result) -> tuple[str, str, str | None]:
    return row.model, row.setting, row.provenance.get("config_hash")


def _union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*a, *b]))

